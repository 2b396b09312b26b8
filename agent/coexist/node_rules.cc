#include "agent/coexist/node_rules.h"

#include <linux/netfilter.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/coexist/proc_info.h"

namespace ruleplane::coexist {
namespace {

// Names iptables-nft, ip6tables-nft, arptables-nft and ebtables-nft use.
const std::set<std::string>& IptablesTableNames() {
  static const auto* names = new std::set<std::string>{"filter", "nat", "mangle", "raw", "security", "broute"};
  return *names;
}

bool IsBuiltinChainName(const std::string& n) {
  return n == "PREROUTING" || n == "INPUT" || n == "FORWARD" || n == "OUTPUT" || n == "POSTROUTING" ||
         n == "BROUTING";
}

bool FamiliesOverlap(uint32_t a, uint32_t b) {
  if (a == b) return true;
  auto inet_pair = [](uint32_t x, uint32_t y) { return x == NFPROTO_INET && (y == NFPROTO_IPV4 || y == NFPROTO_IPV6); };
  return inet_pair(a, b) || inet_pair(b, a);
}

}  // namespace

std::vector<LegacyTable> ReadLegacyTables(const std::string& proc_root) {
  std::vector<LegacyTable> out;
  const std::pair<uint32_t, const char*> files[] = {
      {NFPROTO_IPV4, "ip_tables_names"}, {NFPROTO_IPV6, "ip6_tables_names"}, {NFPROTO_ARP, "arp_tables_names"}};
  for (const auto& [family, file] : files) {
    std::optional<std::string> text = ReadSmallFile(absl::StrCat(proc_root, "/net/", file), 4096);
    if (!text) continue;
    for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipWhitespace())) {
      out.push_back({family, std::string(absl::StripAsciiWhitespace(line))});
    }
  }
  std::sort(out.begin(), out.end(),
            [](const LegacyTable& a, const LegacyTable& b) { return std::tie(a.family, a.name) < std::tie(b.family, b.name); });
  return out;
}

std::string FamilyName(uint32_t family) {
  switch (family) {
    case NFPROTO_INET: return "inet";
    case NFPROTO_IPV4: return "ip";
    case NFPROTO_IPV6: return "ip6";
    case NFPROTO_ARP: return "arp";
    case NFPROTO_BRIDGE: return "bridge";
    case NFPROTO_NETDEV: return "netdev";
    default: return absl::StrCat("family", family);
  }
}

std::string HookName(uint32_t family, uint32_t hook) {
  if (family == NFPROTO_INET || family == NFPROTO_IPV4 || family == NFPROTO_IPV6 || family == NFPROTO_BRIDGE) {
    switch (hook) {
      case NF_INET_PRE_ROUTING: return "prerouting";
      case NF_INET_LOCAL_IN: return "input";
      case NF_INET_FORWARD: return "forward";
      case NF_INET_LOCAL_OUT: return "output";
      case NF_INET_POST_ROUTING: return "postrouting";
      case NF_INET_INGRESS: return "ingress";
      default: break;
    }
  }
  return absl::StrCat("hook", hook);
}

BackendReport DetectBackends(const std::vector<LegacyTable>& legacy, const std::vector<NftChainRef>& chains) {
  BackendReport r;
  for (const LegacyTable& t : legacy) r.legacy_tables.push_back(absl::StrCat(FamilyName(t.family), " ", t.name));
  std::set<std::string> nft_tables, hints, kp;
  for (const NftChainRef& c : chains) {
    const std::string table = absl::StrCat(FamilyName(c.family), " ", c.table);
    if (IptablesTableNames().count(c.table) && IsBuiltinChainName(c.name)) nft_tables.insert(table);
    if (c.name == "KUBE-IPTABLES-HINT" || c.name == "KUBE-KUBELET-CANARY" || c.name == "KUBE-PROXY-CANARY") {
      hints.insert(absl::StrCat(c.name, " in ", table));
    }
    if (c.table == "kube-proxy") kp.insert(table);
  }
  r.nft_tables.assign(nft_tables.begin(), nft_tables.end());
  r.kube_hints.assign(hints.begin(), hints.end());
  r.kube_proxy_nft.assign(kp.begin(), kp.end());
  r.legacy_in_use = !r.legacy_tables.empty();
  r.nft_in_use = !r.nft_tables.empty();
  r.mixed = r.legacy_in_use && r.nft_in_use;
  if (r.mixed) {
    r.summary = absl::StrCat("MIXED iptables backends: legacy x_tables [", absl::StrJoin(r.legacy_tables, ", "),
                             "] and iptables-nft [", absl::StrJoin(r.nft_tables, ", "),
                             "]; rules of one are invisible to the other's tools");
  } else if (r.legacy_in_use) {
    r.summary = absl::StrCat("iptables-legacy [", absl::StrJoin(r.legacy_tables, ", "), "]");
  } else if (r.nft_in_use) {
    r.summary = absl::StrCat("iptables-nft [", absl::StrJoin(r.nft_tables, ", "), "]");
  } else {
    r.summary = "no iptables tables";
  }
  if (!r.kube_hints.empty()) absl::StrAppend(&r.summary, "; kube hints: ", absl::StrJoin(r.kube_hints, ", "));
  if (!r.kube_proxy_nft.empty()) {
    absl::StrAppend(&r.summary, "; kube-proxy nftables mode: ", absl::StrJoin(r.kube_proxy_nft, ", "));
  }
  return r;
}

std::string HookedChain::Describe() const {
  return absl::StrCat(FamilyName(family), " ", table, legacy ? " (iptables-legacy)" : absl::StrCat(" chain ", chain),
                      " (", type, " ", HookName(family, hook), " priority ", priority, ")");
}

std::vector<HookedChain> LegacyHooks(const std::vector<LegacyTable>& tables) {
  struct Hook {
    const char* table;
    const char* type;
    uint32_t hook;
    int32_t priority;
  };
  static constexpr Hook kHooks[] = {
      {"raw", "filter", NF_INET_PRE_ROUTING, -300},     {"raw", "filter", NF_INET_LOCAL_OUT, -300},
      {"mangle", "route", NF_INET_PRE_ROUTING, -150},   {"mangle", "filter", NF_INET_LOCAL_IN, -150},
      {"mangle", "filter", NF_INET_FORWARD, -150},      {"mangle", "route", NF_INET_LOCAL_OUT, -150},
      {"mangle", "filter", NF_INET_POST_ROUTING, -150}, {"nat", "nat", NF_INET_PRE_ROUTING, -100},
      {"nat", "nat", NF_INET_LOCAL_OUT, -100},          {"nat", "nat", NF_INET_LOCAL_IN, 100},
      {"nat", "nat", NF_INET_POST_ROUTING, 100},        {"filter", "filter", NF_INET_LOCAL_IN, 0},
      {"filter", "filter", NF_INET_FORWARD, 0},         {"filter", "filter", NF_INET_LOCAL_OUT, 0},
      {"security", "filter", NF_INET_LOCAL_IN, 50},     {"security", "filter", NF_INET_FORWARD, 50},
      {"security", "filter", NF_INET_LOCAL_OUT, 50},
  };
  std::vector<HookedChain> out;
  for (const LegacyTable& t : tables) {
    if (t.family != NFPROTO_IPV4 && t.family != NFPROTO_IPV6) continue;
    for (const Hook& h : kHooks) {
      if (t.name != h.table) continue;
      out.push_back({t.family, t.name, absl::AsciiStrToUpper(HookName(t.family, h.hook)), h.type, h.hook,
                     h.priority, true});
    }
  }
  return out;
}

std::vector<HookedChain> NftHooks(const std::vector<NftChainRef>& chains) {
  std::vector<HookedChain> out;
  for (const NftChainRef& c : chains) {
    if (!c.base) continue;
    out.push_back({c.family, c.table, c.name, c.base->type, c.base->hook, c.base->priority, false});
  }
  return out;
}

std::vector<HookedChain> HooksOf(const render::TableSpec& table, const std::vector<render::ChainSpec>& chains) {
  std::vector<HookedChain> out;
  for (const render::ChainSpec& c : chains) {
    if (!c.base) continue;
    out.push_back({table.family, table.name, c.name, c.base->type, c.base->hook, c.base->priority, false});
  }
  return out;
}

std::vector<PriorityCollision> FindPriorityCollisions(uint32_t our_family, const std::string& our_table,
                                                      const std::vector<HookedChain>& ours,
                                                      const std::vector<HookedChain>& present) {
  std::vector<PriorityCollision> out;
  for (const HookedChain& mine : ours) {
    for (const HookedChain& other : present) {
      if (!other.legacy && other.family == our_family && other.table == our_table) continue;
      if (!FamiliesOverlap(mine.family, other.family)) continue;
      if (other.hook != mine.hook || other.priority != mine.priority) continue;
      PriorityCollision c{mine, other, ""};
      c.message = absl::StrCat(other.Describe(), " uses priority ", other.priority, " at hook ",
                               HookName(mine.family, mine.hook), ", as does ruleplane's ", mine.Describe());
      out.push_back(std::move(c));
    }
  }
  return out;
}

}  // namespace ruleplane::coexist
