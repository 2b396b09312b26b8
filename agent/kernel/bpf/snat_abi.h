// The C++ view of bpf/include/ruleplane/{snat_maps,reasons}.h: the structs are
// included, never copied (STYLE.md section 5), and their layout is pinned
// here so a change on either side fails the build instead of corrupting maps.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "ruleplane/reasons.h"
#include "ruleplane/snat_maps.h"

namespace ruleplane::kernel::bpf {

static_assert(sizeof(rp_lpm4_key) == 8);
static_assert(offsetof(rp_lpm4_key, prefixlen) == 0);
static_assert(offsetof(rp_lpm4_key, addr) == 4);

static_assert(sizeof(rp_nat_key) == 16);
static_assert(offsetof(rp_nat_key, saddr) == 0);
static_assert(offsetof(rp_nat_key, daddr) == 4);
static_assert(offsetof(rp_nat_key, sport) == 8);
static_assert(offsetof(rp_nat_key, dport) == 10);
static_assert(offsetof(rp_nat_key, proto) == 12);
static_assert(offsetof(rp_nat_key, pad) == 13);

static_assert(sizeof(rp_nat_val) == 8);
static_assert(offsetof(rp_nat_val, egress_addr) == 0);
static_assert(offsetof(rp_nat_val, egress_port) == 4);
static_assert(offsetof(rp_nat_val, egress_idx) == 6);
static_assert(offsetof(rp_nat_val, pad) == 7);

static_assert(sizeof(rp_rnat_key) == 16);
static_assert(offsetof(rp_rnat_key, egress_addr) == 0);
static_assert(offsetof(rp_rnat_key, remote_addr) == 4);
static_assert(offsetof(rp_rnat_key, egress_port) == 8);
static_assert(offsetof(rp_rnat_key, remote_port) == 10);
static_assert(offsetof(rp_rnat_key, proto) == 12);
static_assert(offsetof(rp_rnat_key, pad) == 13);

static_assert(sizeof(rp_rnat_val) == 8);
static_assert(offsetof(rp_rnat_val, pod_addr) == 0);
static_assert(offsetof(rp_rnat_val, pod_port) == 4);
static_assert(offsetof(rp_rnat_val, stamp) == 6);

static_assert(sizeof(rp_egress_addr) == 8);
static_assert(offsetof(rp_egress_addr, addr) == 0);
static_assert(offsetof(rp_egress_addr, flags) == 4);

static_assert(sizeof(rp_snat_cfg) == 8);
static_assert(offsetof(rp_snat_cfg, egress_count) == 0);
static_assert(offsetof(rp_snat_cfg, excl_bank) == 4);

static_assert(sizeof(rp_excl4) == 8);
static_assert(sizeof(rp_excl_bank) == 8 + 8 * RP_SNAT_FAST_EXCLUSIONS);
static_assert(offsetof(rp_excl_bank, count) == 0);
static_assert(offsetof(rp_excl_bank, prefix) == 8);

// Per-CPU values are laid out at 8-byte strides; keep the struct a multiple.
static_assert(sizeof(rp_egress_stats) == 24);
static_assert(offsetof(rp_egress_stats, allocs) == 0);
static_assert(offsetof(rp_egress_stats, collisions) == 8);
static_assert(offsetof(rp_egress_stats, exhausted) == 16);

static_assert(sizeof(rp_frag_key) == 12);
static_assert(offsetof(rp_frag_key, saddr) == 0);
static_assert(offsetof(rp_frag_key, daddr) == 4);
static_assert(offsetof(rp_frag_key, id) == 8);
static_assert(offsetof(rp_frag_key, proto) == 10);
static_assert(offsetof(rp_frag_key, dir) == 11);

static_assert(sizeof(rp_frag_val) == 8);
static_assert(offsetof(rp_frag_val, addr) == 0);

// Reason values are an external contract (metrics labels, proto enum).
static_assert(RP_REASON_NONE == 0);
static_assert(RP_DROP_NO_PORT == 1);
static_assert(RP_DROP_NO_EGRESS_ADDR == 2);
static_assert(RP_FAILOVER == 3);
static_assert(RP_DROP_UNSUPPORTED_PROTO == 4);
static_assert(RP_DROP_FRAGMENT == 5);
static_assert(RP_DROP_CSUM == 6);
static_assert(RP_PASS_EXCLUDED == 7);
static_assert(RP_PASS_NOT_POD == 8);
static_assert(RP_PASS_FRAGMENT == 9);
static_assert(RP_PASS_NO_STATE == 10);
static_assert(RP_DROP_MALFORMED == 11);
static_assert(RP_XLATE_EGRESS == 12);
static_assert(RP_XLATE_INGRESS == 13);
static_assert(RP_NAT_STALE == 14);
static_assert(RP_NAT_NEW == 15);
static_assert(RP_NAT_RECLAIM == 16);
static_assert(RP_NAT_RESTORED == 17);
static_assert(RP_NAT_RACE == 18);
static_assert(RP_NAT_NODE_SOCKET == 19);
static_assert(RP_NAT_NODE_SOCKET < RP_REASON_SLOTS);

// Metric label of a reason ("no_port", "failover", ...); "reserved_<n>" for a
// value without a name.
absl::string_view ReasonName(uint32_t reason);

}  // namespace ruleplane::kernel::bpf
