#include "agent/kernel/nl/socket.h"

#include <linux/netfilter/nfnetlink.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "agent/common/status_macros.h"
#include "agent/kernel/netns/netns.h"
#include "agent/kernel/nl/errors.h"
#include "glog/logging.h"

namespace ruleplane::kernel::nl {
namespace {

int AckAttrCallback(const nlattr* attr, void* data) {
  auto* ack = static_cast<NetlinkAck*>(data);
  switch (mnl_attr_get_type(attr)) {
    case NLMSGERR_ATTR_MSG: {
      const char* text = static_cast<const char*>(mnl_attr_get_payload(attr));
      ack->extack_message.assign(text, ::strnlen(text, mnl_attr_get_payload_len(attr)));
      break;
    }
    case NLMSGERR_ATTR_OFFS:
      if (mnl_attr_validate(attr, MNL_TYPE_U32) == 0) ack->extack_offset = mnl_attr_get_u32(attr);
      break;
    default:
      break;
  }
  return MNL_CB_OK;
}

std::string AckText(const NetlinkAck& ack) {
  std::string text = ErrnoText(ack.error);
  if (!ack.extack_message.empty()) absl::StrAppend(&text, " (extack: ", ack.extack_message, ")");
  return text;
}

}  // namespace

std::optional<NetlinkAck> ParseAck(const nlmsghdr* nlh) {
  if (nlh->nlmsg_type != NLMSG_ERROR || nlh->nlmsg_len < mnl_nlmsg_size(sizeof(nlmsgerr))) {
    return std::nullopt;
  }
  const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  NetlinkAck ack;
  ack.seq = nlh->nlmsg_seq;
  ack.error = err->error < 0 ? -err->error : err->error;
  if (nlh->nlmsg_flags & NLM_F_ACK_TLVS) {
    // Without NETLINK_CAP_ACK the kernel echoes our whole message before the
    // TLVs; with it only the header (flagged NLM_F_CAPPED).
    size_t offset = sizeof(nlmsgerr);
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) offset += mnl_nlmsg_get_payload_len(&err->msg);
    if (mnl_nlmsg_size(offset) <= nlh->nlmsg_len) {
      mnl_attr_parse(nlh, offset, AckAttrCallback, &ack);
    }
  }
  return ack;
}

NetlinkSocket::NetlinkSocket(MnlSocketPtr socket, uint32_t first_seq)
    : socket_(std::move(socket)), next_seq_(first_seq) {}

absl::StatusOr<std::unique_ptr<NetlinkSocket>> NetlinkSocket::Adopt(UniqueFd fd) {
  if (!fd.valid()) return absl::InvalidArgumentError("adopt netlink socket: invalid fd");
  mnl_socket* raw = mnl_socket_fdopen(fd.get());
  if (raw == nullptr) return absl::ErrnoToStatus(errno, "adopt netlink socket");
  static_cast<void>(fd.release());  // owned by the mnl_socket now
  MnlSocketPtr socket(raw);

  if (mnl_socket_bind(raw, 0, MNL_SOCKET_AUTOPID) < 0) {
    return absl::ErrnoToStatus(errno, "bind netlink socket");
  }
  int one = 1;
  // Extended ACKs carry the kernel's error text and the offset of the
  // attribute it refused; that offset is how we find the failing element.
  if (mnl_socket_setsockopt(raw, NETLINK_EXT_ACK, &one, sizeof(one)) < 0) {
    LOG(WARNING) << "netlink socket: NETLINK_EXT_ACK not supported (" << ErrnoText(errno)
                 << "); errors will not name the failing element";
  }
  // Capped ACKs echo only our header, not the whole (up to 64 KiB) message,
  // so thousands of ACKs fit in the receive buffer.
  if (mnl_socket_setsockopt(raw, NETLINK_CAP_ACK, &one, sizeof(one)) < 0) {
    LOG(WARNING) << "netlink socket: NETLINK_CAP_ACK not supported (" << ErrnoText(errno) << ")";
  }
  // Like nftables, start from the clock so seqs differ across restarts.
  auto first_seq = static_cast<uint32_t>(::time(nullptr));
  return std::unique_ptr<NetlinkSocket>(new NetlinkSocket(std::move(socket), first_seq));
}

absl::StatusOr<std::unique_ptr<NetlinkSocket>> NetlinkSocket::OpenNetfilter(
    const std::string& netns_path) {
  ASSIGN_OR_RETURN(UniqueFd fd,
                   netns::OpenSocketInNetns(netns_path, AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER));
  return Adopt(std::move(fd));
}

absl::StatusOr<std::unique_ptr<NetlinkSocket>> NetlinkSocket::OpenRoute() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, "open rtnetlink socket");
  return Adopt(std::move(fd));
}

uint32_t NetlinkSocket::portid() const { return mnl_socket_get_portid(socket_.get()); }

int NetlinkSocket::fd() const { return mnl_socket_get_fd(socket_.get()); }

absl::Status NetlinkSocket::JoinGroup(unsigned int group) {
  int g = static_cast<int>(group);
  if (mnl_socket_setsockopt(socket_.get(), NETLINK_ADD_MEMBERSHIP, &g, sizeof(g)) < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("join netlink group ", group));
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> NetlinkSocket::EnsureBuffer(int option, int force_option, size_t bytes,
                                                   bool shrink) {
  int current = 0;
  socklen_t len = sizeof(current);
  if (::getsockopt(fd(), SOL_SOCKET, option, &current, &len) < 0) {
    return absl::ErrnoToStatus(errno, "getsockopt socket buffer");
  }
  if (!shrink && current >= 0 && static_cast<size_t>(current) >= bytes) {
    return static_cast<size_t>(current);
  }

  // The kernel doubles the value for bookkeeping overhead and reports the
  // doubled size; asking for `bytes` leaves headroom.
  int wanted = bytes > INT_MAX / 2 ? INT_MAX / 2 : static_cast<int>(bytes);
  if (::setsockopt(fd(), SOL_SOCKET, force_option, &wanted, sizeof(wanted)) < 0) {
    // No CAP_NET_ADMIN: the plain option is capped by net.core.[rw]mem_max.
    VLOG(1) << "netlink socket: forced buffer size refused (" << ErrnoText(errno)
            << "), falling back to the sysctl-capped size";
    if (::setsockopt(fd(), SOL_SOCKET, option, &wanted, sizeof(wanted)) < 0) {
      return absl::ErrnoToStatus(errno, "setsockopt socket buffer");
    }
  }
  len = sizeof(current);
  if (::getsockopt(fd(), SOL_SOCKET, option, &current, &len) < 0) {
    return absl::ErrnoToStatus(errno, "getsockopt socket buffer");
  }
  return static_cast<size_t>(current);
}

absl::StatusOr<size_t> NetlinkSocket::EnsureSendBuffer(size_t bytes) {
  return EnsureBuffer(SO_SNDBUF, SO_SNDBUFFORCE, bytes, /*shrink=*/false);
}

absl::StatusOr<size_t> NetlinkSocket::EnsureReceiveBuffer(size_t bytes) {
  return EnsureBuffer(SO_RCVBUF, SO_RCVBUFFORCE, bytes, /*shrink=*/false);
}

absl::StatusOr<size_t> NetlinkSocket::SetReceiveBuffer(size_t bytes) {
  return EnsureBuffer(SO_RCVBUF, SO_RCVBUFFORCE, bytes, /*shrink=*/true);
}

absl::StatusOr<size_t> NetlinkSocket::SendIov(const struct iovec* iov, size_t iovlen) {
  sockaddr_nl kernel = {};
  kernel.nl_family = AF_NETLINK;
  msghdr msg = {};
  msg.msg_name = &kernel;
  msg.msg_namelen = sizeof(kernel);
  msg.msg_iov = const_cast<struct iovec*>(iov);
  msg.msg_iovlen = iovlen;
  size_t total = 0;
  for (size_t i = 0; i < iovlen; ++i) total += iov[i].iov_len;
  ssize_t sent;
  do {
    sent = ::sendmsg(fd(), &msg, 0);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) {
    int err = errno;
    return KernelError(err,
                       absl::StrCat("send netlink message of ", total, " bytes: ", ErrnoText(err)));
  }
  if (static_cast<size_t>(sent) != total) {
    return absl::InternalError(
        absl::StrCat("send netlink message: short send ", sent, " of ", total, " bytes"));
  }
  return static_cast<size_t>(sent);
}

absl::StatusOr<size_t> NetlinkSocket::Receive(std::vector<char>& buf, absl::Duration timeout) {
  if (buf.size() < kReceiveBufferBytes) buf.resize(kReceiveBufferBytes);
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (timeout > absl::ZeroDuration()) {
      pollfd pfd = {fd(), POLLIN, 0};
      int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (ms < 0) ms = 0;
      int ready = ::poll(&pfd, 1, static_cast<int>(ms));
      if (ready < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, "poll netlink socket");
      }
      if (ready == 0) {
        return absl::DeadlineExceededError(
            absl::StrCat("no reply from the kernel within ", absl::FormatDuration(timeout)));
      }
    }
    sockaddr_nl from = {};
    iovec iov = {buf.data(), buf.size()};
    msghdr msg = {};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof(from);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    ssize_t n = ::recvmsg(fd(), &msg, MSG_DONTWAIT);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        if (timeout <= absl::ZeroDuration()) return 0;
        continue;
      }
      return KernelError(err, absl::StrCat("receive from netlink socket: ", ErrnoText(err)));
    }
    if (msg.msg_flags & MSG_TRUNC) {
      return absl::InternalError(
          absl::StrCat("receive from netlink socket: datagram larger than ", buf.size(), " bytes"));
    }
    // Only the kernel (portid 0) talks to us; anything else is ignored.
    if (from.nl_pid != 0) continue;
    return static_cast<size_t>(n);
  }
}

void NetlinkSocket::DiscardPending() {
  // One receive buffer per thread, reused: zero-filling 69 KiB per call
  // was ~15% of the writer's instructions (callgrind, ruleplane-bench).
  thread_local std::vector<char> buf(kReceiveBufferBytes);
  for (int i = 0; i < 100000; ++i) {
    absl::StatusOr<size_t> n = Receive(buf, absl::ZeroDuration());
    // An error (e.g. a pending ENOBUFS) is consumed by reading it; go on.
    if (n.ok() && *n == 0) return;
  }
}

absl::Status NetlinkSocket::Request(nlmsghdr* request, absl::string_view what,
                                    absl::FunctionRef<absl::Status(const nlmsghdr*)> on_reply,
                                    absl::Duration timeout) {
  const bool dump = (request->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
  const uint32_t seq = NextSeq();
  request->nlmsg_seq = seq;
  if (!dump) request->nlmsg_flags |= NLM_F_ACK;

  if (mnl_socket_sendto(socket_.get(), request, request->nlmsg_len) < 0) {
    int err = errno;
    return KernelError(err, absl::StrCat(what, ": send: ", ErrnoText(err)));
  }

  absl::Status callback_status;
  bool interrupted = false;
  // One receive buffer per thread, reused: zero-filling 69 KiB per call
  // was ~15% of the writer's instructions (callgrind, ruleplane-bench).
  thread_local std::vector<char> buf(kReceiveBufferBytes);
  for (;;) {
    absl::StatusOr<size_t> received = Receive(buf, timeout);
    if (!received.ok()) {
      absl::Status status = received.status();
      return absl::Status(status.code(), absl::StrCat(what, ": ", status.message()));
    }
    int remaining = static_cast<int>(*received);
    for (const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data());
         mnl_nlmsg_ok(nlh, remaining); nlh = mnl_nlmsg_next(nlh, &remaining)) {
      if (nlh->nlmsg_seq != seq) continue;  // stale reply of an earlier exchange
      if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
      switch (nlh->nlmsg_type) {
        case NLMSG_NOOP:
        case NLMSG_OVERRUN:
          continue;
        case NLMSG_DONE: {
          // The payload is the dump's final errno (0 or negative).
          int done_errno = 0;
          if (mnl_nlmsg_get_payload_len(nlh) >= sizeof(int)) {
            std::memcpy(&done_errno, mnl_nlmsg_get_payload(nlh), sizeof(int));
          }
          if (done_errno < 0) {
            return KernelError(-done_errno, absl::StrCat(what, ": ", ErrnoText(-done_errno)));
          }
          if (!callback_status.ok()) return callback_status;
          if (interrupted) {
            return KernelError(EINTR, absl::StrCat(what, ": dump interrupted (ruleset changed)"));
          }
          return absl::OkStatus();
        }
        case NLMSG_ERROR: {
          std::optional<NetlinkAck> ack = ParseAck(nlh);
          if (!ack) return absl::InternalError(absl::StrCat(what, ": truncated netlink error"));
          if (ack->error != 0)
            return KernelError(ack->error, absl::StrCat(what, ": ", AckText(*ack)));
          if (dump) continue;  // a dump ends with NLMSG_DONE, not an ACK
          if (!callback_status.ok()) return callback_status;
          return absl::OkStatus();
        }
        default:
          if (callback_status.ok()) callback_status = on_reply(nlh);
      }
    }
  }
}

}  // namespace ruleplane::kernel::nl
