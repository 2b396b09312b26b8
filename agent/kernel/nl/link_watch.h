// LinkWatcher: the node's interfaces and addresses changing, as rtnetlink
// notifications (RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR) on
// one NETLINK_ROUTE socket in the caller's network namespace.
//
// Owns the socket. Read-only: it never sends a request that changes kernel
// state. One thread at a time (the egress watcher's); meant to be poll()ed
// on fd() and drained with ReadPending().
#pragma once

#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "agent/kernel/nl/socket.h"

namespace ruleplane::kernel::nl {

struct LinkChanges {
  // Interfaces with a link change (new, deleted, renamed, up/down) or an
  // address added or removed, by name. An address notification for an
  // interface already gone names nothing (its RTM_DELLINK does).
  std::set<std::string> interfaces;
  // The kernel dropped notifications for us (ENOBUFS): any interface may
  // have changed; re-read whatever depends on them.
  bool overflow = false;
  bool empty() const { return interfaces.empty() && !overflow; }
};

class LinkWatcher {
 public:
  // Subscribes in the current network namespace, with a receive buffer of
  // `receive_buffer_bytes` (as the kernel counts it; tests make it small to
  // see an overflow). The error names the step (socket, bind, group) and
  // errno.
  static absl::StatusOr<std::unique_ptr<LinkWatcher>> Open(size_t receive_buffer_bytes = 1 << 20);
  LinkWatcher(const LinkWatcher&) = delete;
  LinkWatcher& operator=(const LinkWatcher&) = delete;

  int fd() const { return socket_->fd(); }

  // Reads the queued notifications without blocking (none queued: empty
  // result), up to 1024 datagrams per call (poll again for the rest).
  // Errors other than ENOBUFS come back as the socket's status.
  absl::StatusOr<LinkChanges> ReadPending();

 private:
  explicit LinkWatcher(std::unique_ptr<NetlinkSocket> socket) : socket_(std::move(socket)) {}
  std::unique_ptr<NetlinkSocket> socket_;
  std::vector<char> buf_;
};

}  // namespace ruleplane::kernel::nl
