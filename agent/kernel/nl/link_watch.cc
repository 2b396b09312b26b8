#include "agent/kernel/nl/link_watch.h"

#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <net/if.h>

#include <cerrno>

#include "agent/kernel/nl/errors.h"
#include "glog/logging.h"

namespace ruleplane::kernel::nl {
namespace {

// IFLA_IFNAME of an RTM_NEWLINK / RTM_DELLINK message, or "".
std::string LinkName(const nlmsghdr* nlh) {
  std::string name;
  mnl_attr_parse(
      nlh, sizeof(ifinfomsg),
      [](const nlattr* attr, void* data) -> int {
        if (mnl_attr_get_type(attr) == IFLA_IFNAME && mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) >= 0) {
          *static_cast<std::string*>(data) = mnl_attr_get_str(attr);
        }
        return MNL_CB_OK;
      },
      &name);
  return name;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LinkWatcher>> LinkWatcher::Open(size_t receive_buffer_bytes) {
  absl::StatusOr<std::unique_ptr<NetlinkSocket>> socket = NetlinkSocket::OpenRoute();
  if (!socket.ok()) return socket.status();
  for (unsigned group : {RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR}) {
    if (absl::Status s = (*socket)->JoinGroup(group); !s.ok()) return s;
  }
  // Bursts (a bond with many slaves coming up, a node with hundreds of pod
  // veths created at once) are bigger than the default buffer; ENOBUFS is
  // handled, but rarer is better. 1 MiB is what the kernel caps unforced.
  if (absl::StatusOr<size_t> got = (*socket)->SetReceiveBuffer(receive_buffer_bytes); !got.ok()) {
    LOG(WARNING) << "link watcher: receive buffer stays at the default: " << got.status();
  }
  return std::unique_ptr<LinkWatcher>(new LinkWatcher(std::move(*socket)));
}

absl::StatusOr<LinkChanges> LinkWatcher::ReadPending() {
  LinkChanges out;
  // Bounded, so a storm of notifications (hundreds of pod veths) cannot
  // keep the caller here; the rest is read on the next call.
  for (int datagrams = 0; datagrams < 1024; ++datagrams) {
    absl::StatusOr<size_t> n = socket_->Receive(buf_, absl::ZeroDuration());
    if (!n.ok()) {
      // The kernel could not queue notifications for us: they are lost, and
      // the socket goes on with the next ones (netlink(7)).
      if (StatusErrno(n.status()) == ENOBUFS) {
        out.overflow = true;
        continue;
      }
      return n.status();
    }
    if (*n == 0) return out;
    int len = static_cast<int>(*n);
    for (const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf_.data()); mnl_nlmsg_ok(nlh, len);
         nlh = mnl_nlmsg_next(nlh, &len)) {
      switch (nlh->nlmsg_type) {
        case RTM_NEWLINK:
        case RTM_DELLINK: {
          if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg))) break;
          std::string name = LinkName(nlh);
          if (!name.empty()) out.interfaces.insert(std::move(name));
          break;
        }
        case RTM_NEWADDR:
        case RTM_DELADDR: {
          if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(ifaddrmsg))) break;
          const auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(nlh));
          char name[IF_NAMESIZE] = {};
          if (::if_indextoname(ifa->ifa_index, name) != nullptr) out.interfaces.insert(name);
          break;
        }
        default:
          break;
      }
    }
  }
  return out;
}

}  // namespace ruleplane::kernel::nl
