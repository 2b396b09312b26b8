// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc SNAT for pod egress IPv4 (the BPF half of ruleplane's SNAT backend).
 *
 * Both programs attach to the node's egress interface:
 *  - snat_egress (tc egress): a packet from a known pod address to a
 *    destination that is neither excluded nor one of our egress addresses gets
 *    its source rewritten to (egress address, allocated port).
 *  - snat_ingress (tc ingress): a reply to (egress address, allocated port)
 *    gets its destination rewritten back to the pod, including the embedded
 *    header of ICMP errors (so PMTU discovery keeps working for pods).
 *
 * TCP, UDP and ICMP echo (the identifier plays the port) are translated.
 * IPv6 and everything that is not ours is passed untouched with
 * TC_ACT_UNSPEC, so filters behind ours still see it.
 *
 * Mapping is endpoint-dependent: a port is claimed per (egress address,
 * remote address, remote port, proto) by inserting the reverse entry with
 * BPF_NOEXIST, so one port serves many remotes. Ports are picked from a random
 * start ("fully random", like NF_NAT_RANGE_PROTO_RANDOM_FULLY) and probed
 * linearly for at most max_retries ports per egress address; when one address
 * has no free port the next one is tried (RP_FAILOVER), when none has we drop
 * (RP_DROP_NO_PORT). State lives in LRU maps; a port claim whose flow has
 * been idle past its timeout (rp_rnat_val.stamp: TCP 2 h 4 min, 60 s after
 * FIN/RST, UDP and ICMP 30 s) is reclaimed by the allocator, and the LRU
 * evicts the least recently used flows under memory pressure.
 *
 * The port range must not overlap the node's ip_local_port_range (or must be
 * listed in ip_local_reserved_ports) when an egress address is also the node's
 * own address: otherwise a host socket and a pod flow can pick the same tuple
 * and the host's replies would be sent into the pod. The allocator skips a
 * port that a host socket already holds towards the flow's remote
 * (rp_node_holds, RP_NAT_NODE_SOCKET); the other order, a host connect()
 * picking a port a pod flow holds, only the disjoint range prevents (the
 * agent reports an overlap).
 *
 * Every key, value and constant layout lives in bpf/include/ruleplane/; the
 * agent fills the maps (agent/kernel/bpf/snat_program.h).
 */
#include <stdbool.h>
#include <stddef.h>

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ruleplane/reasons.h"
#include "ruleplane/snat_maps.h"

/*
 * Load-time configuration (rodata, frozen at load, so the verifier sees the
 * values as constants). The loader validates them; the program still guards
 * the combinations it cannot survive.
 */
const volatile __u16 port_min = 61000;
const volatile __u16 port_max = 65535;
/* Ports probed per egress address before failing over, <= RP_SNAT_MAX_RETRIES. */
const volatile __u32 max_retries = RP_SNAT_MAX_RETRIES;
/* Bytes in front of the IPv4 header: ETH_HLEN, or 0 on L3 devices (wg, ipip). */
const volatile __u32 l2_hdr_len = ETH_HLEN;
/*
 * Verdict for a packet we translated. As a cls_bpf filter (our slot runs
 * after the usual low priorities) TC_ACT_OK ends classification. As a tcx
 * link the loader sets TC_ACT_UNSPEC (TCX_NEXT): tcx programs run before
 * every clsact filter, and any other verdict would skip other owners' filters
 * (sch_handle_egress/ingress only fall through to them on TC_ACT_UNSPEC).
 */
const volatile __s32 xlate_verdict = TC_ACT_OK;
/*
 * Stamp clock (rp_clock): jiffies when the loader allows it and the kernel's
 * HZ is known, the coarse monotonic clock through a helper otherwise. The
 * verifier inlines bpf_jiffies64() into one load; a helper call costs about
 * 30 ns per packet on CPUs with return-thunk mitigations (AMD SRSO), and the
 * stamp is read on every translated packet.
 */
const volatile bool clock_jiffies = true;
/*
 * snat_fully_random off: a new flow first tries the pod's own source port
 * (ICMP: its echo identifier) when it lies in the range, as conntrack NAT
 * without the random flags does; when that port is taken it probes from a
 * random start like the default.
 */
const volatile bool keep_port = false;

/*
 * L4 checksums are written directly when skb->ip_summed says what the field
 * holds (rp_rewrite), through bpf_l4_csum_replace() otherwise. Reading
 * ip_summed takes the bpf_cast_to_kern_ctx kfunc (Linux 6.2+), so every
 * program exists twice: snat_egress/snat_ingress use it, and
 * snat_egress_h/snat_ingress_h only use the helper. The loader loads one
 * pair (autoload), so a kernel without the kfunc never sees a call to it,
 * and the weak extern lets libbpf open the object there.
 */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

/*
 * The one sk_buff field we read, located by CO-RE against the running
 * kernel's BTF (bpf_core_read.h's bitfield relocations).
 */
struct sk_buff___rp {
	__u8 ip_summed : 2;
} __attribute__((preserve_access_index));

/* skb->ip_summed values (include/linux/skbuff.h). */
#define RP_CHECKSUM_NONE 0
#define RP_CHECKSUM_UNNECESSARY 1
#define RP_CHECKSUM_COMPLETE 2
#define RP_CHECKSUM_PARTIAL 3

/*
 * CONFIG_HZ of the running kernel, which libbpf reads from its config file
 * (/boot/config-$(uname -r) or /proc/config.gz); 0 when there is none.
 */
extern const unsigned int CONFIG_HZ __kconfig __weak;

/*
 * CLOCK_MONOTONIC minus jiffies, in ticks, learned from the first stamp after
 * load. Both advance with the timekeeping tick, so the difference stays put
 * and stamps keep reading as CLOCK_MONOTONIC seconds, the clock earlier
 * agents stamped with and the one userspace compares against. One 64-bit
 * word, so a CPU reading it sees RP_SKEW_UNKNOWN or a whole value.
 */
#define RP_SKEW_UNKNOWN ((__s64)1 << 62)
__s64 rp_clock_skew = RP_SKEW_UNKNOWN;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RP_SNAT_MAX_PODS);
	__type(key, __be32);
	__type(value, __u8); /* RP_POD_F_* */
} ruleplane_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, RP_SNAT_MAX_EXCLUSIONS);
	/* LPM tries must be created without preallocation. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct rp_lpm4_key);
	__type(value, __u8);
} ruleplane_excl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2); /* banks, see rp_snat_cfg.excl_bank */
	__type(key, __u32);
	__type(value, struct rp_excl_bank);
} ruleplane_exclf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RP_SNAT_MAX_EGRESS_ADDRS);
	__type(key, __u32);
	__type(value, struct rp_egress_addr);
} ruleplane_eaddr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rp_snat_cfg);
} ruleplane_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RP_SNAT_MAX_FLOWS);
	__type(key, struct rp_nat_key);
	__type(value, struct rp_nat_val);
} ruleplane_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RP_SNAT_MAX_FLOWS);
	__type(key, struct rp_rnat_key);
	__type(value, struct rp_rnat_val);
} ruleplane_rnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RP_SNAT_MAX_FRAGS);
	__type(key, struct rp_frag_key);
	__type(value, struct rp_frag_val);
} ruleplane_frag SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RP_REASON_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} ruleplane_rsn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RP_SNAT_MAX_EGRESS_ADDRS);
	__type(key, __u32);
	__type(value, struct rp_egress_stats);
} ruleplane_estat SEC(".maps");

/*
 * ICMP header and types (RFC 792). <linux/icmp.h> drags in <linux/if.h> and
 * thereby glibc's <sys/socket.h>, which a -target bpf build cannot include.
 */
struct rp_icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;  /* echo identifier; unused for errors */
	__be16 seq; /* echo sequence; unused for errors */
};

#define RP_ICMP_ECHOREPLY 0
#define RP_ICMP_DEST_UNREACH 3
#define RP_ICMP_ECHO 8
#define RP_ICMP_TIME_EXCEEDED 11
#define RP_ICMP_PARAMETERPROB 12

/* TCP header flag bits (byte 13 of the header). */
#define RP_TCP_FIN 0x01
#define RP_TCP_SYN 0x02
#define RP_TCP_RST 0x04

/* IPv4 frag_off bits (host order); the uapi headers do not export them. */
#define RP_IP_MF 0x2000
#define RP_IP_OFFSET 0x1fff

/*
 * Largest L2 header we accept, and thereby the largest L3/L4 offsets. Packet
 * pointer arithmetic needs a bounded offset, and these bounds let the verifier
 * prove data + off stays inside MAX_PACKET_OFF.
 */
#define RP_MAX_L2_LEN 64
#define RP_MAX_L4_OFF (RP_MAX_L2_LEN + 60)

enum rp_frag {
	RP_FRAG_NONE = 0,
	RP_FRAG_FIRST, /* MF set, offset 0: carries the L4 header */
	RP_FRAG_LATER, /* offset != 0: no L4 header */
};

enum rp_parse {
	RP_PARSE_OK = 0,
	RP_PARSE_SKIP,        /* not IPv4: not ours */
	RP_PARSE_BAD,         /* truncated or inconsistent headers */
	RP_PARSE_UNSUPPORTED, /* an L4 protocol or ICMP type we do not handle */
};

/* The fields of one IPv4 packet the programs work with. */
struct rp_pkt {
	__u32 l3_off;
	__u32 l4_off;
	__be32 saddr;
	__be32 daddr;
	__be16 sport; /* or ICMP echo id */
	__be16 dport; /* 0 for ICMP */
	__be16 ip_id;
	__u8 proto;
	__u8 frag;    /* enum rp_frag */
	__u8 icmp_type;
	__u8 tcp_flags; /* TCP only */
};

static __always_inline void rp_count(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&ruleplane_rsn, &reason);

	/* NULL only for an out-of-range index; the verifier insists. */
	if (c)
		*c += 1;
}

/*
 * Direct packet access only sees the linear part of an skb, and GRO/GSO
 * packets may keep even their headers in page frags. Pull the first @len
 * bytes into the linear area if they are not there yet. Invalidates every
 * packet pointer, so callers reload data/data_end afterwards.
 */
static __always_inline int rp_pull(struct __sk_buff *skb, __u32 len)
{
	if ((void *)(long)skb->data + len <= (void *)(long)skb->data_end)
		return 0;
	if (len > skb->len)
		return -1;
	return bpf_skb_pull_data(skb, len);
}

static __always_inline int rp_parse_l3(struct __sk_buff *skb, struct rp_pkt *p)
{
	void *data, *data_end;
	struct iphdr *iph;
	__u32 l3_off = l2_hdr_len;
	__u16 frag_off;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return RP_PARSE_SKIP;
	/* Known constant at verification time; the bound documents the contract. */
	if (l3_off > RP_MAX_L2_LEN)
		return RP_PARSE_SKIP;
	if (rp_pull(skb, l3_off + sizeof(*iph)))
		return RP_PARSE_BAD;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	iph = data + l3_off;
	/* Bounds check for the verifier: the fixed IPv4 header is linear. */
	if ((void *)(iph + 1) > data_end)
		return RP_PARSE_BAD;
	if (iph->version != 4 || iph->ihl < 5)
		return RP_PARSE_BAD;

	p->l3_off = l3_off;
	p->l4_off = l3_off + iph->ihl * 4;
	p->saddr = iph->saddr;
	p->daddr = iph->daddr;
	p->proto = iph->protocol;
	p->ip_id = iph->id;
	frag_off = bpf_ntohs(iph->frag_off);
	if (frag_off & RP_IP_OFFSET)
		p->frag = RP_FRAG_LATER;
	else if (frag_off & RP_IP_MF)
		p->frag = RP_FRAG_FIRST;
	else
		p->frag = RP_FRAG_NONE;
	return RP_PARSE_OK;
}

/*
 * Fills sport/dport (or the ICMP type and echo id) for a packet that carries
 * an L4 header. Which ICMP types are translated is the caller's decision.
 */
static __always_inline int rp_parse_l4(struct __sk_buff *skb, struct rp_pkt *p)
{
	void *data, *data_end;
	/*
	 * Reload and re-bound: the verifier does not always keep the bounds of
	 * a 32-bit value spilled into the rp_pkt on the stack.
	 */
	__u32 l4_off = p->l4_off;
	__u32 need;
	__u8 *l4;

	if (l4_off > RP_MAX_L4_OFF)
		return RP_PARSE_BAD;
	switch (p->proto) {
	case IPPROTO_TCP:
		need = sizeof(struct tcphdr);
		break;
	case IPPROTO_UDP:
		need = sizeof(struct udphdr);
		break;
	case IPPROTO_ICMP:
		need = sizeof(struct rp_icmphdr);
		break;
	default:
		return RP_PARSE_UNSUPPORTED;
	}
	if (rp_pull(skb, l4_off + need))
		return RP_PARSE_BAD;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;

	/*
	 * rp_pull() succeeding means the whole L4 header (@need bytes) is in
	 * the skb. Reading only needs the first 8 bytes, which hold the ports
	 * of TCP and UDP and the type and echo id of ICMP. One fixed-size
	 * check for all three also keeps clang from merging the TCP and UDP
	 * loads into a path the verifier cannot follow.
	 */
	l4 = data + l4_off;
	/* Bounds check for the verifier (rp_pull made it true). */
	if ((void *)(l4 + 8) > data_end)
		return RP_PARSE_BAD;
	if (p->proto == IPPROTO_ICMP) {
		p->icmp_type = l4[0];
		p->sport = *(__be16 *)(l4 + offsetof(struct rp_icmphdr, id));
		p->dport = 0;
	} else {
		/* source and dest open both tcphdr and udphdr */
		p->sport = *(__be16 *)(l4 + offsetof(struct udphdr, source));
		p->dport = *(__be16 *)(l4 + offsetof(struct udphdr, dest));
	}
	if (p->proto == IPPROTO_TCP) {
		/* Bounds check for the verifier (rp_pull made all 20 bytes
		 * linear): the flags byte is the 14th. */
		if ((void *)(l4 + 14) > data_end)
			return RP_PARSE_BAD;
		p->tcp_flags = l4[13];
	}
	return RP_PARSE_OK;
}

/* Offset of the L4 checksum field and the csum-helper flags for @proto. */
static __always_inline int rp_l4_csum(__u8 proto, __u32 l4_off, __u32 *off,
				      __u64 *flags, bool *pseudo)
{
	switch (proto) {
	case IPPROTO_TCP:
		*off = l4_off + offsetof(struct tcphdr, check);
		*flags = 0;
		*pseudo = true;
		return 0;
	case IPPROTO_UDP:
		*off = l4_off + offsetof(struct udphdr, check);
		/*
		 * A zero UDP checksum means "none" and must stay zero; a
		 * computed zero must be sent as 0xffff (RFC 768).
		 */
		*flags = BPF_F_MARK_MANGLED_0;
		*pseudo = true;
		return 0;
	case IPPROTO_ICMP:
		*off = l4_off + offsetof(struct rp_icmphdr, checksum);
		*flags = 0;
		*pseudo = false; /* the ICMP checksum has no pseudo header */
		return 0;
	}
	return -1;
}

/*
 * RFC 1624 eqn. 3 for a 32-bit field: the checksum @check after the field
 * changed from @from to @to, HC' = ~(~HC + ~m + m'). Values are taken as they
 * sit in the packet; one's complement sums do not care about byte order as
 * long as every operand is read the same way.
 */
static __always_inline __u16 rp_csum_replace4(__u16 check, __be32 from,
					      __be32 to)
{
	__u32 s = (__u16)~check;

	s += (~from & 0xffff) + (~from >> 16);
	s += (to & 0xffff) + (to >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* The same for a 16-bit field. */
static __always_inline __u16 rp_csum_replace2(__u16 check, __be16 from,
					      __be16 to)
{
	__u32 s = (__u16)~check;

	s += (__u16)~from;
	s += to;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/*
 * skb->ip_summed, or -1 in the programs that may not read it (@kctx, a
 * compile-time constant per program). bpf_cast_to_kern_ctx() is inlined by
 * the verifier (a register move).
 */
static __always_inline int rp_ip_summed(struct __sk_buff *skb, const bool kctx)
{
	struct sk_buff___rp *kskb;

	if (!kctx)
		return -1;
	kskb = bpf_cast_to_kern_ctx(skb);
	return BPF_CORE_READ_BITFIELD(kskb, ip_summed);
}

/*
 * The new L4 checksum field for an address change (@pseudo: the field
 * covers the address through the pseudo header) and a port change, the way
 * inet_proto_csum_replace4/2 (net/core/utils.c) would compute it, for every
 * ip_summed but CHECKSUM_COMPLETE (whose skb->csum a program cannot fix):
 *  - CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not
 *    complemented, as the seed for the checksum the device or
 *    skb_checksum_help() computes later; it takes the address change and
 *    ignores the port, which the later sum covers by itself.
 *  - CHECKSUM_NONE / UNNECESSARY: the field is the full checksum and takes
 *    both (RFC 1624).
 * @mangled0 (UDP): a zero field means "no checksum" and stays zero; a
 * computed zero is sent as 0xffff (RFC 768), as BPF_F_MARK_MANGLED_0 does.
 */
static __always_inline __u16 rp_l4_csum_direct(__u16 check, int summed,
					       bool pseudo, bool mangled0,
					       __be32 from_addr, __be32 to_addr,
					       bool port, __be16 from_port,
					       __be16 to_port)
{
	if (mangled0 && !check)
		return 0;
	if (summed == RP_CHECKSUM_PARTIAL) {
		if (pseudo)
			check = (__u16)~rp_csum_replace4((__u16)~check,
							 from_addr, to_addr);
	} else {
		if (pseudo)
			check = rp_csum_replace4(check, from_addr, to_addr);
		if (port)
			check = rp_csum_replace2(check, from_port, to_port);
	}
	if (mangled0 && !check)
		check = 0xffff;
	return check;
}

/* Which IPv4 address rp_rewrite() replaces. */
enum rp_addr_field {
	RP_SADDR,
	RP_DADDR,
};

/*
 * Rewrites the IPv4 source or destination (@field) from @from_addr to
 * @to_addr and, when @port_off is not 0, the port (or ICMP echo id) at
 * @port_off, keeping the IPv4 header checksum and (unless @p is a non-first
 * fragment) the L4 checksum valid.
 *
 * What the L4 checksum field holds depends on skb->ip_summed
 * (CHECKSUM_PARTIAL keeps the pseudo-header seed there, so a port change
 * leaves it alone and an address change moves it), and for
 * CHECKSUM_COMPLETE skb->csum must follow the pseudo-header part
 * (net/core/utils.c, inet_proto_csum_replace4). Where the program can read
 * ip_summed (@kctx) it writes the field itself for every case but
 * CHECKSUM_COMPLETE (rp_l4_csum_direct); COMPLETE packets, and every packet
 * on kernels without bpf_cast_to_kern_ctx, go through bpf_l4_csum_replace(),
 * which also fixes skb->csum. The address, the port and the IPv4 checksum are
 * always written directly: each store is balanced by a checksum change, so
 * skb->csum stays right without BPF_F_RECOMPUTE_CSUM. Each helper call saved
 * is ~30-40 ns on the benchmark VM (tools/bench/bpf_snat_bench.cc, which
 * loads the helper variant next to this one). The price: a program with direct
 * writes gets the verifier's unclone prologue (bpf_unclone_prologue), which
 * calls bpf_skb_pull_data() for every cloned skb it sees, ours or not. For
 * TCP's own clones that only checks the header is private; a clone made by a
 * packet tap (tcpdump) on ingress gets its linear part copied while the tap
 * runs.
 *
 * A failure leaves the packet half rewritten; callers must drop it.
 */
static __always_inline int rp_rewrite(struct __sk_buff *skb,
				      const struct rp_pkt *p,
				      enum rp_addr_field field,
				      __be32 from_addr, __be32 to_addr,
				      __u32 port_off, __be16 from_port,
				      __be16 to_port, const bool kctx)
{
	__u32 csum_off = 0, l3_off = p->l3_off;
	__u64 l4_flags = 0;
	bool pseudo = false;
	bool l4 = p->frag != RP_FRAG_LATER;
	bool port = l4 && port_off && from_port != to_port;
	void *data, *data_end;
	struct iphdr *iph;
	int summed = -1;

	if (l4 && rp_l4_csum(p->proto, p->l4_off, &csum_off, &l4_flags, &pseudo))
		return -1;
	if (l4)
		summed = rp_ip_summed(skb, kctx);

	if (summed < 0 || summed == RP_CHECKSUM_COMPLETE) {
		if (l4 && pseudo &&
		    bpf_l4_csum_replace(skb, csum_off, from_addr, to_addr,
					BPF_F_PSEUDO_HDR | l4_flags |
						sizeof(to_addr)))
			return -1;
		if (port &&
		    bpf_l4_csum_replace(skb, csum_off, from_port, to_port,
					l4_flags | sizeof(to_port)))
			return -1;
		summed = -1; /* done */
	}

	/* The helpers invalidated every packet pointer: reload, re-bound. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (l3_off > RP_MAX_L2_LEN)
		return -1;
	iph = data + l3_off;
	if ((void *)(iph + 1) > data_end)
		return -1;
	if (summed >= 0) {
		__sum16 *check;

		if (csum_off > RP_MAX_L4_OFF + sizeof(struct tcphdr))
			return -1;
		check = data + csum_off;
		/* rp_parse_l4() pulled the L4 header; for the verifier. */
		if ((void *)(check + 1) > data_end)
			return -1;
		*check = rp_l4_csum_direct(*check, summed, pseudo,
					   l4_flags & BPF_F_MARK_MANGLED_0,
					   from_addr, to_addr, port, from_port,
					   to_port);
	}
	if (port) {
		__be16 *pp;

		if (port_off > RP_MAX_L4_OFF + sizeof(struct tcphdr))
			return -1;
		pp = data + port_off;
		/* rp_parse_l4() pulled the L4 header; for the verifier. */
		if ((void *)(pp + 1) > data_end)
			return -1;
		*pp = to_port;
	}
	iph->check = rp_csum_replace4(iph->check, from_addr, to_addr);
	if (field == RP_SADDR)
		iph->saddr = to_addr;
	else
		iph->daddr = to_addr;
	return 0;
}

/* Port (or ICMP echo id) field offset for the L4 header of @p. */
static __always_inline __u32 rp_sport_off(const struct rp_pkt *p)
{
	if (p->proto == IPPROTO_ICMP)
		return p->l4_off + offsetof(struct rp_icmphdr, id);
	/* source is the first field of both tcphdr and udphdr */
	return p->l4_off + offsetof(struct tcphdr, source);
}

static __always_inline __u32 rp_dport_off(const struct rp_pkt *p)
{
	if (p->proto == IPPROTO_ICMP)
		return p->l4_off + offsetof(struct rp_icmphdr, id);
	/* dest is the second field of both tcphdr and udphdr */
	return p->l4_off + offsetof(struct tcphdr, dest);
}

/*
 * True if @daddr is in one of the exclusion prefixes: a scan of the live
 * bank of ruleplane_exclf, or the LPM trie when no bank is live.
 */
static __always_inline bool rp_excl_match(const struct rp_snat_cfg *cfg,
					  __be32 daddr)
{
	struct rp_lpm4_key lk = { .prefixlen = 32, .addr = daddr };
	struct rp_excl_bank *bank;
	__u32 which = cfg->excl_bank, i, count;

	if (which != RP_EXCL_BANK_0 && which != RP_EXCL_BANK_1)
		return bpf_map_lookup_elem(&ruleplane_excl, &lk) != NULL;
	which -= RP_EXCL_BANK_0;
	bank = bpf_map_lookup_elem(&ruleplane_exclf, &which);
	/* In range (0 or 1); NULL check for the verifier. */
	if (!bank)
		return bpf_map_lookup_elem(&ruleplane_excl, &lk) != NULL;
	count = bank->count;
	for (i = 0; i < RP_SNAT_FAST_EXCLUSIONS; i++) {
		if (i >= count)
			break;
		if ((daddr & bank->prefix[i].mask) == bank->prefix[i].addr)
			return true;
	}
	return false;
}

/* True if @daddr must keep the pod source: excluded CIDR or egress address. */
static __always_inline bool rp_dst_excluded(__be32 daddr)
{
	struct rp_snat_cfg *cfg;
	__u32 zero = 0, idx, count;

	cfg = bpf_map_lookup_elem(&ruleplane_cfg, &zero);
	/* An array lookup at index 0 cannot fail; the verifier insists. */
	if (!cfg)
		return false;
	if (rp_excl_match(cfg, daddr))
		return true;
	count = cfg->egress_count;
	for (idx = 0; idx < RP_SNAT_MAX_EGRESS_ADDRS; idx++) {
		struct rp_egress_addr *ea;

		if (idx >= count)
			break;
		ea = bpf_map_lookup_elem(&ruleplane_eaddr, &idx);
		/* In range by the loop bound; NULL check for the verifier. */
		if (ea && ea->addr == daddr)
			return true;
	}
	return false;
}

/* Seconds of CLOCK_MONOTONIC (coarse). */
static __always_inline __u64 rp_seconds(void)
{
	__u64 hz = CONFIG_HZ, j;
	__s64 skew;

	if (!clock_jiffies || !hz)
		return bpf_ktime_get_coarse_ns() / 1000000000ULL;
	j = bpf_jiffies64();
	skew = *(volatile __s64 *)&rp_clock_skew;
	if (skew == RP_SKEW_UNKNOWN) {
		/* Whole ticks; at HZ=300 a tick is not a whole number of ns,
		 * which leaves the skew off by < 1 s after 100 days up. */
		skew = (__s64)(bpf_ktime_get_coarse_ns() / (1000000000ULL / hz)) -
		       (__s64)j;
		*(volatile __s64 *)&rp_clock_skew = skew;
	}
	/* Ticks of CLOCK_MONOTONIC since boot: never negative. */
	return (__u64)((__s64)j + skew) / hz;
}

/* rp_seconds() mod 32768; never 0 ("unknown"). */
static __always_inline __u16 rp_clock(void)
{
	__u16 c = (__u16)(rp_seconds() & RP_STAMP_CLOCK_MASK);

	return c ? c : 1;
}

/* The stamp a claim gets from a packet of its flow (see snat_maps.h). */
static __always_inline __u16 rp_stamp(__u16 old, const struct rp_pkt *p)
{
	__u16 closing = old & RP_STAMP_CLOSING;

	if (p->proto == IPPROTO_TCP) {
		if (p->tcp_flags & (RP_TCP_FIN | RP_TCP_RST))
			closing = RP_STAMP_CLOSING;
		else if (p->tcp_flags & RP_TCP_SYN)
			closing = 0; /* a new connection on the same tuple */
	}
	return rp_clock() | closing;
}

/* Refreshes a claim; written only when it changes (at most once a second
 * per flow), to keep the cache line clean on the fast path. */
static __always_inline void rp_touch(struct rp_rnat_val *rv,
				     const struct rp_pkt *p)
{
	__u16 s = rp_stamp(rv->stamp, p);

	if (rv->stamp != s)
		rv->stamp = s;
}

static __always_inline bool rp_stamp_stale(__u16 stamp, __u8 proto, __u16 now)
{
	__u16 t = stamp & RP_STAMP_CLOCK_MASK;
	__u16 age, timeout;

	if (!t)
		return false; /* unknown age: only the LRU may take it */
	age = (now - t) & RP_STAMP_CLOCK_MASK;
	if (proto == IPPROTO_TCP)
		timeout = (stamp & RP_STAMP_CLOSING) ? RP_TIMEOUT_TCP_CLOSING :
						       RP_TIMEOUT_TCP;
	else if (proto == IPPROTO_UDP)
		timeout = RP_TIMEOUT_UDP;
	else
		timeout = RP_TIMEOUT_ICMP;
	return age > timeout;
}

/*
 * Takes over the claim @cur if its flow is idle past its timeout. The whole
 * 8-byte value is swapped with one compare-and-swap against the value we
 * judged stale: a concurrent refresh (the old flow woke up) or a concurrent
 * reclaim by another CPU makes it fail, and the caller probes on.
 */
static __always_inline bool rp_reclaim(struct rp_rnat_val *cur,
				       const struct rp_rnat_val *want,
				       __u8 proto, __u16 now)
{
	struct rp_rnat_val seen;
	__u64 old, new;

	old = *(volatile __u64 *)cur;
	__builtin_memcpy(&seen, &old, sizeof(seen));
	if (!rp_stamp_stale(seen.stamp, proto, now))
		return false;
	__builtin_memcpy(&new, want, sizeof(new));
	return __sync_val_compare_and_swap((__u64 *)cur, old, new) == old;
}

/*
 * Whether a socket of the node (the skb's netns) holds @eport on @eaddr
 * towards @raddr:@rport, i.e. would receive the replies of a flow translated
 * to that port. The node picks its ephemeral ports without looking at our
 * maps, so a SNAT range kept clear of net.ipv4.ip_local_port_range is what
 * prevents the other order (the agent reports an overlap); this catches a
 * node socket that was there first or was bound explicitly. TCP finds
 * established, TIME_WAIT and listening sockets, UDP connected and bound
 * ones. ICMP echo has no such lookup.
 */
static __always_inline bool rp_node_holds(struct __sk_buff *skb, __u8 proto,
					  __be32 eaddr, __be16 eport,
					  __be32 raddr, __be16 rport)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;

	/* As the node would receive a reply: from the remote to us. */
	t.ipv4.saddr = raddr;
	t.ipv4.daddr = eaddr;
	t.ipv4.sport = rport;
	t.ipv4.dport = eport;
	if (proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4),
					BPF_F_CURRENT_NETNS, 0);
	else if (proto == IPPROTO_UDP)
		sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4),
				       BPF_F_CURRENT_NETNS, 0);
	else
		return false;
	if (!sk)
		return false;
	bpf_sk_release(sk);
	return true;
}

/*
 * Allocates a new (egress address, port) for the flow @fk and claims it by
 * inserting the reverse entry, or by reclaiming an idle one. Returns 0 with
 * @out filled, or the drop reason.
 */
static __always_inline __u32 rp_snat_alloc(struct __sk_buff *skb,
					   const struct rp_nat_key *fk,
					   const struct rp_pkt *p,
					   struct rp_nat_val *out)
{
	struct rp_rnat_key rk = {
		.remote_addr = fk->daddr,
		.remote_port = fk->dport,
		.proto = fk->proto,
	};
	struct rp_rnat_val rv = {
		.pod_addr = fk->saddr,
		.pod_port = fk->sport,
		.stamp = rp_stamp(0, p),
	};
	struct rp_rnat_val *cur;
	struct rp_snat_cfg *cfg;
	__u32 zero = 0, idx, count, range;
	__u16 now = rv.stamp & RP_STAMP_CLOCK_MASK;
	bool tried = false, failed_over = false;
	__u16 own = bpf_ntohs(fk->sport);
	bool keep = keep_port && own >= port_min && own <= port_max;

	cfg = bpf_map_lookup_elem(&ruleplane_cfg, &zero);
	/* An array lookup at index 0 cannot fail; the verifier insists. */
	if (!cfg)
		return RP_DROP_NO_EGRESS_ADDR;
	count = cfg->egress_count;
	if (port_max < port_min)
		return RP_DROP_NO_PORT;
	/* 1..65536: computed in 32 bits so the full range does not wrap. */
	range = (__u32)port_max - port_min + 1;

	for (idx = 0; idx < RP_SNAT_MAX_EGRESS_ADDRS; idx++) {
		struct rp_egress_addr *ea;
		struct rp_egress_stats *st;
		__be32 eaddr;
		__u32 i, start;

		if (idx >= count)
			break;
		ea = bpf_map_lookup_elem(&ruleplane_eaddr, &idx);
		/* In range by the loop bound; NULL check for the verifier. */
		if (!ea)
			break;
		/* Read once: userspace may rewrite the slot concurrently. */
		eaddr = ea->addr;
		if (!eaddr || (ea->flags & RP_EGRESS_F_DRAINING))
			continue;
		tried = true;
		st = bpf_map_lookup_elem(&ruleplane_estat, &idx);
		rk.egress_addr = eaddr;

		start = bpf_get_prandom_u32();
		for (i = 0; i < RP_SNAT_MAX_RETRIES; i++) {
			/* A range smaller than max_retries is fully probed. */
			if (i >= max_retries || i >= range)
				break;
			if (keep && i == 0)
				rk.egress_port = fk->sport;
			else
				rk.egress_port = bpf_htons(port_min + (start + i) % range);
			if (rp_node_holds(skb, fk->proto, eaddr, rk.egress_port,
					  fk->daddr, fk->dport)) {
				/* Not a collision: no insert was tried, and
				 * collisions feed the reader's generation. */
				rp_count(RP_NAT_NODE_SOCKET);
				continue;
			}
			/*
			 * The claim: BPF_NOEXIST is atomic under the bucket
			 * lock, so of two flows racing for a tuple one wins.
			 */
			if (bpf_map_update_elem(&ruleplane_rnat, &rk, &rv,
						BPF_NOEXIST)) {
				/* Taken: ours only if its flow went idle. */
				cur = bpf_map_lookup_elem(&ruleplane_rnat, &rk);
				if (!cur || !rp_reclaim(cur, &rv, fk->proto, now)) {
					if (st)
						st->collisions++;
					continue;
				}
				rp_count(RP_NAT_RECLAIM);
			}
			out->egress_addr = eaddr;
			out->egress_port = rk.egress_port;
			out->egress_idx = idx;
			out->pad = 0;
			if (st)
				st->allocs++;
			if (failed_over)
				rp_count(RP_FAILOVER);
			return 0;
		}
		if (st)
			st->exhausted++;
		failed_over = true;
	}
	return tried ? RP_DROP_NO_PORT : RP_DROP_NO_EGRESS_ADDR;
}

/*
 * Finds or creates the translation of the flow @fk. Returns 0 with @out
 * filled, or the drop reason.
 *
 * The two halves live in separate LRU maps and may be evicted separately:
 * a forward hit is only trusted when the reverse entry still points back at
 * this flow. A lost reverse half is re-claimed; a port that another flow
 * claimed in the meantime makes the forward entry stale.
 */
static __always_inline __u32 rp_snat_lookup(struct __sk_buff *skb,
					    const struct rp_nat_key *fk,
					    const struct rp_pkt *p,
					    struct rp_nat_val *out)
{
	struct rp_rnat_val back = {
		.pod_addr = fk->saddr,
		.pod_port = fk->sport,
	};
	struct rp_rnat_key rk = {};
	struct rp_rnat_val *rv;
	struct rp_nat_val *fv;
	__u32 reason;

	fv = bpf_map_lookup_elem(&ruleplane_nat, fk);
	if (fv) {
		*out = *fv; /* copy: another CPU may replace the entry */
		rk.egress_addr = out->egress_addr;
		rk.remote_addr = fk->daddr;
		rk.egress_port = out->egress_port;
		rk.remote_port = fk->dport;
		rk.proto = fk->proto;
		rv = bpf_map_lookup_elem(&ruleplane_rnat, &rk);
		if (rv && rv->pod_addr == fk->saddr && rv->pod_port == fk->sport) {
			rp_touch(rv, p);
			return 0;
		}
		/* Only here, off the fast path: the clock is read once per
		 * packet (rp_touch above). */
		back.stamp = rp_stamp(0, p);
		if (!rv && !bpf_map_update_elem(&ruleplane_rnat, &rk, &back,
						BPF_NOEXIST)) {
			/* Counted: every change to ruleplane_rnat's keys is
			 * (see ReadPinnedSnatMaps' generation). */
			rp_count(RP_NAT_RESTORED);
			return 0;
		}
		rp_count(RP_NAT_STALE);
		bpf_map_delete_elem(&ruleplane_nat, fk);
	}

	reason = rp_snat_alloc(skb, fk, p, out);
	if (reason)
		return reason;

	if (bpf_map_update_elem(&ruleplane_nat, fk, out, BPF_NOEXIST)) {
		/*
		 * Another CPU translated the first packet of this flow at the
		 * same time: give our port back and use its mapping.
		 */
		rk.egress_addr = out->egress_addr;
		rk.remote_addr = fk->daddr;
		rk.egress_port = out->egress_port;
		rk.remote_port = fk->dport;
		rk.proto = fk->proto;
		bpf_map_delete_elem(&ruleplane_rnat, &rk);
		/* After the delete, like every count next to a change of
		 * ruleplane_rnat's keys: a reader that saw the count before
		 * it sees the change on its next walk. */
		rp_count(RP_NAT_RACE);
		fv = bpf_map_lookup_elem(&ruleplane_nat, fk);
		if (!fv)
			return RP_DROP_NO_PORT;
		*out = *fv;
		return 0;
	}
	rp_count(RP_NAT_NEW);
	return 0;
}

static __always_inline void rp_frag_record(const struct rp_pkt *p, __u8 dir,
					   __be32 new_addr)
{
	struct rp_frag_key fk = {
		.saddr = p->saddr,
		.daddr = p->daddr,
		.id = p->ip_id,
		.proto = p->proto,
		.dir = dir,
	};
	struct rp_frag_val fv = { .addr = new_addr };

	/* Best effort: a lost record drops (egress) or passes (ingress) the
	 * remaining fragments, which the reasons counters show. */
	bpf_map_update_elem(&ruleplane_frag, &fk, &fv, BPF_ANY);
}

static __always_inline struct rp_frag_val *rp_frag_find(const struct rp_pkt *p,
							__u8 dir)
{
	struct rp_frag_key fk = {
		.saddr = p->saddr,
		.daddr = p->daddr,
		.id = p->ip_id,
		.proto = p->proto,
		.dir = dir,
	};

	return bpf_map_lookup_elem(&ruleplane_frag, &fk);
}

static __always_inline int rp_snat_egress(struct __sk_buff *skb,
					  const bool kctx)
{
	struct rp_pkt p = {};
	struct rp_nat_key fk = {};
	struct rp_nat_val nv = {};
	struct rp_frag_val *frv;
	__u8 *pod;
	__u32 reason;
	int ret;

	ret = rp_parse_l3(skb, &p);
	if (ret != RP_PARSE_OK)
		/* Not IPv4, or an IPv4 header the stack will reject itself. */
		return TC_ACT_UNSPEC;

	pod = bpf_map_lookup_elem(&ruleplane_pods, &p.saddr);
	if (!pod || !(*pod & RP_POD_F_SNAT)) {
		rp_count(RP_PASS_NOT_POD);
		return TC_ACT_UNSPEC;
	}
	if (rp_dst_excluded(p.daddr)) {
		rp_count(RP_PASS_EXCLUDED);
		return TC_ACT_UNSPEC;
	}

	if (p.frag == RP_FRAG_LATER) {
		__be32 to;

		frv = rp_frag_find(&p, RP_DIR_EGRESS);
		if (!frv) {
			rp_count(RP_DROP_FRAGMENT);
			return TC_ACT_SHOT;
		}
		to = frv->addr;
		if (rp_rewrite(skb, &p, RP_SADDR,
			       p.saddr, to, 0, 0, 0, kctx)) {
			rp_count(RP_DROP_CSUM);
			return TC_ACT_SHOT;
		}
		rp_count(RP_XLATE_EGRESS);
		return xlate_verdict;
	}

	ret = rp_parse_l4(skb, &p);
	if (ret == RP_PARSE_BAD) {
		rp_count(RP_DROP_MALFORMED);
		return TC_ACT_SHOT;
	}
	/*
	 * Only echo requests start an ICMP flow. Echo replies and ICMP errors
	 * from pods would need their own translation; dropping them beats
	 * leaking the pod address.
	 */
	if (ret == RP_PARSE_UNSUPPORTED ||
	    (p.proto == IPPROTO_ICMP && p.icmp_type != RP_ICMP_ECHO)) {
		rp_count(RP_DROP_UNSUPPORTED_PROTO);
		return TC_ACT_SHOT;
	}

	fk.saddr = p.saddr;
	fk.daddr = p.daddr;
	fk.sport = p.sport;
	fk.dport = p.dport;
	fk.proto = p.proto;
	reason = rp_snat_lookup(skb, &fk, &p, &nv);
	if (reason) {
		rp_count(reason);
		return TC_ACT_SHOT;
	}

	if (rp_rewrite(skb, &p, RP_SADDR,
		       p.saddr, nv.egress_addr, rp_sport_off(&p), p.sport,
		       nv.egress_port, kctx)) {
		rp_count(RP_DROP_CSUM);
		return TC_ACT_SHOT;
	}
	if (p.frag == RP_FRAG_FIRST)
		rp_frag_record(&p, RP_DIR_EGRESS, nv.egress_addr);
	rp_count(RP_XLATE_EGRESS);
	return xlate_verdict;
}

/*
 * Ingress ICMP error (destination unreachable, time exceeded, parameter
 * problem) about a packet we translated: its embedded header reads
 * (egress addr:port -> remote). Restore the pod in the outer destination and
 * the inner source so the pod's socket sees the error (PMTU discovery needs
 * "fragmentation needed" to arrive).
 *
 * Checksums: the outer address is covered by the outer IPv4 checksum only;
 * the inner address change is balanced by the inner IPv4 checksum change,
 * so the ICMP checksum only absorbs the inner port change. The embedded L4
 * checksum is left alone: it may be truncated, and receivers match errors
 * by addresses and ports without verifying it.
 */
static __always_inline int rp_ingress_icmp_error(struct __sk_buff *skb,
						 struct rp_pkt *p)
{
	struct rp_rnat_key rk = {};
	struct rp_rnat_val *rv;
	struct iphdr *inner;
	void *data, *data_end;
	__u32 inner_l3, inner_l4, port_off;
	__be32 pod_addr;
	__be16 inner_port, pod_port;
	__u8 *l4;
	__u32 l4_off = p->l4_off;

	/* Re-bound for the verifier, see rp_parse_l4. */
	if (l4_off > RP_MAX_L4_OFF)
		return TC_ACT_UNSPEC;
	inner_l3 = l4_off + sizeof(struct rp_icmphdr);
	if (rp_pull(skb, inner_l3 + sizeof(struct iphdr)))
		return TC_ACT_UNSPEC;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	inner = data + inner_l3;
	/* Bounds check for the verifier: the inner fixed header is linear. */
	if ((void *)(inner + 1) > data_end)
		return TC_ACT_UNSPEC;
	if (inner->version != 4 || inner->ihl < 5 || inner->saddr != p->daddr)
		return TC_ACT_UNSPEC;
	rk.egress_addr = inner->saddr;
	rk.remote_addr = inner->daddr;
	rk.proto = inner->protocol;
	inner_l4 = inner_l3 + inner->ihl * 4;

	/* RFC 792 guarantees 8 bytes of the original L4 header. */
	if (rp_pull(skb, inner_l4 + 8))
		return TC_ACT_UNSPEC;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	l4 = data + inner_l4;
	/* Bounds check for the verifier: 8 bytes of inner L4 are linear. */
	if ((void *)(l4 + 8) > data_end)
		return TC_ACT_UNSPEC;
	if (rk.proto == IPPROTO_TCP || rk.proto == IPPROTO_UDP) {
		/* Both headers start with source, dest. */
		rk.egress_port = *(__be16 *)l4;
		rk.remote_port = *(__be16 *)(l4 + 2);
		port_off = inner_l4;
	} else if (rk.proto == IPPROTO_ICMP && l4[0] == RP_ICMP_ECHO) {
		rk.egress_port = *(__be16 *)(l4 + offsetof(struct rp_icmphdr, id));
		rk.remote_port = 0;
		port_off = inner_l4 + offsetof(struct rp_icmphdr, id);
	} else {
		return TC_ACT_UNSPEC;
	}

	rv = bpf_map_lookup_elem(&ruleplane_rnat, &rk);
	if (!rv) {
		rp_count(RP_PASS_NO_STATE);
		return TC_ACT_UNSPEC;
	}
	pod_addr = rv->pod_addr;
	pod_port = rv->pod_port;
	inner_port = rk.egress_port;

	/* Inner header first, then the outer destination. */
	if (bpf_l3_csum_replace(skb, inner_l3 + offsetof(struct iphdr, check),
				rk.egress_addr, pod_addr, sizeof(pod_addr)) ||
	    bpf_skb_store_bytes(skb, inner_l3 + offsetof(struct iphdr, saddr),
				&pod_addr, sizeof(pod_addr), 0) ||
	    bpf_l4_csum_replace(skb, l4_off + offsetof(struct rp_icmphdr, checksum),
				inner_port, pod_port, sizeof(pod_port)) ||
	    bpf_skb_store_bytes(skb, port_off, &pod_port, sizeof(pod_port), 0) ||
	    bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check),
				p->daddr, pod_addr, sizeof(pod_addr)) ||
	    bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct iphdr, daddr),
				&pod_addr, sizeof(pod_addr), 0)) {
		rp_count(RP_DROP_CSUM);
		return TC_ACT_SHOT;
	}
	rp_count(RP_XLATE_INGRESS);
	return xlate_verdict;
}

static __always_inline int rp_snat_ingress(struct __sk_buff *skb,
					   const bool kctx)
{
	struct rp_rnat_key rk = {};
	struct rp_rnat_val *rv;
	struct rp_frag_val *frv;
	struct rp_pkt p = {};
	__be32 pod_addr;
	__be16 pod_port;
	int ret;

	ret = rp_parse_l3(skb, &p);
	if (ret != RP_PARSE_OK)
		return TC_ACT_UNSPEC;

	if (p.frag == RP_FRAG_LATER) {
		__be32 to;

		frv = rp_frag_find(&p, RP_DIR_INGRESS);
		if (!frv) {
			/* Not ours, or it overtook its first fragment. */
			rp_count(RP_PASS_FRAGMENT);
			return TC_ACT_UNSPEC;
		}
		to = frv->addr;
		if (rp_rewrite(skb, &p, RP_DADDR,
			       p.daddr, to, 0, 0, 0, kctx)) {
			rp_count(RP_DROP_CSUM);
			return TC_ACT_SHOT;
		}
		rp_count(RP_XLATE_INGRESS);
		return xlate_verdict;
	}

	ret = rp_parse_l4(skb, &p);
	if (ret != RP_PARSE_OK)
		/* Host traffic we cannot parse is the host stack's business. */
		return TC_ACT_UNSPEC;

	if (p.proto == IPPROTO_ICMP) {
		switch (p.icmp_type) {
		case RP_ICMP_ECHOREPLY:
			break;
		case RP_ICMP_DEST_UNREACH:
		case RP_ICMP_TIME_EXCEEDED:
		case RP_ICMP_PARAMETERPROB:
			if (p.frag != RP_FRAG_NONE)
				return TC_ACT_UNSPEC;
			return rp_ingress_icmp_error(skb, &p);
		default:
			return TC_ACT_UNSPEC;
		}
	}

	rk.egress_addr = p.daddr;
	rk.remote_addr = p.saddr;
	rk.egress_port = p.dport;
	rk.remote_port = p.sport;
	if (p.proto == IPPROTO_ICMP) {
		/* The reply carries our translated id in the same field. */
		rk.egress_port = p.sport;
		rk.remote_port = 0;
	}
	rk.proto = p.proto;
	rv = bpf_map_lookup_elem(&ruleplane_rnat, &rk);
	if (!rv) {
		rp_count(RP_PASS_NO_STATE);
		return TC_ACT_UNSPEC;
	}
	pod_addr = rv->pod_addr;
	pod_port = rv->pod_port;
	rp_touch(rv, &p);

	if (rp_rewrite(skb, &p, RP_DADDR,
		       p.daddr, pod_addr, rp_dport_off(&p), rk.egress_port,
		       pod_port, kctx)) {
		rp_count(RP_DROP_CSUM);
		return TC_ACT_SHOT;
	}
	if (p.frag == RP_FRAG_FIRST)
		rp_frag_record(&p, RP_DIR_INGRESS, pod_addr);
	rp_count(RP_XLATE_INGRESS);
	return xlate_verdict;
}

/* The programs: L4 checksums written directly where possible (kfunc). */
SEC("tc")
int snat_egress(struct __sk_buff *skb)
{
	return rp_snat_egress(skb, true);
}

SEC("tc")
int snat_ingress(struct __sk_buff *skb)
{
	return rp_snat_ingress(skb, true);
}

/* The same through bpf_l4_csum_replace() only, for kernels before 6.2. */
SEC("tc")
int snat_egress_h(struct __sk_buff *skb)
{
	return rp_snat_egress(skb, false);
}

SEC("tc")
int snat_ingress_h(struct __sk_buff *skb)
{
	return rp_snat_ingress(skb, false);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
