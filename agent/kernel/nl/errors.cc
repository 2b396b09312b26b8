#include "agent/kernel/nl/errors.h"

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ruleplane::kernel::nl {

absl::Status KernelError(int err, absl::string_view message) {
  return kernel::ErrnoStatus(KernelErrnoToCode(err), err, message);
}

std::optional<int> StatusErrno(const absl::Status& status) {
  auto payload = status.GetPayload(kErrnoPayloadUrl);
  if (!payload) return std::nullopt;
  int err = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &err)) return std::nullopt;
  return err;
}

void SetSeqPayload(absl::Status& status, uint32_t seq) {
  if (!status.ok()) status.SetPayload(kSeqPayloadUrl, absl::Cord(absl::StrCat(seq)));
}

void SetOpIndexPayload(absl::Status& status, size_t op_index) {
  if (!status.ok()) status.SetPayload(kOpIndexPayloadUrl, absl::Cord(absl::StrCat(op_index)));
}

}  // namespace ruleplane::kernel::nl
