// Batch: one nfnetlink transaction (NFNL_MSG_BATCH_BEGIN ... BATCH_END) and
// the seq -> op table needed to attribute the kernel's answers.
//
// Owns the message pages (an nftnl_batch). Messages are built in place by the
// caller at buffer() and then recorded with Push(). Not thread-safe; one
// Batch per commit, built and sent on the engine thread.
//
// SendBatch() sends the whole batch in ONE sendmsg() and drains every reply.
// nfnetlink processes a batch synchronously inside sendmsg(): when it
// returns, the kernel has already applied (or aborted) the batch and queued
// one ACK or error per message flagged NLM_F_ACK. Two quirks of
// nfnetlink_rcv_batch() (net/netfilter/nfnetlink.c) shape the drain:
//  - a failure of the commit phase itself, or ENOMEM while queueing errors,
//    is reported against nlmsg_hdr(skb) *after* BEGIN was pulled, i.e. the
//    FIRST op message, which then also gets its regular ACK: a message
//    answered twice carries a whole-batch error;
//  - the NEWGEN the commit emits is addressed to that same first message, so
//    NLM_F_ECHO on it (not on BEGIN) gets the new generation id unicast back.
#pragma once

#include <libnftnl/batch.h>
#include <linux/netlink.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/kernel/nl/c_ptr.h"
#include "agent/kernel/nl/socket.h"

namespace ruleplane::kernel::nl {

using NftnlBatchPtr = CPtr<nftnl_batch, &nftnl_batch_free>;

// Which part of the caller's plan one message carries.
struct MessageTag {
  size_t op_index = 0;
  // Elements [element_begin, element_end) of that op, for element messages.
  size_t element_begin = 0;
  size_t element_end = 0;
  // For element messages: offset of each element's nested attribute from
  // the start of the message, plus one final entry = end of the last one.
  // Used to map the kernel's NLMSGERR_ATTR_OFFS back to an element.
  std::vector<uint32_t> element_offsets;
};

class Batch {
 public:
  // Largest single message the caller may build at buffer().
  static constexpr size_t kMaxMessageBytes = 65535 + 4096;

  // Starts a batch whose BEGIN carries `first_seq`; op messages follow with
  // consecutive seqs.
  static absl::StatusOr<std::unique_ptr<Batch>> Create(uint32_t first_seq);

  // Space for the next message: at least kMaxMessageBytes bytes.
  char* buffer();
  // The seq the next message must carry.
  uint32_t next_seq() const { return next_seq_; }

  // Records the message the caller just built at buffer() (its seq must be
  // next_seq()) and advances. The message must request an ACK. Set
  // NLM_F_ECHO on the first message (and only on a cheap one: the kernel
  // then also echoes the objects it creates) to get the new generation in
  // BatchResult::generation.
  [[nodiscard]] absl::Status Push(MessageTag tag);

  // Appends BATCH_END. No Push() afterwards.
  [[nodiscard]] absl::Status Finish();

  uint32_t begin_seq() const { return begin_seq_; }
  // Op messages, BEGIN/END excluded.
  uint32_t message_count() const { return static_cast<uint32_t>(tags_.size()); }
  size_t byte_length() const;
  bool finished() const { return finished_; }

  // The tag of the message with `seq`; nullptr for BEGIN/END/foreign seqs.
  const MessageTag* TagForSeq(uint32_t seq) const;
  // True for BEGIN, every op message and END.
  bool OwnsSeq(uint32_t seq) const { return seq - begin_seq_ <= tags_.size() + 1; }

  std::vector<iovec> Iovecs() const;

 private:
  Batch(NftnlBatchPtr batch, uint32_t first_seq);

  NftnlBatchPtr batch_;
  uint32_t begin_seq_;
  uint32_t next_seq_;
  bool finished_ = false;
  std::vector<MessageTag> tags_;  // tags_[i] belongs to seq begin_seq_ + 1 + i
};

// One message the kernel refused, or the batch as a whole (tag == nullptr:
// commit-phase failure or ENOMEM while queueing errors).
struct MessageError {
  uint32_t seq = 0;
  int error = 0;  // positive errno
  std::string extack_message;
  std::optional<uint32_t> extack_offset;
  const MessageTag* tag = nullptr;      // points into the Batch
  std::optional<size_t> element_index;  // index into the op's elements
};

struct BatchResult {
  // Not OK when we could not send, or lost replies; see outcome_unknown.
  absl::Status transport;
  // The batch may or may not have been applied: replies were lost (ENOBUFS
  // while draining) or some message got no answer at all.
  bool outcome_unknown = false;
  std::vector<MessageError> errors;    // in seq order
  uint32_t acks = 0;                   // messages answered (ACK or error)
  std::optional<uint32_t> generation;  // from the echoed NEWGEN, if asked for
  size_t bytes_sent = 0;
};

// Sends `batch` (must be finished) in one sendmsg(), then drains all replies.
// Grows the socket buffers first so the batch fits in one datagram and all
// ACKs fit in the receive queue. Never returns early on a kernel error: every
// message's answer is read so the socket is clean for the next batch.
BatchResult SendBatch(NetlinkSocket& socket, const Batch& batch);

}  // namespace ruleplane::kernel::nl
