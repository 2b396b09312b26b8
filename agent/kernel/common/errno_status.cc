#include "agent/kernel/common/errno_status.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace ruleplane::kernel {

absl::StatusCode ErrnoToCode(int err) {
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

absl::Status ErrnoStatus(absl::StatusCode code, int err, absl::string_view message) {
  absl::Status status(code, message);
  status.SetPayload(kErrnoPayloadUrl, absl::Cord(absl::StrCat(err)));
  return status;
}

}  // namespace ruleplane::kernel
