#include "agent/kernel/bpf/errors.h"

#include <cerrno>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace ruleplane::kernel::bpf {

absl::StatusCode BpfErrnoToCode(int err) {
  if (err == E2BIG) return absl::StatusCode::kResourceExhausted;  // htab_map_update_elem(): the hash map is full
  return kernel::ErrnoToCode(err);
}

absl::Status BpfError(int err, absl::string_view what) {
  err = std::abs(err);
  return kernel::ErrnoStatus(BpfErrnoToCode(err), err, absl::StrCat(what, ": ", ErrnoText(err), " (errno ", err, ")"));
}

}  // namespace ruleplane::kernel::bpf
