// Opening sockets inside another network namespace without moving any thread
// we do not own.
//
// A socket belongs to the netns of the thread that created it, for its whole
// life. So we create it on a short-lived helper thread that joins the target
// netns, hand the fd back and let the thread die: the caller's threads never
// change namespace (STYLE.md section 6; containernetworking/plugins
// pkg/ns/README.md explains why setns on a shared thread is a hazard).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "agent/common/unique_fd.h"

namespace ruleplane::kernel::netns {

// Creates socket(domain, type | SOCK_CLOEXEC, protocol) in the network
// namespace at `netns_path` (e.g. /run/netns/foo or /proc/<pid>/ns/net), or in
// the caller's current netns when `netns_path` is empty. Blocks until the
// helper thread has finished. Thread-safe.
//
// Errors carry the errno's code and name the path: NotFound when the path
// does not exist, PermissionDenied without CAP_SYS_ADMIN (setns), and the
// socket's own errno otherwise (e.g. EPROTONOSUPPORT when the protocol is
// not built into the kernel).
[[nodiscard]] absl::StatusOr<UniqueFd> OpenSocketInNetns(const std::string& netns_path, int domain,
                                                         int type, int protocol);

}  // namespace ruleplane::kernel::netns
