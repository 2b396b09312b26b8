// errno -> absl::Status code table shared by every kernel layer (netlink and
// BPF), STYLE.md section 4: one errno means one code everywhere. Depends on
// abseil only, so the BPF layer does not pull in libmnl/libnftnl.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ruleplane::kernel {

// EEXIST AlreadyExists; ENOENT NotFound; EPERM/EACCES PermissionDenied;
// EBUSY/EAGAIN Unavailable; EINTR Aborted (netlink: interrupted dump, the
// generation changed, retry the whole read); ENOMEM/ENOSPC/ENFILE
// ResourceExhausted; EINVAL/EOPNOTSUPP/ELOOP/EMLINK Internal (the kernel
// refused something we built: a jump loop or too deep a jump chain is
// nft_chain_validate()'s ELOOP/EMLINK, a rendering bug, not a resource
// shortage as abseil's generic table would say for EMLINK). Anything else:
// abseil's generic errno table.
absl::StatusCode ErrnoToCode(int err);

// Thread-safe, locale-independent strerror text ("File exists").
std::string ErrnoText(int err);

// Payload URL under which kernel errors carry their errno (decimal text).
inline constexpr absl::string_view kErrnoPayloadUrl = "type.ruleplane.dev/errno";

// A Status with `code`, `message` verbatim and `err` attached under
// kErrnoPayloadUrl.
absl::Status ErrnoStatus(absl::StatusCode code, int err, absl::string_view message);

}  // namespace ruleplane::kernel
