#include "agent/kernel/nl/errors.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ruleplane::kernel::nl {

absl::StatusCode KernelErrnoToCode(int err) {
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
      return absl::StatusCode::kResourceExhausted;
    case EINVAL:
    case EOPNOTSUPP:
    // A jump loop or too deep a jump chain (nft_chain_validate(): ELOOP on
    // older kernels, EMLINK on current ones) is a rendering bug too, not a
    // resource shortage as abseil's generic table would say for EMLINK.
    case ELOOP:
    case EMLINK:
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

absl::Status KernelError(int err, absl::string_view message) {
  absl::Status status(KernelErrnoToCode(err), message);
  status.SetPayload(kErrnoPayloadUrl, absl::Cord(absl::StrCat(err)));
  return status;
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
