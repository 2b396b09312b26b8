#include "agent/kernel/bpf/errors.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace ruleplane::kernel::bpf {

absl::StatusCode BpfErrnoToCode(int err) {
  switch (err) {
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case ENOENT:
      return absl::StatusCode::kNotFound;
    case EPERM:
    case EACCES:
      return absl::StatusCode::kPermissionDenied;
    case EBUSY:
    case EAGAIN:
      return absl::StatusCode::kUnavailable;
    case EINTR:
      return absl::StatusCode::kAborted;
    case ENOMEM:
    case ENOSPC:
    case ENFILE:
    case E2BIG:  // htab_map_update_elem(): the hash map is full
      return absl::StatusCode::kResourceExhausted;
    case EINVAL:
    case EOPNOTSUPP:
      return absl::StatusCode::kInternal;
    default:
      return absl::ErrnoToStatusCode(err);
  }
}

std::string ErrnoText(int err) {
  // strerrordesc_np (glibc >= 2.32) is thread-safe and locale-independent.
  const char* desc = ::strerrordesc_np(err);
  if (desc == nullptr) return absl::StrCat("errno ", err);
  return desc;
}

absl::Status BpfError(int err, absl::string_view what) {
  err = std::abs(err);
  absl::Status status(BpfErrnoToCode(err),
                      absl::StrCat(what, ": ", ErrnoText(err), " (errno ", err, ")"));
  status.SetPayload(kErrnoPayloadUrl, absl::Cord(absl::StrCat(err)));
  return status;
}

}  // namespace ruleplane::kernel::bpf
