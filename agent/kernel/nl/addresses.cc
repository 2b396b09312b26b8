#include "agent/kernel/nl/addresses.h"

#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "agent/common/status_macros.h"
#include "agent/kernel/nl/socket.h"

namespace ruleplane::kernel::nl {

namespace {

absl::StatusOr<std::vector<InterfaceAddress>> DumpOnce(const std::string& ifname, int family) {
  const unsigned ifindex = ::if_nametoindex(ifname.c_str());
  if (ifindex == 0) return absl::NotFoundError(absl::StrCat("interface ", ifname, " does not exist"));
  ASSIGN_OR_RETURN(std::unique_ptr<NetlinkSocket> socket, NetlinkSocket::OpenRoute());

  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = RTM_GETADDR;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  auto* req = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
  req->ifa_family = static_cast<uint8_t>(family);
  // Without NETLINK_GET_STRICT_CHK the kernel ignores ifa_index and dumps
  // every interface; the filter below does the same either way.
  req->ifa_index = ifindex;

  std::vector<InterfaceAddress> out;
  RETURN_IF_ERROR(socket->Request(nlh, absl::StrCat("dump addresses of ", ifname), [&](const nlmsghdr* reply) {
    if (reply->nlmsg_type != RTM_NEWADDR || reply->nlmsg_len < NLMSG_LENGTH(sizeof(ifaddrmsg))) {
      return absl::OkStatus();
    }
    const auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(reply));
    if (ifa->ifa_index != ifindex || (family != AF_UNSPEC && ifa->ifa_family != family)) return absl::OkStatus();
    if (ifa->ifa_family != AF_INET && ifa->ifa_family != AF_INET6) return absl::OkStatus();
    struct Attrs {
      const nlattr* local = nullptr;
      const nlattr* address = nullptr;
      const nlattr* flags = nullptr;
    } attrs;
    mnl_attr_parse(
        reply, sizeof(ifaddrmsg),
        [](const nlattr* a, void* data) -> int {
          auto* at = static_cast<Attrs*>(data);
          switch (mnl_attr_get_type(a)) {
            case IFA_LOCAL: at->local = a; break;
            case IFA_ADDRESS: at->address = a; break;
            case IFA_FLAGS:
              if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0) at->flags = a;
              break;
            default: break;
          }
          return MNL_CB_OK;
        },
        &attrs);
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
    // on point-to-point links and equal to it otherwise (rtnetlink(7)).
    const nlattr* a = attrs.local != nullptr ? attrs.local : attrs.address;
    const size_t want = ifa->ifa_family == AF_INET ? 4 : 16;
    if (a == nullptr || mnl_attr_get_payload_len(a) != want) return absl::OkStatus();
    InterfaceAddress addr;
    addr.family = ifa->ifa_family;
    const auto* p = static_cast<const uint8_t*>(mnl_attr_get_payload(a));
    addr.bytes.assign(p, p + want);
    addr.prefix_len = ifa->ifa_prefixlen;
    addr.scope = ifa->ifa_scope;
    addr.flags = attrs.flags != nullptr ? mnl_attr_get_u32(attrs.flags) : ifa->ifa_flags;
    out.push_back(std::move(addr));
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace

absl::StatusOr<std::vector<InterfaceAddress>> DumpInterfaceAddresses(const std::string& ifname, int family) {
  // A dump the kernel flags NLM_F_DUMP_INTR (addresses changed while it
  // ran) comes back Aborted: read again; the change that interrupted it is
  // what the caller wants to see.
  absl::StatusOr<std::vector<InterfaceAddress>> got;
  for (int attempt = 0; attempt < 3; ++attempt) {
    got = DumpOnce(ifname, family);
    if (!absl::IsAborted(got.status())) break;
  }
  return got;
}

std::vector<InterfaceAddress> PreferredSourceAddresses(const std::vector<InterfaceAddress>& all, int family) {
  std::vector<InterfaceAddress> usable;
  for (const InterfaceAddress& a : all) {
    if (a.family != family) continue;
    if (family == AF_INET) {
      if ((a.flags & IFA_F_SECONDARY) == 0) usable.push_back(a);
      continue;
    }
    if (a.scope != RT_SCOPE_UNIVERSE || (a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)) != 0) continue;
    usable.push_back(a);
  }
  if (family == AF_INET6) {
    std::stable_partition(usable.begin(), usable.end(), [](const InterfaceAddress& a) {
      return (a.flags & (IFA_F_DEPRECATED | IFA_F_TEMPORARY)) == 0;
    });
  }
  return usable;
}

}  // namespace ruleplane::kernel::nl
