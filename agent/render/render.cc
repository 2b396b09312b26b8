#include "agent/render/render.h"

#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/rtnetlink.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ruleplane::render {
namespace {

using core::Attachment;
using core::IpAddress;
using core::PortMapping;

// ---- element encoding: components padded to 4 bytes, network byte order ----

void PutPadded(std::vector<uint8_t>& out, const std::vector<uint8_t>& bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
  while (out.size() % 4) out.push_back(0);
}
void PutProto(std::vector<uint8_t>& out, core::L4Proto p) {
  PutPadded(out, {static_cast<uint8_t>(p)});
}
void PutPort(std::vector<uint8_t>& out, uint16_t port) {
  PutPadded(out, {static_cast<uint8_t>(port >> 8), static_cast<uint8_t>(port & 0xff)});
}

// Host-endian 32-bit value, as the kernel compares fib/ct results.
std::vector<uint8_t> HostU32(uint32_t v) {
  std::vector<uint8_t> out(4);
  std::memcpy(out.data(), &v, 4);
  return out;
}

// ---- rules ----

uint32_t Fnv1a(absl::string_view s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

}  // namespace

RuleSpec MakeRule(std::string chain, std::string name, std::string text, std::vector<Expr> exprs) {
  RuleSpec r;
  r.chain = std::move(chain);
  std::string canon = r.chain + text;
  for (const Expr& e : exprs) absl::StrAppend(&canon, ExprToText(e));
  // The hash makes a changed rule definition a different rule on read-back.
  r.tag = absl::StrCat("ruleplane:", name, ":", absl::Hex(Fnv1a(canon), absl::kZeroPad8));
  r.text = std::move(text);
  r.exprs = std::move(exprs);
  return r;
}

namespace {

expr::Cmp CmpEq(uint32_t reg, std::vector<uint8_t> data) {
  return expr::Cmp{reg, NFT_CMP_EQ, std::move(data)};
}
std::vector<Expr> MatchNfproto(uint8_t family) {
  return {expr::Meta{NFT_META_NFPROTO, NFT_REG_1}, CmpEq(NFT_REG_1, {family})};
}
constexpr uint32_t kNatMapFlags = NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED;

RuleSpec HostportSpecificRule(bool v4) {
  // ip daddr . meta l4proto . th dport -> pod ip . pod port
  const uint32_t addr_regs = v4 ? 1 : 4;
  std::vector<Expr> e = MatchNfproto(v4 ? NFPROTO_IPV4 : NFPROTO_IPV6);
  e.push_back(expr::Payload{NFT_PAYLOAD_NETWORK_HEADER, v4 ? 16u : 24u, v4 ? 4u : 16u, NFT_REG32_00});
  e.push_back(expr::Meta{NFT_META_L4PROTO, NFT_REG32_00 + addr_regs});
  e.push_back(expr::Payload{NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG32_00 + addr_regs + 1});
  e.push_back(expr::Lookup{v4 ? kMapHostportIpV4 : kMapHostportIpV6, NFT_REG32_00, NFT_REG32_00, false});
  e.push_back(expr::Nat{NFT_NAT_DNAT, v4 ? uint32_t{NFPROTO_IPV4} : uint32_t{NFPROTO_IPV6}, NFT_REG32_00,
                        NFT_REG32_00 + addr_regs, kNatMapFlags});
  const char* fam = v4 ? "ip" : "ip6";
  return MakeRule(kChainHostports, v4 ? "hostport-ip-v4" : "hostport-ip-v6",
                  absl::StrCat("meta nfproto ", v4 ? "ipv4" : "ipv6", " dnat ", fam, " to ", fam,
                               " daddr . meta l4proto . th dport map @",
                               v4 ? kMapHostportIpV4 : kMapHostportIpV6),
                  std::move(e));
}

RuleSpec HostportAnyRule(bool v4) {
  // meta l4proto . th dport -> pod ip . pod port
  const uint32_t addr_regs = v4 ? 1 : 4;
  std::vector<Expr> e = MatchNfproto(v4 ? NFPROTO_IPV4 : NFPROTO_IPV6);
  e.push_back(expr::Meta{NFT_META_L4PROTO, NFT_REG32_00});
  e.push_back(expr::Payload{NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG32_01});
  e.push_back(expr::Lookup{v4 ? kMapHostportV4 : kMapHostportV6, NFT_REG32_00, NFT_REG32_00, false});
  e.push_back(expr::Nat{NFT_NAT_DNAT, v4 ? uint32_t{NFPROTO_IPV4} : uint32_t{NFPROTO_IPV6}, NFT_REG32_00,
                        NFT_REG32_00 + addr_regs, kNatMapFlags});
  const char* fam = v4 ? "ip" : "ip6";
  return MakeRule(kChainHostports, v4 ? "hostport-v4" : "hostport-v6",
                  absl::StrCat("meta nfproto ", v4 ? "ipv4" : "ipv6", " dnat ", fam,
                               " to meta l4proto . th dport map @",
                               v4 ? kMapHostportV4 : kMapHostportV6),
                  std::move(e));
}

RuleSpec JumpHostportsRule(const std::string& chain) {
  std::vector<Expr> e;
  e.push_back(expr::Fib{NFTA_FIB_F_DADDR, NFT_FIB_RESULT_ADDRTYPE, NFT_REG_1});
  e.push_back(CmpEq(NFT_REG_1, HostU32(RTN_LOCAL)));
  e.push_back(expr::Verdict{NFT_JUMP, kChainHostports});
  return MakeRule(chain, chain == kChainNatOutput ? "output-to-hostports" : "to-hostports", "fib daddr type local jump hostports", std::move(e));
}

RuleSpec HairpinRule(bool v4) {
  // A pod reaching its own host port is DNATed back to itself; without a
  // masquerade the reply would bypass conntrack's reverse NAT.
  std::vector<Expr> e;
  e.push_back(expr::Ct{NFT_CT_STATUS, NFT_REG_1});
  e.push_back(expr::Bitwise{NFT_REG_1, NFT_REG_1, 4, HostU32(IPS_DST_NAT), HostU32(0)});
  e.push_back(expr::Cmp{NFT_REG_1, NFT_CMP_NEQ, HostU32(0)});
  for (Expr& x : MatchNfproto(v4 ? NFPROTO_IPV4 : NFPROTO_IPV6)) e.push_back(std::move(x));
  e.push_back(expr::Payload{NFT_PAYLOAD_NETWORK_HEADER, v4 ? 12u : 8u, v4 ? 4u : 16u, NFT_REG32_00});
  e.push_back(expr::Payload{NFT_PAYLOAD_NETWORK_HEADER, v4 ? 16u : 24u, v4 ? 4u : 16u,
                            NFT_REG32_00 + (v4 ? 1u : 4u)});
  e.push_back(expr::Lookup{v4 ? kSetHairpinV4 : kSetHairpinV6, NFT_REG32_00, std::nullopt, false});
  e.push_back(expr::Masquerade{0});
  const char* fam = v4 ? "ip" : "ip6";
  return MakeRule(kChainNatPostrouting, v4 ? "hairpin-v4" : "hairpin-v6",
                  absl::StrCat("ct status dnat meta nfproto ", v4 ? "ipv4 " : "ipv6 ", fam, " saddr . ",
                               fam, " daddr @", v4 ? kSetHairpinV4 : kSetHairpinV6, " masquerade"),
                  std::move(e));
}

SetSpec MakeSet(std::string name, std::vector<DataType> key, std::vector<DataType> data,
                std::string comment) {
  SetSpec s;
  s.name = std::move(name);
  s.key = std::move(key);
  s.data = std::move(data);
  s.comment = std::move(comment);
  return s;
}

}  // namespace

BaseRuleset RenderBase(const Layout& layout) {
  using DT = DataType;
  BaseRuleset b;
  b.table = TableSpec{layout.table, NFPROTO_INET, layout.table_flags,
                      "owned by ruleplane-agent; do not edit"};
  b.chains = {
      ChainSpec{kChainNatPrerouting,
                BaseChainSpec{"nat", NF_INET_PRE_ROUTING, layout.dnat_priority, NF_ACCEPT},
                "host ports for traffic arriving at the node"},
      ChainSpec{kChainNatOutput,
                BaseChainSpec{"nat", NF_INET_LOCAL_OUT, layout.dnat_priority, NF_ACCEPT},
                "host ports for traffic from the node itself"},
      ChainSpec{kChainHostports, std::nullopt, "hostPort DNAT, one map element per mapping"},
      ChainSpec{kChainNatPostrouting,
                BaseChainSpec{"nat", NF_INET_POST_ROUTING, layout.snat_priority, NF_ACCEPT},
                "hairpin masquerade and pod egress SNAT"},
  };
  b.sets = {
      MakeSet(kSetPodIpv4, {DT::kIpv4Addr}, {}, "IPv4 address of every pod the agent knows"),
      MakeSet(kSetPodIpv6, {DT::kIpv6Addr}, {}, "IPv6 address of every pod the agent knows"),
      MakeSet(kMapHostportV4, {DT::kInetProto, DT::kInetService}, {DT::kIpv4Addr, DT::kInetService},
              "hostPort on any local address -> IPv4 pod"),
      MakeSet(kMapHostportV6, {DT::kInetProto, DT::kInetService}, {DT::kIpv6Addr, DT::kInetService},
              "hostPort on any local address -> IPv6 pod"),
      MakeSet(kMapHostportIpV4, {DT::kIpv4Addr, DT::kInetProto, DT::kInetService},
              {DT::kIpv4Addr, DT::kInetService}, "hostIP:hostPort -> IPv4 pod"),
      MakeSet(kMapHostportIpV6, {DT::kIpv6Addr, DT::kInetProto, DT::kInetService},
              {DT::kIpv6Addr, DT::kInetService}, "hostIP:hostPort -> IPv6 pod"),
      MakeSet(kSetHairpinV4, {DT::kIpv4Addr, DT::kIpv4Addr}, {},
              "pod . pod: IPv4 pods with host ports (hairpin)"),
      MakeSet(kSetHairpinV6, {DT::kIpv6Addr, DT::kIpv6Addr}, {},
              "pod . pod: IPv6 pods with host ports (hairpin)"),
  };
  b.rules = {
      JumpHostportsRule(kChainNatPrerouting),
      JumpHostportsRule(kChainNatOutput),
      HostportSpecificRule(true),
      HostportSpecificRule(false),
      HostportAnyRule(true),
      HostportAnyRule(false),
      HairpinRule(true),
      HairpinRule(false),
  };
  return b;
}

std::vector<Op> BaseOps(const BaseRuleset& base) {
  std::vector<Op> ops;
  ops.push_back(op::AddTable{base.table});
  // Regular chains first: base chains' rules jump to them.
  for (const ChainSpec& c : base.chains) {
    if (!c.base) ops.push_back(op::AddChain{c});
  }
  for (const ChainSpec& c : base.chains) {
    if (c.base) ops.push_back(op::AddChain{c});
  }
  for (const SetSpec& s : base.sets) ops.push_back(op::AddSet{s});
  for (const RuleSpec& r : base.rules) ops.push_back(op::AddRule{r});
  return ops;
}

std::vector<SetElement> ElementsOf(const Attachment& a) {
  std::vector<SetElement> out;
  const std::string owner = a.OwnerTag();
  auto add = [&](const char* set, std::vector<uint8_t> key, std::vector<uint8_t> data,
                 std::string text) {
    out.push_back(SetElement{set, Element{std::move(key), std::move(data), owner, std::move(text), 0}});
  };
  const IpAddress* first_v4 = nullptr;
  const IpAddress* first_v6 = nullptr;
  for (const IpAddress& ip : a.ips) {
    if (ip.is_v4() && !first_v4) first_v4 = &ip;
    if (!ip.is_v4() && !first_v6) first_v6 = &ip;
    add(ip.is_v4() ? kSetPodIpv4 : kSetPodIpv6, ip.bytes(), {}, ip.ToString());
  }
  bool hairpin_v4 = false, hairpin_v6 = false;
  for (const PortMapping& pm : a.port_mappings) {
    auto target = [&](const IpAddress& pod) {
      std::vector<uint8_t> data;
      PutPadded(data, pod.bytes());
      PutPort(data, pm.container_port);
      return data;
    };
    auto target_text = [&](const IpAddress& pod) {
      return absl::StrCat(pod.ToString(), " . ", pm.container_port);
    };
    std::string proto_port = absl::StrCat(core::L4ProtoName(pm.proto), " . ", pm.host_port);
    if (pm.host_ip && !pm.host_ip->IsUnspecified()) {
      const IpAddress* pod = pm.host_ip->is_v4() ? first_v4 : first_v6;
      if (!pod) continue;
      std::vector<uint8_t> key;
      PutPadded(key, pm.host_ip->bytes());
      PutProto(key, pm.proto);
      PutPort(key, pm.host_port);
      add(pod->is_v4() ? kMapHostportIpV4 : kMapHostportIpV6, std::move(key), target(*pod),
          absl::StrCat(pm.host_ip->ToString(), " . ", proto_port, " : ", target_text(*pod)));
      (pod->is_v4() ? hairpin_v4 : hairpin_v6) = true;
      continue;
    }
    for (const IpAddress* pod : {first_v4, first_v6}) {
      if (!pod) continue;
      if (pm.host_ip && pm.host_ip->is_v4() != pod->is_v4()) continue;
      std::vector<uint8_t> key;
      PutProto(key, pm.proto);
      PutPort(key, pm.host_port);
      add(pod->is_v4() ? kMapHostportV4 : kMapHostportV6, std::move(key), target(*pod),
          absl::StrCat(proto_port, " : ", target_text(*pod)));
      (pod->is_v4() ? hairpin_v4 : hairpin_v6) = true;
    }
  }
  for (const IpAddress* pod : {hairpin_v4 ? first_v4 : nullptr, hairpin_v6 ? first_v6 : nullptr}) {
    if (!pod) continue;
    std::vector<uint8_t> key;
    PutPadded(key, pod->bytes());
    PutPadded(key, pod->bytes());
    add(pod->is_v4() ? kSetHairpinV4 : kSetHairpinV6, std::move(key), {},
        absl::StrCat(pod->ToString(), " . ", pod->ToString()));
  }
  return out;
}

// ---- ElementIndex ----

namespace {
// Empty container id: no real attachment has one (validation rejects it).
const core::AttachmentKey kOrphanOwner{"", "adopted-from-kernel"};
}  // namespace

const Element* ElementIndex::ChosenIn(const SetMap* set, const KeyBytes& key) {
  if (set == nullptr) return nullptr;
  auto k = set->find(key);
  if (k == set->end() || k->second.empty()) return nullptr;
  // Several attachments may own the same element (a pod IP reused before the
  // old container's DEL); the smallest owner key wins, deterministically. An
  // adopted orphan (empty container id, sorts first) yields to a live owner.
  const Owners& owners = k->second;
  size_t i = 0;
  if (owners[0].first.container_id.empty() && owners.size() > 1) i = 1;
  return &owners[i].second;
}

const Element* ElementIndex::Chosen(const std::string& set, const std::vector<uint8_t>& key) const {
  auto s = sets_.find(set);
  return ChosenIn(s == sets_.end() ? nullptr : &s->second, ToKeyBytes(key));
}

void ElementIndex::AddOwner(Owners& owners, const core::AttachmentKey& owner, Element element) {
  auto it = std::lower_bound(owners.begin(), owners.end(), owner,
                             [](const auto& o, const core::AttachmentKey& k) { return o.first < k; });
  if (it != owners.end() && it->first == owner) {
    it->second = std::move(element);
    return;
  }
  owners.emplace(it, owner, std::move(element));
}

void ElementIndex::RemoveOwner(Owners& owners, const core::AttachmentKey& owner) {
  for (auto it = owners.begin(); it != owners.end(); ++it) {
    if (it->first == owner) {
      owners.erase(it);
      return;
    }
  }
}

void ElementIndex::Touch(const std::string& set, const SetMap* current, const KeyBytes& key, uint64_t origin) {
  DirtyMap& per_set = dirty_[set];
  auto [it, inserted] = per_set.try_emplace(key);
  if (inserted) {
    if (const Element* before = ChosenIn(current, key)) it->second.before = *before;
  }
  it->second.origin = origin;
}

void ElementIndex::Apply(const core::AttachmentKey& key, const core::Attachment* before,
                         const core::Attachment* after, uint64_t origin) {
  if (before) {
    for (SetElement& se : ElementsOf(*before)) {
      KeyBytes k = ToKeyBytes(se.element.key);
      SetMap& set = sets_[se.set];
      Touch(se.set, &set, k, origin);
      auto it = set.find(k);
      if (it == set.end()) continue;
      RemoveOwner(it->second, key);
      if (it->second.empty()) set.erase(it);
    }
  }
  if (after) {
    for (SetElement& se : ElementsOf(*after)) {
      KeyBytes k = ToKeyBytes(se.element.key);
      SetMap& set = sets_[se.set];
      Touch(se.set, &set, k, origin);
      AddOwner(set[k], key, std::move(se.element));
    }
  }
}

std::vector<Op> ElementIndex::TakeDelta() {
  std::vector<Op> deletes, adds;
  std::vector<std::pair<const KeyBytes*, Dirty*>> keys;
  for (auto& [set, dirty] : dirty_) {
    auto s = sets_.find(set);
    const SetMap* current = s == sets_.end() ? nullptr : &s->second;
    // Keys in byte order, as the ordered maps gave them (stable plans).
    keys.clear();
    keys.reserve(dirty.size());
    for (auto& [key, d] : dirty) keys.emplace_back(&key, &d);
    std::sort(keys.begin(), keys.end(), [](const auto& a, const auto& b) { return *a.first < *b.first; });
    op::DeleteElements del{set, {}};
    op::AddElements add{set, {}};
    for (auto& [key, d] : keys) {
      const Element* now = ChosenIn(current, *key);
      // Same key and data: nothing for the kernel to do (an owner change
      // alone does not rewrite the element's comment).
      if (d->before && now && *d->before == *now) continue;
      if (d->before) {
        Element e = std::move(*d->before);  // dirty_ is cleared below
        e.origin = d->origin;
        del.elements.push_back(std::move(e));
      }
      if (now) {
        Element e = *now;
        e.origin = d->origin;
        add.elements.push_back(std::move(e));
      }
    }
    if (!del.elements.empty()) deletes.push_back(std::move(del));
    if (!add.elements.empty()) adds.push_back(std::move(add));
  }
  dirty_.clear();
  for (Op& a : adds) deletes.push_back(std::move(a));
  return deletes;
}

std::vector<Element> ElementIndex::ElementsIn(const std::string& set) const {
  std::vector<Element> out;
  auto s = sets_.find(set);
  if (s == sets_.end()) return out;
  std::vector<std::pair<const KeyBytes*, const Owners*>> keys;
  keys.reserve(s->second.size());
  for (const auto& [key, owners] : s->second) {
    if (!owners.empty()) keys.emplace_back(&key, &owners);
  }
  std::sort(keys.begin(), keys.end(), [](const auto& a, const auto& b) { return *a.first < *b.first; });
  out.reserve(keys.size());
  for (const auto& [key, owners] : keys) out.push_back(owners->front().second);
  return out;
}

std::optional<Element> ElementIndex::Find(const std::string& set,
                                          const std::vector<uint8_t>& key) const {
  const Element* e = Chosen(set, key);
  return e ? std::optional<Element>(*e) : std::nullopt;
}

void ElementIndex::AdoptOrphans(const std::vector<SetElement>& elements) {
  for (const SetElement& se : elements) {
    Owners& owners = sets_[se.set][ToKeyBytes(se.element.key)];
    if (!owners.empty()) continue;  // a known attachment owns it already
    owners.emplace_back(kOrphanOwner, se.element);
    orphans_.push_back(se);
  }
}

size_t ElementIndex::DropOrphans(uint64_t origin) {
  size_t n = orphans_.size();
  for (const SetElement& se : orphans_) {
    auto s = sets_.find(se.set);
    if (s == sets_.end()) continue;
    KeyBytes k = ToKeyBytes(se.element.key);
    Touch(se.set, &s->second, k, origin);
    auto it = s->second.find(k);
    if (it == s->second.end()) continue;
    RemoveOwner(it->second, kOrphanOwner);
    if (it->second.empty()) s->second.erase(it);
  }
  orphans_.clear();
  return n;
}

size_t ElementIndex::size() const {
  size_t n = 0;
  for (const auto& [set, keys] : sets_) n += keys.size();
  return n;
}

}  // namespace ruleplane::render
