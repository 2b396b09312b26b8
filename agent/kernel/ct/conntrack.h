// Read-only conntrack access over ctnetlink (libmnl; no exec of conntrack).
//
// Used by the SNAT monitor for the nftables backend's saturation statistics
// and failover steering: which translations exist per egress address and
// destination, and the kernel's insert/drop counters. Owns nothing beyond a
// netlink socket per call; any thread (never mutates conntrack).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ruleplane::kernel::ct {

struct CtTuple {
  uint8_t family = 0;              // AF_INET / AF_INET6
  std::array<uint8_t, 16> src{};   // network order; IPv4 uses the first 4
  std::array<uint8_t, 16> dst{};
  uint8_t proto = 0;               // IPPROTO_*
  uint16_t sport = 0;              // host order; ICMP: echo id
  uint16_t dport = 0;              // host order; ICMP: 0
};

struct CtEntry {
  CtTuple orig;
  CtTuple reply;
  uint32_t status = 0;  // IPS_* bits
  uint16_t zone = 0;
};

struct CtDumpOptions {
  uint8_t family = 2;  // AF_INET
  // Only entries with all these IPS_* bits (e.g. IPS_SRC_NAT). Asked of the
  // kernel as a dump filter (CTA_STATUS/CTA_STATUS_MASK, Linux 6.0+) and
  // applied here again, so older kernels give the same answer.
  uint32_t status_bits = 0;
};

// Every conntrack entry of the calling thread's network namespace matching
// `options`. Aborted when the table changed under a long dump and the
// kernel flagged it inconsistent.
absl::StatusOr<std::vector<CtEntry>> DumpConntrack(const CtDumpOptions& options);

// Per-CPU conntrack statistics, summed (IPCTNL_MSG_CT_GET_STATS_CPU).
struct CtStats {
  uint64_t found = 0;
  uint64_t invalid = 0;
  uint64_t insert_failed = 0;  // includes NAT tuple clashes (port exhaustion)
  uint64_t drop = 0;
  uint64_t early_drop = 0;
  uint64_t error = 0;
  uint64_t clash_resolve = 0;
};
absl::StatusOr<CtStats> ReadConntrackStats();

}  // namespace ruleplane::kernel::ct
