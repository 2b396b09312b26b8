// NftEventWatcher: who changed our table, and when.
//
// Owns one NETLINK_NETFILTER socket subscribed to NFNLGRP_NFTABLES in the
// target netns. Read-only: it never sends a request that changes anything.
// Meant for one watcher thread that poll()s fd() and calls ReadPending();
// not thread-safe otherwise.
//
// The kernel emits one notification per changed object, then NFT_MSG_NEWGEN
// closing the transaction with the new generation id and the committing
// process (nf_tables_commit(): object notifications, then
// nf_tables_gen_notify()). The watcher buffers the events of the open
// transaction and returns one RulesetChange per generation that touched our
// table; transactions on other tables only are dropped.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/kernel/nl/socket.h"

namespace ruleplane::kernel::nft {

struct RulesetChange {
  uint32_t generation = 0;
  // task_pid_nr() of the committing thread (== pid for single-threaded
  // tools such as nft; the committing thread's tid for us), 0 when unknown.
  uint32_t pid = 0;
  std::string proc_name;  // comm of the committer, e.g. "nft"
  // e.g. "delete table inet ruleplane", "add element inet ruleplane pod-ipv4".
  // Capped at kMaxEventsPerChange entries plus one "... and N more events".
  std::vector<std::string> events;
};

class NftEventWatcher {
 public:
  static constexpr size_t kMaxEventsPerChange = 256;
  // The one event of the RulesetChange returned when the kernel dropped
  // notifications (ENOBUFS): pid 0, generation 0. The engine must resync.
  static constexpr char kOverflowEvent[] = "event overflow (ENOBUFS): state unknown";

  // Default receive queue. Commit notifications are coalesced into
  // page-sized skbs, so this holds roughly 100k element events.
  static constexpr size_t kDefaultReceiveBufferBytes = 8 * 1024 * 1024;

  // Subscribes in `netns_path` (empty = current netns) to changes of table
  // `table` of `family` (NFPROTO_INET, ...). `receive_buffer_bytes` sizes the
  // socket's queue (best effort; SO_RCVBUFFORCE when permitted).
  static absl::StatusOr<std::unique_ptr<NftEventWatcher>> Create(
      const std::string& netns_path, std::string table, uint32_t family,
      size_t receive_buffer_bytes = kDefaultReceiveBufferBytes);

  // Readable (POLLIN) when notifications are queued.
  int fd() const { return socket_->fd(); }

  // Parses everything queued, without blocking. Returns the changes whose
  // transaction completed (NEWGEN seen), oldest first; events of a
  // transaction whose NEWGEN has not arrived yet stay buffered. On ENOBUFS
  // the buffered and still-queued events are dropped and one overflow change
  // is returned in their place.
  absl::StatusOr<std::vector<RulesetChange>> ReadPending();

 private:
  NftEventWatcher(std::unique_ptr<nl::NetlinkSocket> socket, std::string table, uint32_t family);

  void HandleMessage(const struct nlmsghdr* nlh, std::vector<RulesetChange>& out);
  void AddEvent(std::string event);

  std::unique_ptr<nl::NetlinkSocket> socket_;
  const std::string table_;
  const uint32_t family_;
  std::vector<std::string> pending_;  // events of the open transaction
  size_t pending_dropped_ = 0;        // beyond kMaxEventsPerChange
};

}  // namespace ruleplane::kernel::nft
