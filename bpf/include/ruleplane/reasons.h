/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Reason codes of ruleplane's BPF programs, shared by BPF C, the C++ agent
 * (agent/kernel/bpf) and the proto enum that exports them as metric labels.
 *
 * Each packet that a program looks at bumps at most one or two per-CPU
 * counters in the map `ruleplane_rsn`, indexed by these values.
 *
 * Rules (STYLE.md section 7):
 *  - A value, once released, is never renumbered or reused. A retired reason
 *    keeps its slot and is marked "reserved" here.
 *  - New reasons take the next free value below RP_REASON_SLOTS. The counter
 *    map is sized RP_REASON_SLOTS (not "last value + 1") so adding a reason
 *    does not change the map's max_entries, which would make an agent restart
 *    fail to reuse the pinned map.
 *  - RP_DROP_* means the program returned TC_ACT_SHOT, RP_PASS_* that the
 *    packet left untouched, the others are informational.
 */
#ifndef RULEPLANE_REASONS_H
#define RULEPLANE_REASONS_H

enum rp_reason {
	/* Reserved: a zeroed reason variable must never count as something. */
	RP_REASON_NONE = 0,
	/* Every egress address was tried and had no free port for the flow. */
	RP_DROP_NO_PORT = 1,
	/* A pod flow needs a translation but no egress address is configured. */
	RP_DROP_NO_EGRESS_ADDR = 2,
	/* A new mapping was placed on an egress address other than the first. */
	RP_FAILOVER = 3,
	/* Pod egress with an L4 protocol (or ICMP type) we cannot translate. */
	RP_DROP_UNSUPPORTED_PROTO = 4,
	/* Egress non-first fragment of a pod datagram whose first fragment we
	 * have not translated: passing it would leak the pod address. */
	RP_DROP_FRAGMENT = 5,
	/* A store or checksum helper failed half-way through a rewrite. */
	RP_DROP_CSUM = 6,
	/* Pod egress to an excluded destination (or to an egress address). */
	RP_PASS_EXCLUDED = 7,
	/* Egress packet whose source is not a known pod address. */
	RP_PASS_NOT_POD = 8,
	/* Ingress non-first fragment we hold no fragment record for. */
	RP_PASS_FRAGMENT = 9,
	/* Ingress packet with no reverse NAT entry (the host's own traffic). */
	RP_PASS_NO_STATE = 10,
	/* Pod egress whose headers are truncated or inconsistent. */
	RP_DROP_MALFORMED = 11,
	/* Packet translated on egress (pod -> egress address). */
	RP_XLATE_EGRESS = 12,
	/* Packet translated on ingress (egress address -> pod). */
	RP_XLATE_INGRESS = 13,
	/* A forward entry whose port had been reclaimed by another flow was
	 * discarded and the flow got a new mapping. */
	RP_NAT_STALE = 14,
	/* A new mapping (port) was allocated. */
	RP_NAT_NEW = 15,
	/* A port whose previous flow had been idle past its timeout was
	 * reclaimed for a new flow (see rp_rnat_val.stamp). */
	RP_NAT_RECLAIM = 16,
	/* A flow's reverse entry had been evicted (LRU pressure) and its next
	 * egress packet claimed the same port again. */
	RP_NAT_RESTORED = 17,
	/* Two CPUs translated a new flow's first packets at once; this one
	 * gave its port back and used the other's mapping. */
	RP_NAT_RACE = 18,
	/* A candidate port was skipped because a socket of the node holds it
	 * towards the same remote address and port (the node's replies would
	 * otherwise be turned to the pod). */
	RP_NAT_NODE_SOCKET = 19,
	/* Next free value: 20. */
};

/* Size of the reason counter map; fixed forever (see above). */
#define RP_REASON_SLOTS 64

#endif /* RULEPLANE_REASONS_H */
