// What other rule writers on the node have put into the kernel, and whether
// it conflicts with ruleplane: which iptables backends are in use (legacy
// x_tables, iptables-nft, kube-proxy's hint chains) and base chains that sit
// at one of our hook priorities.
//
// Pure: callers read the kernel (kernel::nft::ListChains, /proc/net) and pass
// values in; every function here is table-driven unit-tested.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "agent/render/plan.h"

namespace ruleplane::coexist {

// A table of the legacy x_tables backend, from /proc/net/{ip,ip6,arp}_tables_names.
struct LegacyTable {
  uint32_t family = 0;  // NFPROTO_IPV4, NFPROTO_IPV6, NFPROTO_ARP
  std::string name;     // filter, nat, mangle, raw, security
};

// Reads /proc/net/*_tables_names under `proc_root`. Missing files mean the
// x_tables modules are not loaded: no legacy tables. Never loads a module
// and never instantiates a table (no getsockopt).
std::vector<LegacyTable> ReadLegacyTables(const std::string& proc_root = "/proc");

// One nf_tables chain, in any family and table.
struct NftChainRef {
  uint32_t family = 0;
  std::string table;
  std::string name;
  std::optional<render::BaseChainSpec> base;  // hook + priority for base chains
};

// "ip", "ip6", "inet", "arp", "bridge", "netdev".
std::string FamilyName(uint32_t family);
// "prerouting", "input", ... for ip/ip6/inet hooks.
std::string HookName(uint32_t family, uint32_t hook);

struct BackendReport {
  // "ip filter", "ip6 nat", ... registered in legacy x_tables.
  std::vector<std::string> legacy_tables;
  // nf_tables tables that iptables-nft (or ebtables/arptables-nft) created:
  // an iptables table name with its upper-case built-in chains.
  std::vector<std::string> nft_tables;
  // Chains kubelet/kube-proxy create to say which backend they use, found in
  // nf_tables ("KUBE-IPTABLES-HINT in ip mangle"). Legacy tables' chains are
  // not read (that needs getsockopt and CAP_NET_RAW), so a legacy-mode
  // kube-proxy shows up through legacy_tables only.
  std::vector<std::string> kube_hints;
  // Tables of kube-proxy's nftables mode ("ip kube-proxy").
  std::vector<std::string> kube_proxy_nft;
  bool legacy_in_use = false;
  bool nft_in_use = false;
  // Both iptables backends hold tables: rules written through one are
  // invisible to the other's tools and their ordering is by hook priority
  // only. The classic cause is a component whose image ships the other
  // iptables default than the node's.
  bool mixed = false;
  // One line for logs and diagnostics.
  std::string summary;
};

BackendReport DetectBackends(const std::vector<LegacyTable>& legacy, const std::vector<NftChainRef>& chains);

// A base chain as far as hook ordering is concerned.
struct HookedChain {
  uint32_t family = 0;
  std::string table;
  std::string chain;
  std::string type;  // nat, filter, route
  uint32_t hook = 0;
  int32_t priority = 0;
  bool legacy = false;  // an x_tables table (fixed priorities), not nf_tables
  // "ip kube-proxy chain nat-prerouting (nat prerouting priority -100)".
  std::string Describe() const;
};

// The hooks and priorities legacy x_tables tables register with (kernel
// NF_IP_PRI_* / NF_IP6_PRI_*: raw -300, mangle -150, nat -100/100,
// filter 0, security 50).
std::vector<HookedChain> LegacyHooks(const std::vector<LegacyTable>& tables);
// The base chains among `chains`.
std::vector<HookedChain> NftHooks(const std::vector<NftChainRef>& chains);
// Our own base chains, from the rendered base ruleset.
std::vector<HookedChain> HooksOf(const render::TableSpec& table, const std::vector<render::ChainSpec>& chains);

struct PriorityCollision {
  HookedChain ours;
  HookedChain theirs;
  std::string message;  // names the other table, chain, hook and priority
};

// Chains in `present` (other than our own table `our_table` in family
// `our_family`) attached to the same hook with the same priority as one of
// `ours`, in an overlapping family (inet overlaps ip and ip6). At equal
// priority the kernel orders chains by registration time, so the order of
// our NAT decisions against theirs would change with restarts.
std::vector<PriorityCollision> FindPriorityCollisions(uint32_t our_family, const std::string& our_table,
                                                      const std::vector<HookedChain>& ours,
                                                      const std::vector<HookedChain>& present);

}  // namespace ruleplane::coexist
