#include "agent/backend/nft_snat_backend.h"

// glibc's netinet/in.h first: it tells the uapi headers not to redefine in_addr.
#include <netinet/in.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace ruleplane::backend {
namespace {

using render::DataType;
using render::Element;
using render::Expr;
using render::SetElement;
namespace expr = render::expr;

// Owner tag of configuration and steering elements (STYLE.md section 1:
// every element says whose it is).
constexpr char kConfigOwner[] = "ruleplane:snat-config";
constexpr char kSteerOwner[] = "ruleplane:snat-failover";

void PutPadded(std::vector<uint8_t>& out, const std::vector<uint8_t>& bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
  while (out.size() % 4) out.push_back(0);
}

std::vector<uint8_t> Be16(uint16_t v) { return {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v & 0xff)}; }

std::vector<uint8_t> IfnameKey(const std::string& name) {
  std::vector<uint8_t> key(16, 0);  // IFNAMSIZ, NUL padded as meta oifname loads it
  std::copy(name.begin(), name.end(), key.begin());
  return key;
}

std::vector<Expr> MatchNfproto(uint8_t family) {
  return {expr::Meta{NFT_META_NFPROTO, NFT_REG_1}, expr::Cmp{NFT_REG_1, NFT_CMP_EQ, {family}}};
}

const char* L4Name(uint8_t proto) {
  switch (proto) {
    case IPPROTO_TCP: return "tcp";
    case IPPROTO_UDP: return "udp";
    case IPPROTO_ICMP: return "icmp";
    default: return "?";
  }
}

// Exclusions as merged, sorted [start, end) ranges; end empty = up to the
// last address. Overlapping or adjacent prefixes become one interval: the
// kernel's interval sets refuse overlaps.
struct Range {
  std::vector<uint8_t> start;
  std::vector<uint8_t> end;  // exclusive; empty = open-ended
  std::string text;
};

std::vector<Range> MergePrefixes(std::vector<core::IpPrefix> prefixes) {
  std::sort(prefixes.begin(), prefixes.end(), [](const core::IpPrefix& a, const core::IpPrefix& b) {
    return std::make_tuple(a.addr.bytes(), a.len) < std::make_tuple(b.addr.bytes(), b.len);
  });
  std::vector<Range> out;
  for (const core::IpPrefix& p : prefixes) {
    std::vector<uint8_t> s = p.addr.bytes(), e = p.EndExclusive();
    if (!out.empty()) {
      Range& last = out.back();
      const bool touches = last.end.empty() || s <= last.end;
      if (touches) {
        if (!last.end.empty() && (e.empty() || e > last.end)) last.end = e;
        absl::StrAppend(&last.text, ",", p.ToString());
        continue;
      }
    }
    out.push_back(Range{s, e, p.ToString()});
  }
  return out;
}

void AddExclusionElements(const char* set, const std::vector<core::IpPrefix>& prefixes,
                          std::vector<SetElement>& out) {
  for (const Range& r : MergePrefixes(prefixes)) {
    out.push_back(SetElement{set, Element{r.start, {}, kConfigOwner, r.text, 0, 0}});
    if (!r.end.empty()) {
      // No comment: the kernel refuses userdata on interval ends.
      out.push_back(SetElement{set, Element{r.end, {}, "", absl::StrCat("end of ", r.text), 0,
                                            NFT_SET_ELEM_INTERVAL_END}});
    }
  }
}

uint32_t NatFlags(const core::SnatSettings& s, bool ports) {
  uint32_t flags = NF_NAT_RANGE_MAP_IPS;
  if (ports) flags |= NF_NAT_RANGE_PROTO_SPECIFIED;
  if (s.fully_random) flags |= NF_NAT_RANGE_PROTO_RANDOM_FULLY;
  return flags;
}

std::string PortsText(const core::SnatSettings& s) {
  std::string out;
  if (!s.ports.unset()) absl::StrAppend(&out, ":", s.ports.lo, "-", s.ports.hi);
  if (s.fully_random) absl::StrAppend(&out, " fully-random");
  return out;
}

// Loads the port range into reg32_{first, first+1} and fills the NAT
// expression's proto registers; nothing when the range is the kernel default.
void PortRegisters(const core::SnatSettings& s, uint32_t first, std::vector<Expr>& e, expr::Nat& nat) {
  if (s.ports.unset()) return;
  e.push_back(expr::Immediate{first, Be16(s.ports.lo)});
  e.push_back(expr::Immediate{first + 1, Be16(s.ports.hi)});
  nat.reg_proto_min = first;
  nat.reg_proto_max = first + 1;
}

// daddr . l4proto . dport into reg32_00..02 (the steering key). The
// nfproto check is implied by the jump into snat-v4; it is spelled out so
// the rule stands on its own (and `nft list` prints `ip daddr`).
std::vector<Expr> LoadDestinationKey() {
  std::vector<Expr> e = MatchNfproto(NFPROTO_IPV4);
  e.push_back(expr::Payload{NFT_PAYLOAD_NETWORK_HEADER, 16, 4, NFT_REG32_00});
  e.push_back(expr::Meta{NFT_META_L4PROTO, NFT_REG32_01});
  e.push_back(expr::Payload{NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG32_02});
  return e;
}

render::RuleSpec JumpRule(bool v4) {
  std::vector<Expr> e = MatchNfproto(v4 ? NFPROTO_IPV4 : NFPROTO_IPV6);
  e.push_back(expr::Meta{NFT_META_OIFNAME, NFT_REG_1});
  e.push_back(expr::Lookup{kSetSnatEgressIfs, NFT_REG_1, std::nullopt, false});
  e.push_back(expr::Payload{NFT_PAYLOAD_NETWORK_HEADER, v4 ? 12u : 8u, v4 ? 4u : 16u, NFT_REG_1});
  e.push_back(expr::Lookup{v4 ? render::kSetPodIpv4 : render::kSetPodIpv6, NFT_REG_1, std::nullopt, false});
  e.push_back(expr::Payload{NFT_PAYLOAD_NETWORK_HEADER, v4 ? 16u : 24u, v4 ? 4u : 16u, NFT_REG_1});
  e.push_back(expr::Lookup{v4 ? kSetSnatExcludeV4 : kSetSnatExcludeV6, NFT_REG_1, std::nullopt, true});
  e.push_back(expr::Verdict{NFT_JUMP, v4 ? kChainSnatV4 : kChainSnatV6});
  const char* fam = v4 ? "ip" : "ip6";
  return render::MakeRule(
      render::kChainNatPostrouting, v4 ? kRuleSnatJumpV4 : kRuleSnatJumpV6,
      absl::StrCat("meta nfproto ", v4 ? "ipv4" : "ipv6", " oifname @", kSetSnatEgressIfs, " ", fam, " saddr @",
                   v4 ? render::kSetPodIpv4 : render::kSetPodIpv6, " ", fam, " daddr != @",
                   v4 ? kSetSnatExcludeV4 : kSetSnatExcludeV6, " jump ", v4 ? kChainSnatV4 : kChainSnatV6),
      std::move(e));
}

render::RuleSpec ExhaustedRule() {
  std::vector<Expr> e = LoadDestinationKey();
  e.push_back(expr::Lookup{kSetSnatFullV4, NFT_REG32_00, std::nullopt, false});
  e.push_back(expr::Counter{});
  e.push_back(expr::Verdict{NF_DROP, ""});
  return render::MakeRule(kChainSnatV4, kRuleSnatExhaustedV4,
                          absl::StrCat("meta nfproto ipv4 ip daddr . meta l4proto . th dport @", kSetSnatFullV4, " counter drop"),
                          std::move(e));
}

render::RuleSpec FailoverRule(const core::SnatSettings& s) {
  std::vector<Expr> e = LoadDestinationKey();
  e.push_back(expr::Lookup{kMapSnatSteerV4, NFT_REG32_00, NFT_REG32_00, false});
  e.push_back(expr::Counter{});
  expr::Nat nat{NFT_NAT_SNAT, NFPROTO_IPV4, NFT_REG32_00, 0, NatFlags(s, !s.ports.unset())};
  PortRegisters(s, NFT_REG32_01, e, nat);
  e.push_back(nat);
  return render::MakeRule(kChainSnatV4, kRuleSnatFailoverV4,
                          absl::StrCat("meta nfproto ipv4 counter snat ip to ip daddr . meta l4proto . th dport map @", kMapSnatSteerV4,
                                       PortsText(s)),
                          std::move(e));
}

render::RuleSpec PrimaryRule(const core::SnatSettings& s, bool v4) {
  const core::IpAddress& first = v4 ? s.egress_ipv4.front() : s.egress_ipv6.front();
  std::vector<Expr> e;
  e.push_back(expr::Counter{});
  // reg32_00..03 hold an IPv6 address, so ports start at reg32_04.
  e.push_back(expr::Immediate{NFT_REG32_00, first.bytes()});
  expr::Nat nat{NFT_NAT_SNAT, v4 ? uint32_t{NFPROTO_IPV4} : uint32_t{NFPROTO_IPV6}, NFT_REG32_00, 0,
                NatFlags(s, !s.ports.unset())};
  PortRegisters(s, NFT_REG32_04, e, nat);
  e.push_back(nat);
  return render::MakeRule(v4 ? kChainSnatV4 : kChainSnatV6, v4 ? kRuleSnatPrimaryV4 : kRuleSnatPrimaryV6,
                          absl::StrCat("counter snat ", v4 ? "ip" : "ip6", " to ", first.ToString(), PortsText(s)),
                          std::move(e));
}

render::SetSpec MakeSet(std::string name, std::vector<DataType> key, std::vector<DataType> data, uint32_t flags,
                        std::string comment) {
  render::SetSpec s;
  s.name = std::move(name);
  s.key = std::move(key);
  s.data = std::move(data);
  s.flags = flags;
  s.comment = std::move(comment);
  return s;
}

}  // namespace

uint32_t NftSnatBackend::FailoverThreshold() const {
  const uint32_t capacity = settings_.EffectivePorts().size();
  const uint32_t headroom = static_cast<uint32_t>(uint64_t{capacity} * settings_.failover_headroom_percent / 100);
  return std::max<uint32_t>(1, capacity - headroom);
}

void NftSnatBackend::PlanNft(render::BaseRuleset& base) const {
  using DT = DataType;
  const core::SnatSettings& s = settings_;
  base.chains.push_back(render::ChainSpec{kChainSnatV4, std::nullopt, "pod egress IPv4 SNAT and failover"});
  base.sets.push_back(MakeSet(kSetSnatEgressIfs, {DT::kIfname}, {}, 0, "interfaces pod egress is translated on"));
  base.sets.push_back(MakeSet(kSetSnatExcludeV4, {DT::kIpv4Addr}, {}, NFT_SET_INTERVAL,
                              "IPv4 destinations that keep the pod source address"));
  base.sets.push_back(MakeSet(kMapSnatSteerV4, {DT::kIpv4Addr, DT::kInetProto, DT::kInetService}, {DT::kIpv4Addr}, 0,
                              "destinations whose first egress address is full -> next egress address"));
  base.sets.push_back(MakeSet(kSetSnatFullV4, {DT::kIpv4Addr, DT::kInetProto, DT::kInetService}, {}, 0,
                              "destinations for which every egress address is full: dropped and counted"));
  base.dynamic_sets.push_back(kMapSnatSteerV4);
  base.dynamic_sets.push_back(kSetSnatFullV4);
  if (s.ipv6) {
    base.chains.push_back(render::ChainSpec{kChainSnatV6, std::nullopt, "pod egress IPv6 SNAT"});
    base.sets.push_back(MakeSet(kSetSnatExcludeV6, {DT::kIpv6Addr}, {}, NFT_SET_INTERVAL,
                                "IPv6 destinations that keep the pod source address"));
  }

  // Rules: nat-postrouting already holds the hairpin masquerade; ours
  // follow it (a hairpinned flow is masqueraded there and never reaches
  // these rules, because the first NAT binding ends the hook's NAT chains).
  base.rules.push_back(JumpRule(true));
  if (s.ipv6) base.rules.push_back(JumpRule(false));
  base.rules.push_back(ExhaustedRule());
  base.rules.push_back(FailoverRule(s));
  base.rules.push_back(PrimaryRule(s, true));
  if (s.ipv6) base.rules.push_back(PrimaryRule(s, false));
  // Keep rules grouped by chain in chain order (render::BaseRuleset contract).
  std::map<std::string, size_t> chain_order;
  for (size_t i = 0; i < base.chains.size(); ++i) chain_order.emplace(base.chains[i].name, i);
  std::stable_sort(base.rules.begin(), base.rules.end(), [&](const render::RuleSpec& a, const render::RuleSpec& b) {
    return chain_order[a.chain] < chain_order[b.chain];
  });

  for (const std::string& ifname : s.egress_interfaces) {
    base.elements.push_back(SetElement{kSetSnatEgressIfs, Element{IfnameKey(ifname), {}, kConfigOwner, ifname, 0, 0}});
  }
  AddExclusionElements(kSetSnatExcludeV4, s.exclude_ipv4, base.elements);
  if (s.ipv6) AddExclusionElements(kSetSnatExcludeV6, s.exclude_ipv6, base.elements);
}

std::vector<render::SetElement> NftSnatBackend::PlanSteering(const std::vector<SnatTupleUsage>& usage) const {
  const std::vector<core::IpAddress>& pool = settings_.egress_ipv4;
  if (pool.empty()) return {};
  const uint32_t capacity = settings_.EffectivePorts().size();
  const uint32_t threshold = FailoverThreshold();
  // destination -> in-use count per pool slot
  using Dest = std::tuple<std::vector<uint8_t>, uint8_t, uint16_t>;
  std::map<Dest, std::vector<uint32_t>> per_dest;
  for (const SnatTupleUsage& u : usage) {
    if (!u.remote.is_v4() || (u.proto != IPPROTO_TCP && u.proto != IPPROTO_UDP)) continue;
    auto slot = std::find(pool.begin(), pool.end(), u.egress);
    if (slot == pool.end()) continue;
    auto& counts = per_dest[Dest{u.remote.bytes(), u.proto, u.remote_port}];
    counts.resize(pool.size(), 0);
    counts[static_cast<size_t>(slot - pool.begin())] += u.in_use;
  }
  std::vector<SetElement> out;
  for (const auto& [dest, counts] : per_dest) {
    if (counts[0] < threshold) continue;  // the first address still has room: no steering
    const auto& [remote, proto, port] = dest;
    std::optional<size_t> target;
    for (size_t k = 0; k < counts.size() && !target; ++k) {
      if (counts[k] < threshold) target = k;
    }
    // Past every threshold: take any address with a free port at all.
    for (size_t k = 0; k < counts.size() && !target; ++k) {
      if (counts[k] < capacity) target = k;
    }
    std::vector<uint8_t> key;
    PutPadded(key, remote);
    PutPadded(key, {proto});
    PutPadded(key, Be16(port));
    const std::string dest_text =
        absl::StrCat(core::IpAddress::V4({remote[0], remote[1], remote[2], remote[3]}).ToString(), " . ",
                     L4Name(proto), " . ", port);
    if (!target) {
      out.push_back(SetElement{kSetSnatFullV4, Element{key, {}, kSteerOwner, dest_text, 0, 0}});
    } else if (*target > 0) {
      const core::IpAddress& to = pool[*target];
      out.push_back(SetElement{kMapSnatSteerV4,
                               Element{key, to.bytes(), kSteerOwner, absl::StrCat(dest_text, " : ", to.ToString()), 0, 0}});
    }
  }
  return out;
}

}  // namespace ruleplane::backend
