// SNAT saturation statistics: what GetSnatStats and the ruleplane_snat_*
// metrics report, computed from observed per-tuple usage. Pure values and a
// pure summary function; the SNAT monitor (agent/txn/snat_monitor.h) fills
// the kernel-derived counters.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "agent/backend/snat_backend.h"
#include "agent/core/snat.h"

namespace ruleplane::backend {

struct SnatEgressStat {
  core::IpAddress addr;
  uint32_t slot = 0;      // position in the configured pool
  bool in_pool = true;    // false: still holds flows but no longer configured
  uint64_t translations = 0;     // translations in use now
  uint32_t busiest_in_use = 0;   // most used (remote, port, proto) tuple on it
  uint64_t allocations = 0;      // bpf only: mappings allocated since load
  uint64_t exhausted = 0;        // bpf only: allocations that gave up here
};

struct SnatTupleStat {
  core::IpAddress egress;
  core::IpAddress remote;
  uint16_t remote_port = 0;
  uint8_t proto = 0;
  uint32_t in_use = 0;
  uint32_t capacity = 0;     // ports one tuple can hold (the port range)
  double utilization = 0;    // in_use / capacity
};

struct SnatStats {
  core::SnatMode mode = core::SnatMode::kOff;
  absl::Time collected_at = absl::InfinitePast();
  absl::Duration collect_duration;
  uint32_t capacity_per_tuple = 0;
  std::string port_range;  // the effective SNAT port range, "LO-HI"
  // core::SnatSettings::egress_waiting: what the egress interface does not
  // give yet (or no longer gives); empty when SNAT runs as configured.
  std::string egress_waiting;
  // bpf: ports of port_range the node's own sockets may also be given as
  // ephemeral ports (core::SharedEphemeralPorts), and the node's
  // net.ipv4.ip_local_port_range ("LO-HI"). 0 and empty for nftables.
  uint32_t ports_shared_with_node = 0;
  std::string node_ephemeral_ports;
  uint64_t translations_total = 0;
  // bpf: translations the NAT maps hold (snat_bpf_max_flows, or the size
  // of the pinned maps). At translations_total == flow_table_capacity new
  // flows evict the least recently used ones. 0 for nftables (conntrack's
  // own limit applies there).
  uint64_t flow_table_capacity = 0;
  // bpf: "tcx" or "clsact" (snat_bpf_attach as resolved on this kernel).
  std::string bpf_hook;
  // bpf: the datapath as loaded (GetSnatStats bpf_l4_checksum, bpf_clock,
  // bpf_exclusions); the first two are set together, once the loader
  // published them for the pinned flow map.
  std::string bpf_l4_checksum;
  std::string bpf_clock;
  std::string bpf_exclusions;
  std::vector<SnatEgressStat> egress;  // pool order, then addresses not in the pool
  std::vector<SnatTupleStat> top;      // busiest tuples first
  // Flows placed on an egress address other than the first (bpf: the
  // datapath's RP_FAILOVER counter; nftables: new flows through the
  // failover rule).
  uint64_t failovers = 0;
  // bpf: candidate ports skipped because a node socket held them towards
  // the same remote (RP_NAT_NODE_SOCKET).
  uint64_t node_socket_skips = 0;
  // Packets dropped, by reason ("no_port", "no_egress_addr", ...), since the
  // BPF maps / our rules were created.
  std::map<std::string, uint64_t> drops;
  // nftables: destinations currently steered off the first address, and
  // destinations for which every address is full.
  uint32_t steered_destinations = 0;
  uint32_t exhausted_destinations = 0;
  // Last collection problem; empty when the numbers are current.
  std::string error;
};

// Per-address totals and the `top_k` busiest tuples. `pool` gives the slot
// order; addresses seen in `usage` but not in the pool are listed after it.
SnatStats SummarizeUsage(core::SnatMode mode, const std::vector<SnatTupleUsage>& usage,
                         const std::vector<core::IpAddress>& pool, uint32_t capacity, size_t top_k);

}  // namespace ruleplane::backend
