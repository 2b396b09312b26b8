#include "agent/kernel/nl/batch.h"

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <limits.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/kernel/nl/errors.h"
#include "agent/kernel/nl/generation.h"
#include "glog/logging.h"

namespace ruleplane::kernel::nl {
namespace {

// Bytes per iovec page. A page holds many messages; the batch grows by
// pages, and each page is one iovec of the single sendmsg().
constexpr uint32_t kPageBytes = 256 * 1024;

// Receive-queue budget per expected reply: a capped ACK is ~36 bytes of
// payload but costs an skb (~700 bytes truesize); errors add extack text.
// nftables budgets 1024 (src/mnl.c, mnl_batch_talk()); we take headroom.
constexpr size_t kReceiveBytesPerReply = 2048;
constexpr size_t kReceiveBytesBase = 256 * 1024;

// How long to wait for replies that are not queued yet. They always should
// be (the batch runs inside sendmsg()); this only bounds a kernel surprise.
constexpr absl::Duration kLateReplyTimeout = absl::Seconds(2);

std::optional<size_t> ResolveElement(const MessageTag& tag, std::optional<uint32_t> offset) {
  if (tag.element_end <= tag.element_begin) return std::nullopt;
  const std::vector<uint32_t>& offs = tag.element_offsets;
  if (offset && offs.size() >= 2) {
    // The kernel points at the element's nest (NL_SET_BAD_ATTR in
    // nf_tables_{new,del}setelem()) or at an attribute inside it.
    if (*offset < offs.front() || *offset >= offs.back()) return std::nullopt;
    auto it = std::upper_bound(offs.begin(), offs.end() - 1, *offset);
    return tag.element_begin + static_cast<size_t>(it - offs.begin()) - 1;
  }
  if (!offset && tag.element_end - tag.element_begin == 1) return tag.element_begin;
  return std::nullopt;
}

}  // namespace

Batch::Batch(NftnlBatchPtr batch, uint32_t first_seq)
    : batch_(std::move(batch)), begin_seq_(first_seq), next_seq_(first_seq + 1) {}

absl::StatusOr<std::unique_ptr<Batch>> Batch::Create(uint32_t first_seq) {
  NftnlBatchPtr raw(nftnl_batch_alloc(kPageBytes, kMaxMessageBytes));
  if (raw == nullptr) return absl::ResourceExhaustedError("allocate nft batch");
  nftnl_batch_begin(static_cast<char*>(nftnl_batch_buffer(raw.get())), first_seq);
  if (nftnl_batch_update(raw.get()) < 0)
    return absl::ResourceExhaustedError("allocate nft batch page");
  return std::unique_ptr<Batch>(new Batch(std::move(raw), first_seq));
}

char* Batch::buffer() { return static_cast<char*>(nftnl_batch_buffer(batch_.get())); }

absl::Status Batch::Push(MessageTag tag) {
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(buffer());
  // Writing past the page overrun area would already have corrupted the
  // heap; encoders bound every message below kMaxMessageBytes.
  CHECK_LE(nlh->nlmsg_len, kMaxMessageBytes) << "netlink message overran the batch page";
  CHECK_EQ(nlh->nlmsg_seq, next_seq_) << "message built with the wrong seq";
  CHECK(!finished_);
  tags_.push_back(std::move(tag));
  ++next_seq_;
  if (nftnl_batch_update(batch_.get()) < 0) {
    return absl::ResourceExhaustedError("allocate nft batch page");
  }
  return absl::OkStatus();
}

absl::Status Batch::Finish() {
  CHECK(!finished_);
  nftnl_batch_end(buffer(), next_seq_++);
  finished_ = true;
  if (nftnl_batch_update(batch_.get()) < 0) {
    return absl::ResourceExhaustedError("allocate nft batch page");
  }
  return absl::OkStatus();
}

size_t Batch::byte_length() const {
  size_t total = 0;
  for (const iovec& v : Iovecs()) total += v.iov_len;
  return total;
}

const MessageTag* Batch::TagForSeq(uint32_t seq) const {
  uint32_t index = seq - begin_seq_ - 1;  // wraps for BEGIN and earlier seqs
  if (index >= tags_.size()) return nullptr;
  return &tags_[index];
}

std::vector<iovec> Batch::Iovecs() const {
  int pages = nftnl_batch_iovec_len(batch_.get());
  std::vector<iovec> iov(pages > 0 ? static_cast<size_t>(pages) : 0);
  if (!iov.empty()) nftnl_batch_iovec(batch_.get(), iov.data(), static_cast<uint32_t>(iov.size()));
  return iov;
}

BatchResult SendBatch(NetlinkSocket& socket, const Batch& batch) {
  BatchResult result;
  if (!batch.finished()) {
    result.transport = absl::InternalError("commit nft batch: batch not finished");
    return result;
  }
  std::vector<iovec> iov = batch.Iovecs();
  size_t total = 0;
  for (const iovec& v : iov) total += v.iov_len;
  if (iov.size() > IOV_MAX) {
    result.transport = absl::ResourceExhaustedError(
        absl::StrCat("commit nft batch: ", total, " bytes in ", iov.size(),
                     " pages exceed the iovec limit ", IOV_MAX));
    return result;
  }

  // The whole batch must be one datagram: netlink_sendmsg() refuses a
  // message larger than the send buffer (EMSGSIZE) and a batch cannot span
  // datagrams. Size the buffer to the batch, as nftables' mnl_set_sndbuffer().
  absl::StatusOr<size_t> sndbuf = socket.EnsureSendBuffer(total + 4096);
  if (!sndbuf.ok() || *sndbuf < total + 32) {
    result.transport = absl::ResourceExhaustedError(absl::StrCat(
        "commit nft batch: batch of ", total, " bytes does not fit the socket send buffer (",
        sndbuf.ok() ? absl::StrCat(*sndbuf, " bytes") : std::string(sndbuf.status().message()),
        "); needs CAP_NET_ADMIN for SO_SNDBUFFORCE or a larger net.core.wmem_max"));
    return result;
  }
  const size_t rcv_wanted = kReceiveBytesBase + kReceiveBytesPerReply * batch.message_count();
  absl::StatusOr<size_t> rcvbuf = socket.EnsureReceiveBuffer(rcv_wanted);
  if (!rcvbuf.ok() || *rcvbuf < rcv_wanted) {
    LOG_EVERY_T(WARNING, 60) << "commit nft batch: receive buffer "
                             << (rcvbuf.ok() ? absl::StrCat(*rcvbuf) : "unknown")
                             << " bytes < wanted " << rcv_wanted
                             << "; ACKs may be lost (outcome unknown, resync)";
  }

  // Replies left over from an earlier, failed exchange must not be mistaken
  // for this batch's (they carry other seqs, but a clean queue also frees
  // receive-buffer room).
  socket.DiscardPending();
  socket.SkipSeqTo(batch.next_seq());

  absl::StatusOr<size_t> sent = socket.SendIov(iov.data(), iov.size());
  if (!sent.ok()) {
    // netlink_sendmsg() failed before handing the batch to nfnetlink
    // (EMSGSIZE, ENOMEM, ...): the kernel saw nothing.
    result.transport = absl::Status(
        sent.status().code(),
        absl::StrCat("commit nft batch seq=", batch.begin_seq(), ": ", sent.status().message()));
    return result;
  }
  result.bytes_sent = *sent;

  const uint32_t expected = batch.message_count();
  std::vector<uint8_t> replies(expected, 0);  // per op message, saturating
  bool batch_failed = false;
  // One receive buffer per thread, reused: zero-filling 69 KiB per call
  // was ~15% of the writer's instructions (callgrind, ruleplane-bench).
  thread_local std::vector<char> buf(kReceiveBufferBytes);
  const absl::Time late_deadline = absl::Now() + kLateReplyTimeout;
  for (;;) {
    const bool complete = result.acks == expected || batch_failed;
    absl::Duration wait = absl::ZeroDuration();
    if (!complete && !result.outcome_unknown) {
      wait = late_deadline - absl::Now();
      if (wait <= absl::ZeroDuration()) break;
    }
    absl::StatusOr<size_t> received = socket.Receive(buf, wait);
    if (!received.ok()) {
      if (StatusErrno(received.status()) == ENOBUFS) {
        // The kernel dropped replies: we cannot know whether the batch was
        // applied. Keep draining so the socket is clean.
        result.outcome_unknown = true;
        result.transport =
            KernelError(ENOBUFS, absl::StrCat("commit nft batch seq=", batch.begin_seq(),
                                              ": replies lost (ENOBUFS): outcome unknown"));
        continue;
      }
      if (received.status().code() == absl::StatusCode::kDeadlineExceeded) break;
      result.outcome_unknown = true;
      result.transport = absl::Status(received.status().code(),
                                      absl::StrCat("commit nft batch seq=", batch.begin_seq(), ": ",
                                                   received.status().message()));
      break;
    }
    if (*received == 0) {
      if (complete || result.outcome_unknown) break;
      continue;  // wait for late replies
    }
    int remaining = static_cast<int>(*received);
    for (const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data());
         mnl_nlmsg_ok(nlh, remaining); nlh = mnl_nlmsg_next(nlh, &remaining)) {
      if (!batch.OwnsSeq(nlh->nlmsg_seq)) continue;  // stale
      if (std::optional<GenerationInfo> gen = ParseNewGen(nlh)) {
        result.generation = gen->id;
        continue;
      }
      // Anything else that is not an ACK/error is an echoed object.
      if (nlh->nlmsg_type != NLMSG_ERROR) continue;
      std::optional<NetlinkAck> ack = ParseAck(nlh);
      if (!ack) continue;
      const MessageTag* tag = batch.TagForSeq(nlh->nlmsg_seq);
      if (tag == nullptr) {
        // On BEGIN/END (older kernels, malformed batch): the whole batch.
        if (ack->error != 0) {
          batch_failed = true;
          result.errors.push_back(MessageError{nlh->nlmsg_seq, ack->error, ack->extack_message,
                                               ack->extack_offset, nullptr, std::nullopt});
        }
        continue;
      }
      const uint32_t index = nlh->nlmsg_seq - batch.begin_seq() - 1;
      if (replies[index] == 0) ++result.acks;
      if (replies[index] < 255) ++replies[index];
      if (ack->error == 0) continue;
      result.errors.push_back(MessageError{nlh->nlmsg_seq, ack->error, ack->extack_message,
                                           ack->extack_offset, tag,
                                           ResolveElement(*tag, ack->extack_offset)});
    }
  }

  // A message answered more than once got its regular ACK plus the error
  // of the batch as a whole (see the header): blame no op for that one.
  for (MessageError& error : result.errors) {
    if (error.tag == nullptr) continue;
    if (replies[error.seq - batch.begin_seq() - 1] > 1) {
      error.tag = nullptr;
      error.element_index.reset();
      batch_failed = true;
    }
  }
  // ENOMEM while queueing per-message errors: the kernel drops them all and
  // answers only the first message, with ENOMEM; the batch was aborted.
  if (!batch_failed && result.acks == 1 && expected > 1 && result.errors.size() == 1 &&
      result.errors[0].error == ENOMEM && result.errors[0].seq == batch.begin_seq() + 1) {
    result.errors[0].tag = nullptr;
    result.errors[0].element_index.reset();
    batch_failed = true;
  }
  std::sort(result.errors.begin(), result.errors.end(),
            [](const MessageError& a, const MessageError& b) { return a.seq < b.seq; });
  if (!batch_failed && result.acks < expected && result.transport.ok()) {
    result.outcome_unknown = true;
    result.transport = absl::UnknownError(absl::StrCat("commit nft batch seq=", batch.begin_seq(),
                                                       ": kernel answered ", result.acks, " of ",
                                                       expected, " messages: outcome unknown"));
  }
  return result;
}

}  // namespace ruleplane::kernel::nl
