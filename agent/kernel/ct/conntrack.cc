#include "agent/kernel/ct/conntrack.h"

// glibc's netinet/in.h first: the uapi headers then skip their own in_addr.
#include <netinet/in.h>
#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/common/status_macros.h"
#include "agent/kernel/nl/socket.h"

namespace ruleplane::kernel::ct {
namespace {

constexpr size_t kRequestBytes = 4096;

nlmsghdr* Header(std::vector<char>& buf, uint16_t msg, uint16_t flags, uint8_t family) {
  buf.assign(kRequestBytes, 0);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | msg);
  nlh->nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
  auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
  nfg->nfgen_family = family;
  nfg->version = NFNETLINK_V0;
  nfg->res_id = 0;
  return nlh;
}

// Attribute table of one nest (or of the message payload), by type.
template <size_t N>
struct Attrs {
  const nlattr* at[N + 1] = {};
  const nlattr* operator[](int type) const { return type >= 0 && static_cast<size_t>(type) <= N ? at[type] : nullptr; }
};

template <size_t N>
int Collect(const nlattr* attr, void* data) {
  auto* t = static_cast<Attrs<N>*>(data);
  const int type = mnl_attr_get_type(attr);
  if (type >= 0 && static_cast<size_t>(type) <= N) t->at[type] = attr;
  return MNL_CB_OK;
}

template <size_t N>
Attrs<N> ParseNest(const nlattr* nest) {
  Attrs<N> t;
  if (nest != nullptr) mnl_attr_parse_nested(nest, Collect<N>, &t);
  return t;
}

bool ParseTuple(const nlattr* nest, uint8_t family, CtTuple& out) {
  if (nest == nullptr) return false;
  out.family = family;
  Attrs<CTA_TUPLE_MAX> tuple = ParseNest<CTA_TUPLE_MAX>(nest);
  Attrs<CTA_IP_MAX> ip = ParseNest<CTA_IP_MAX>(tuple[CTA_TUPLE_IP]);
  if (const nlattr* a = ip[CTA_IP_V4_SRC]) std::memcpy(out.src.data(), mnl_attr_get_payload(a), 4);
  if (const nlattr* a = ip[CTA_IP_V4_DST]) std::memcpy(out.dst.data(), mnl_attr_get_payload(a), 4);
  if (const nlattr* a = ip[CTA_IP_V6_SRC]) std::memcpy(out.src.data(), mnl_attr_get_payload(a), 16);
  if (const nlattr* a = ip[CTA_IP_V6_DST]) std::memcpy(out.dst.data(), mnl_attr_get_payload(a), 16);
  Attrs<CTA_PROTO_MAX> proto = ParseNest<CTA_PROTO_MAX>(tuple[CTA_TUPLE_PROTO]);
  if (const nlattr* a = proto[CTA_PROTO_NUM]) out.proto = mnl_attr_get_u8(a);
  if (const nlattr* a = proto[CTA_PROTO_SRC_PORT]) out.sport = ntohs(mnl_attr_get_u16(a));
  if (const nlattr* a = proto[CTA_PROTO_DST_PORT]) out.dport = ntohs(mnl_attr_get_u16(a));
  if (const nlattr* a = proto[CTA_PROTO_ICMP_ID]) out.sport = ntohs(mnl_attr_get_u16(a));
  if (const nlattr* a = proto[CTA_PROTO_ICMPV6_ID]) out.sport = ntohs(mnl_attr_get_u16(a));
  return true;
}

}  // namespace

absl::StatusOr<std::vector<CtEntry>> DumpConntrack(const CtDumpOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<nl::NetlinkSocket> socket, nl::NetlinkSocket::OpenNetfilter(""));
  // A busy node has many entries: a large receive buffer keeps the dump
  // from being cut short.
  socket->EnsureReceiveBuffer(4 << 20).IgnoreError();  // best effort; the dump works with less
  std::vector<char> buf;
  nlmsghdr* nlh = Header(buf, IPCTNL_MSG_CT_GET, NLM_F_DUMP, options.family);
  if (options.status_bits != 0) {
    mnl_attr_put_u32(nlh, CTA_STATUS, htonl(options.status_bits));
    mnl_attr_put_u32(nlh, CTA_STATUS_MASK, htonl(options.status_bits));
  }
  std::vector<CtEntry> out;
  RETURN_IF_ERROR(socket->Request(nlh, "dump conntrack", [&](const nlmsghdr* reply) {
    if ((reply->nlmsg_type & 0xff) != IPCTNL_MSG_CT_NEW) return absl::OkStatus();
    const auto* nfg = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(reply));
    Attrs<CTA_MAX> attrs;
    mnl_attr_parse(reply, sizeof(nfgenmsg), Collect<CTA_MAX>, &attrs);
    CtEntry e;
    if (!ParseTuple(attrs[CTA_TUPLE_ORIG], nfg->nfgen_family, e.orig) ||
        !ParseTuple(attrs[CTA_TUPLE_REPLY], nfg->nfgen_family, e.reply)) {
      return absl::OkStatus();
    }
    if (const nlattr* a = attrs[CTA_STATUS]) e.status = ntohl(mnl_attr_get_u32(a));
    if (const nlattr* a = attrs[CTA_ZONE]) e.zone = ntohs(mnl_attr_get_u16(a));
    if ((e.status & options.status_bits) != options.status_bits) return absl::OkStatus();
    out.push_back(e);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<CtStats> ReadConntrackStats() {
  ASSIGN_OR_RETURN(std::unique_ptr<nl::NetlinkSocket> socket, nl::NetlinkSocket::OpenNetfilter(""));
  std::vector<char> buf;
  nlmsghdr* nlh = Header(buf, IPCTNL_MSG_CT_GET_STATS_CPU, NLM_F_DUMP, AF_UNSPEC);
  CtStats out;
  RETURN_IF_ERROR(socket->Request(nlh, "dump conntrack statistics", [&](const nlmsghdr* reply) {
    Attrs<CTA_STATS_MAX> attrs;
    mnl_attr_parse(reply, sizeof(nfgenmsg), Collect<CTA_STATS_MAX>, &attrs);
    auto get = [&](int type) -> uint64_t {
      const nlattr* a = attrs[type];
      return a == nullptr ? 0 : ntohl(mnl_attr_get_u32(a));
    };
    out.found += get(CTA_STATS_FOUND);
    out.invalid += get(CTA_STATS_INVALID);
    out.insert_failed += get(CTA_STATS_INSERT_FAILED);
    out.drop += get(CTA_STATS_DROP);
    out.early_drop += get(CTA_STATS_EARLY_DROP);
    out.error += get(CTA_STATS_ERROR);
    out.clash_resolve += get(CTA_STATS_CLASH_RESOLVE);
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace ruleplane::kernel::ct
