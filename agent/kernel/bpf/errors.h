// errno -> absl::Status for the BPF kernel layer (STYLE.md section 4).
//
// Same code table and errno payload as agent/kernel/nl/errors.h so one errno
// means one code in every kernel backend; BPF adds E2BIG (a full hash map).
// Kept separate so the BPF layer does not link libmnl/libnftnl.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ruleplane::kernel::bpf {

// EEXIST AlreadyExists; ENOENT NotFound; EPERM/EACCES PermissionDenied;
// EBUSY/EAGAIN Unavailable; EINTR Aborted; ENOMEM/ENOSPC/ENFILE/E2BIG
// ResourceExhausted; EINVAL/EOPNOTSUPP Internal (the kernel refused something
// we built); anything else: abseil's generic errno table.
absl::StatusCode BpfErrnoToCode(int err);

// "<what>: <strerror text> (errno <n>)" with BpfErrnoToCode(err) and the errno
// attached under kErrnoPayloadUrl. `err` is a positive errno; libbpf's
// negative return values are accepted too.
absl::Status BpfError(int err, absl::string_view what);

// Same payload URL as agent/kernel/nl, so nl::StatusErrno() reads ours too.
inline constexpr absl::string_view kErrnoPayloadUrl = "type.ruleplane.dev/errno";

// Thread-safe, locale-independent strerror text.
std::string ErrnoText(int err);

}  // namespace ruleplane::kernel::bpf
