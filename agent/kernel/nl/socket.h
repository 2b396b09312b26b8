// NetlinkSocket: one NETLINK_NETFILTER socket, owned through libmnl.
//
// Owns the mnl_socket (and so the fd). Not thread-safe: one thread at a time
// (the engine thread for the commit socket, the watcher thread for an event
// socket). It never mutates kernel state by itself; callers send batches or
// requests through it.
#pragma once

#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "agent/common/unique_fd.h"
#include "agent/kernel/nl/c_ptr.h"

namespace ruleplane::kernel::nl {

using MnlSocketPtr = CPtr<mnl_socket, &mnl_socket_close>;

// Largest datagram we read: one nf_tables message is bounded by the 16-bit
// length of its biggest nested attribute, plus a page (nftables src/mnl.c,
// NFT_NLMSG_MAXSIZE). A dump reply never exceeds what we offer to recvmsg.
inline constexpr size_t kReceiveBufferBytes = 65535 + 4096;

// One parsed NLMSG_ERROR: an ACK when error == 0.
struct NetlinkAck {
  uint32_t seq = 0;
  int error = 0;                          // positive errno, 0 = ACK
  std::string extack_message;             // NLMSGERR_ATTR_MSG
  std::optional<uint32_t> extack_offset;  // NLMSGERR_ATTR_OFFS, from the start of our nlmsghdr
};

// Parses an NLMSG_ERROR message, including extended-ACK TLVs in both the
// capped (NETLINK_CAP_ACK) and uncapped layouts. nullopt when truncated.
std::optional<NetlinkAck> ParseAck(const nlmsghdr* nlh);

class NetlinkSocket {
 public:
  // Adopts `fd`, a NETLINK_NETFILTER socket (e.g. from
  // netns::OpenSocketInNetns), binds it with a kernel-assigned portid and
  // enables NETLINK_EXT_ACK and NETLINK_CAP_ACK. Takes ownership of the fd
  // even on failure.
  static absl::StatusOr<std::unique_ptr<NetlinkSocket>> Adopt(UniqueFd fd);

  // OpenSocketInNetns(netns_path, AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER)
  // then Adopt. Empty path = current netns.
  static absl::StatusOr<std::unique_ptr<NetlinkSocket>> OpenNetfilter(
      const std::string& netns_path);
  // A NETLINK_ROUTE socket in the current netns, then Adopt (rtnetlink
  // dumps and link/address notifications).
  static absl::StatusOr<std::unique_ptr<NetlinkSocket>> OpenRoute();

  NetlinkSocket(const NetlinkSocket&) = delete;
  NetlinkSocket& operator=(const NetlinkSocket&) = delete;

  uint32_t portid() const;
  int fd() const;

  // Sequence numbers are per socket and only need to be unique among the
  // requests in flight, which is at most one batch.
  uint32_t NextSeq() { return next_seq_++; }
  uint32_t PeekSeq() const { return next_seq_; }
  void SkipSeqTo(uint32_t next) { next_seq_ = next; }

  // Subscribes to a multicast group (e.g. NFNLGRP_NFTABLES).
  [[nodiscard]] absl::Status JoinGroup(unsigned int group);

  // Grows SO_SNDBUF / SO_RCVBUF to at least `bytes` (as the kernel counts
  // them). Uses the *FORCE variant (CAP_NET_ADMIN, ignores
  // net.core.{w,r}mem_max) and falls back to the capped one. Returns the
  // resulting size; never shrinks.
  absl::StatusOr<size_t> EnsureSendBuffer(size_t bytes);
  absl::StatusOr<size_t> EnsureReceiveBuffer(size_t bytes);
  // Sets SO_RCVBUF to `bytes` (FORCE variant first), growing or shrinking.
  absl::StatusOr<size_t> SetReceiveBuffer(size_t bytes);

  // One sendmsg() of all `iov` to the kernel: one datagram.
  [[nodiscard]] absl::StatusOr<size_t> SendIov(const struct iovec* iov, size_t iovlen);

  // Reads one datagram into `buf` (at least kReceiveBufferBytes).
  // timeout == zero: non-blocking, returns 0 when nothing is queued.
  // Otherwise waits up to `timeout` (DeadlineExceeded when it expires).
  // Socket errors (e.g. ENOBUFS: the kernel dropped messages for us) come
  // back as KernelError statuses; see StatusErrno.
  absl::StatusOr<size_t> Receive(std::vector<char>& buf, absl::Duration timeout);

  // Reads and throws away whatever is queued (stale replies of an aborted
  // exchange), so the next exchange starts clean.
  void DiscardPending();

  // Sends the single message `request` with a fresh seq (overwritten here)
  // and calls `on_reply` for every reply carrying that seq until the kernel
  // closes the exchange: NLMSG_DONE for NLM_F_DUMP requests, the ACK
  // otherwise (NLM_F_ACK is added). A kernel error becomes the returned
  // status (KernelError with "<what>: <strerror> (extack: ...)"); a dump
  // the kernel flagged NLM_F_DUMP_INTR returns Aborted (errno EINTR) after
  // reading it to the end; a non-OK status from `on_reply` stops feeding but
  // the exchange is still drained, and is returned.
  [[nodiscard]] absl::Status Request(nlmsghdr* request, absl::string_view what,
                                     absl::FunctionRef<absl::Status(const nlmsghdr*)> on_reply,
                                     absl::Duration timeout = absl::Seconds(10));

 private:
  explicit NetlinkSocket(MnlSocketPtr socket, uint32_t first_seq);

  absl::StatusOr<size_t> EnsureBuffer(int option, int force_option, size_t bytes, bool shrink);

  MnlSocketPtr socket_;
  uint32_t next_seq_;
};

}  // namespace ruleplane::kernel::nl
