/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map layouts of the tc SNAT program (bpf/snat.bpf.c), shared with the C++
 * loader in agent/kernel/bpf. C-compatible, fixed-width types, every padding
 * byte spelled out (hash keys are compared bytewise, so BPF zeroes them and so
 * must userspace). agent/kernel/bpf/snat_abi.h static_asserts sizes and
 * offsets on the C++ side.
 *
 * Byte order: every address and port below is in network byte order, exactly
 * as it appears in the packet. Only the load-time rodata config
 * (port_min/port_max) is in host order.
 *
 * These layouts are an ABI with maps pinned by a previous agent: changing a
 * key/value size or a map's max_entries makes the restarted agent refuse the
 * pinned map (libbpf checks compatibility on reuse). Add fields only in a new
 * map, or by consuming explicit padding.
 */
#ifndef RULEPLANE_SNAT_MAPS_H
#define RULEPLANE_SNAT_MAPS_H

#include <linux/types.h>

/* Capacities (max_entries). Part of the pinned-map ABI, see above. */
#define RP_SNAT_MAX_EGRESS_ADDRS 8
#define RP_SNAT_MAX_PODS 16384
#define RP_SNAT_MAX_EXCLUSIONS 1024
/* Prefixes one bank of ruleplane_exclf holds (see struct rp_excl_bank). */
#define RP_SNAT_FAST_EXCLUSIONS 16
/* ruleplane_nat / ruleplane_rnat: the default size. The agent sets the real
 * size at load (snat_bpf_max_flows, within the bounds below); a pinned map of
 * another size is migrated into a new one (SnatProgram::Create and
 * FinishFlowMapMigration). */
#define RP_SNAT_MAX_FLOWS 65536
#define RP_SNAT_MAX_FLOWS_MIN 1024
#define RP_SNAT_MAX_FLOWS_LIMIT (1 << 24)
#define RP_SNAT_MAX_FRAGS 8192
/* Upper bound for the max_retries rodata knob (the verifier needs a constant
 * loop bound). */
#define RP_SNAT_MAX_RETRIES 32

/* ruleplane_pods: value bits. */
#define RP_POD_F_SNAT 0x1

/* ruleplane_eaddr: rp_egress_addr.flags bits. */
/* Keep translating existing flows, but allocate no new ports here. */
#define RP_EGRESS_F_DRAINING 0x1

/* ruleplane_frag: rp_frag_key.dir values. */
#define RP_DIR_EGRESS 1
#define RP_DIR_INGRESS 2

/* ruleplane_excl (LPM trie) key: destinations that are never translated. */
struct rp_lpm4_key {
	__u32 prefixlen; /* host order, 0..32 (LPM trie ABI) */
	__be32 addr;
};

/*
 * ruleplane_nat (LRU hash), forward direction: the flow as the pod sent it.
 * For ICMP echo, sport is the echo identifier and dport is 0.
 */
struct rp_nat_key {
	__be32 saddr;    /* pod address */
	__be32 daddr;    /* remote address */
	__be16 sport;    /* pod port / ICMP echo id */
	__be16 dport;    /* remote port / 0 */
	__u8 proto;      /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP */
	__u8 pad[3];
};

struct rp_nat_val {
	__be32 egress_addr;
	__be16 egress_port; /* or translated ICMP echo id */
	__u8 egress_idx;    /* slot in ruleplane_eaddr at allocation time */
	__u8 pad;
};

/*
 * ruleplane_rnat (LRU hash), reverse direction: the reply as it arrives on the
 * egress address. An entry is the claim on (egress addr, egress port) towards
 * one remote endpoint: the port allocator inserts it with BPF_NOEXIST, so two
 * flows can never own the same tuple.
 */
struct rp_rnat_key {
	__be32 egress_addr;
	__be32 remote_addr;
	__be16 egress_port; /* or translated ICMP echo id */
	__be16 remote_port; /* 0 for ICMP */
	__u8 proto;
	__u8 pad[3];
};

struct rp_rnat_val {
	__be32 pod_addr;
	__be16 pod_port; /* or original ICMP echo id */
	__u16 stamp;     /* last use, RP_STAMP_* (was padding: 0 = unknown) */
};

/*
 * rp_rnat_val.stamp: bits 0-14 hold the coarse monotonic clock in seconds
 * (mod 32768) at the flow's last translated packet, either direction; bit 15
 * marks a TCP flow that sent or received FIN or RST. The port allocator
 * reclaims a claim whose flow has been idle longer than its timeout, with
 * one 64-bit compare-and-swap of the whole value, so of two CPUs reclaiming
 * the same port exactly one wins. Without this, claims would only go when
 * the LRU is full: a busy destination would run out of ports for good after
 * one port range worth of short flows (e.g. DNS queries to one resolver).
 *
 * Ages wrap after 9.1 hours: a claim idle for longer may look young again and
 * then waits for the LRU. Stamp 0 (entries written before this field existed,
 * when it was padding) is never reclaimed by age. The value size did not
 * change, so pins of an earlier agent stay compatible.
 */
#define RP_STAMP_CLOSING 0x8000
#define RP_STAMP_CLOCK_MASK 0x7fff

/* Idle seconds after which a claim may be reclaimed. */
#define RP_TIMEOUT_TCP 7440       /* RFC 5382 REQ-5: at least 2 h 4 min */
#define RP_TIMEOUT_TCP_CLOSING 60 /* FIN or RST seen: about TIME_WAIT */
#define RP_TIMEOUT_UDP 30         /* conntrack's nf_conntrack_udp_timeout */
#define RP_TIMEOUT_ICMP 30        /* conntrack's nf_conntrack_icmp_timeout */

/* ruleplane_eaddr (array, RP_SNAT_MAX_EGRESS_ADDRS slots). */
struct rp_egress_addr {
	__be32 addr;
	__u32 flags; /* RP_EGRESS_F_* */
};

/*
 * ruleplane_cfg (array, one slot). Slots [0, egress_count) of ruleplane_eaddr
 * are live, tried in slot order. Userspace writes the slots first and the
 * count last, so BPF never sees a live slot that is not written yet.
 *
 * excl_bank says where egress looks up exclusions: 0, the ruleplane_excl
 * trie; 1 or 2, bank 0 or 1 of ruleplane_exclf, which then holds the same
 * prefixes as the trie. The field was reserved (always 0) before the banks
 * existed, so maps pinned by an earlier agent read as "the trie".
 */
struct rp_snat_cfg {
	__u32 egress_count;
	__u32 excl_bank; /* RP_EXCL_BANK_* */
};

#define RP_EXCL_BANK_TRIE 0
#define RP_EXCL_BANK_0 1
#define RP_EXCL_BANK_1 2

/*
 * ruleplane_exclf (array, two slots): the exclusion prefixes once more, as a
 * list egress scans with one AND and one compare per prefix, for the common
 * case of a few CIDRs (cluster, service, VPC). Walking the LPM trie costs a
 * helper call and a walk on every egress packet of a pod; this scan is
 * inline. Double-banked: userspace fills the bank not in use and then
 * switches rp_snat_cfg.excl_bank, so a packet sees the old list or the new
 * one, never half of each. More prefixes than one bank holds: excl_bank is
 * RP_EXCL_BANK_TRIE and the trie answers alone.
 */
struct rp_excl4 {
	__be32 addr; /* network order, host bits clear */
	__be32 mask; /* network order */
};

struct rp_excl_bank {
	__u32 count; /* live entries, 0..RP_SNAT_FAST_EXCLUSIONS */
	__u32 pad;
	struct rp_excl4 prefix[RP_SNAT_FAST_EXCLUSIONS];
};

/* ruleplane_estat (per-CPU array, one slot per egress address). */
struct rp_egress_stats {
	__u64 allocs;     /* mappings allocated on this address */
	__u64 collisions; /* ports tried that another flow already held */
	__u64 exhausted;  /* allocations that gave up on this address */
};

/*
 * ruleplane_frag (LRU hash): where the rest of a fragmented datagram goes.
 * Written when a first fragment (MF set, offset 0) is translated; non-first
 * fragments carry no L4 header and only get their address rewritten.
 */
struct rp_frag_key {
	__be32 saddr; /* as on the wire before translation */
	__be32 daddr;
	__be16 id;    /* IPv4 identification */
	__u8 proto;
	__u8 dir;     /* RP_DIR_* */
};

struct rp_frag_val {
	__be32 addr;  /* new saddr (egress) or new daddr (ingress) */
	__u32 pad;
};

#endif /* RULEPLANE_SNAT_MAPS_H */
