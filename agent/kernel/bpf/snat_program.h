// SnatProgram: the loaded tc SNAT program (bpf/snat.bpf.c) and its maps.
//
// Owns: the `snat` skeleton (both programs, every map, the pins it created).
// Map writes are plain BPF map updates, not transactions: each writer below
// orders its updates so every intermediate state is safe, and says how.
// Thread: the engine thread is the only caller of anything that mutates
// (STYLE.md section 1); the Read*/List*/Lookup* methods only read and may be
// called from a diagnostics thread. Must not: attach by itself (see
// AttachToInterface), or remove pins unless asked (UnpinMaps).
//
// Restart safety: with a pin dir, every ruleplane_* map is pinned as
// <pin_dir>/<map name>; a restarted agent adopts the pinned maps before load,
// so NAT state, configuration and counters survive, and AttachToInterface()
// replaces the old filters atomically.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "agent/kernel/bpf/bpf_skeleton.h"
#include "agent/kernel/bpf/ipv4.h"
#include "agent/kernel/bpf/snat_abi.h"
#include "agent/kernel/bpf/tc_hook.h"

struct snat;  // bpftool-generated skeleton (snat.skel.h), used in the .cc only
struct bpf_map;

namespace ruleplane::kernel::bpf {

inline constexpr absl::string_view kDefaultPinDir = "/sys/fs/bpf/ruleplane";

// Load-time configuration, written into the program's rodata before load.
// Changing it needs a reload (Create() again; pinned state carries over).
struct SnatConfig {
  // SNAT port range (and ICMP echo id range), host order, inclusive. Keep it
  // disjoint from net.ipv4.ip_local_port_range when an egress address is also
  // the node's own (the default 61000-65535 is above Linux's 32768-60999).
  uint16_t port_min = 61000;
  uint16_t port_max = 65535;
  // Ports probed per egress address before failing over; 1..RP_SNAT_MAX_RETRIES.
  uint32_t max_retries = RP_SNAT_MAX_RETRIES;
  // Bytes before the IPv4 header: 14 on Ethernet, 0 on L3 devices.
  uint32_t l2_header_len = 14;
  // max_entries of ruleplane_nat and ruleplane_rnat, set before load;
  // RP_SNAT_MAX_FLOWS_MIN..RP_SNAT_MAX_FLOWS_LIMIT. Pinned maps of another
  // size are migrated (see FinishFlowMapMigration()).
  uint32_t max_flows = RP_SNAT_MAX_FLOWS;
  // snat_fully_random off: a new flow first tries the pod's own port when
  // it lies in the range (then random probing, as with it on).
  bool keep_port = false;
};

// InvalidArgument naming the bad field; pure.
absl::Status ValidateSnatConfig(const SnatConfig& config);

struct SnatProgramOptions {
  SnatConfig config;
  // bpffs directory for the map pins; created if missing (it must be on a
  // mounted bpffs). Empty: no pinning (tests; state dies with the object).
  std::string pin_dir = std::string(kDefaultPinDir);
  // Stamp clock: jiffies (inlined, no helper call) when the running
  // kernel's CONFIG_HZ is readable by libbpf; false forces the coarse
  // monotonic clock helper (tests and benchmarks compare the two). Both
  // stamp CLOCK_MONOTONIC seconds.
  bool clock_jiffies = true;
  // L4 checksums written by the program itself when it can read
  // skb->ip_summed (kernels with the bpf_cast_to_kern_ctx kfunc, 6.2+:
  // programs snat_egress/snat_ingress), through the bpf_l4_csum_replace
  // helper for CHECKSUM_COMPLETE packets and, on older kernels, for all
  // (snat_egress_h/snat_ingress_h). false forces the helper programs
  // (tests, benchmarks).
  bool csum_direct = true;
  // BTF that CO-RE relocations resolve against instead of the running
  // kernel's (libbpf's btf_custom_path). Empty: the kernel's. Tests give
  // one whose struct sk_buff differs, which makes the verifier refuse the
  // direct pair the way a kernel with another sk_buff would.
  std::string btf_custom_path;
  // How AttachToInterface() hooks tc. Also load-time: a translated packet's
  // verdict differs (TC_ACT_OK ends a cls_bpf chain; TC_ACT_UNSPEC lets the
  // clsact filters that tcx runs before still see it). tcx links are pinned
  // in pin_dir next to the maps.
  TcAttach attach = TcAttach::kClsact;
};

struct EgressAddress {
  Ipv4Addr addr;
  // Existing flows keep translating to this address; no new ports here.
  bool draining = false;

  friend bool operator==(const EgressAddress&, const EgressAddress&) = default;
};

// Per egress slot, summed over CPUs.
struct EgressUsage {
  uint32_t slot = 0;
  bool live = false;  // slot < configured count
  EgressAddress address;
  uint64_t allocs = 0;      // mappings allocated here
  uint64_t collisions = 0;  // ports probed that were taken: saturation signal
  uint64_t exhausted = 0;   // allocations that gave up here (failed over)
};

// ruleplane_rsn summed over CPUs, indexed by rp_reason.
using ReasonCounters = std::array<uint64_t, RP_REASON_SLOTS>;

// Detaches and unpins our tcx links there, removes the pins of every map of
// the snat program from `pin_dir` (and the directory when it is then empty)
// without loading anything; absent pins are
// fine. For leaving bpf mode when no SnatProgram is loaded (after a restart).
// Maps stay alive while an attached program still uses them.
[[nodiscard]] absl::Status RemoveSnatPins(const std::string& pin_dir);

// Names of the snat program's maps (the pin file names), from the skeleton.
std::vector<std::string> SnatMapNames();

class SnatProgram {
 public:
  // Validates the config, prepares the pin dir, opens the skeleton, writes
  // rodata, adopts compatible pinned maps and loads both programs.
  // InvalidArgument: bad config. FailedPrecondition: no kernel BTF
  // (/sys/kernel/btf/vmlinux), pin dir not on bpffs, or
  // a pinned map whose type, key/value size or flags differ from this build
  // (its path and the difference are named; remove the pin to start with
  // empty state; flow maps of another size are migrated, not refused).
  // PermissionDenied: missing CAP_BPF/CAP_NET_ADMIN. Internal: the verifier
  // rejected a program (the message quotes the verifier log).
  static absl::StatusOr<std::unique_ptr<SnatProgram>> Create(const SnatProgramOptions& options);

  SnatProgram(const SnatProgram&) = delete;
  SnatProgram& operator=(const SnatProgram&) = delete;
  ~SnatProgram();

  const SnatConfig& config() const { return options_.config; }
  const std::string& pin_dir() const { return options_.pin_dir; }
  TcAttach attach() const { return options_.attach; }
  // Whether the loaded program writes L4 checksums itself (see
  // SnatProgramOptions::csum_direct and the kernel's support).
  bool csum_direct() const { return options_.csum_direct; }
  // Whether the stamp clock is jiffies (SnatProgramOptions::clock_jiffies
  // and libbpf found the kernel's CONFIG_HZ) rather than the ktime helper.
  bool clock_jiffies() const;
  // Kernel id of ruleplane_rnat as this program uses it; fixed for the
  // program's life (a resize moves the pin to it, ReadPinnedSnatMaps'
  // flow_map_id then matches).
  absl::StatusOr<uint32_t> flow_map_id() const;
  // Names of the maps adopted from existing pins (empty on a fresh start;
  // migrated flow maps are not among them).
  const std::vector<std::string>& reused_maps() const { return reused_maps_; }
  // The NAT maps' size in effect (config.max_flows).
  uint32_t max_flows() const;

  int egress_prog_fd() const;
  int ingress_prog_fd() const;

  // Attaches snat_ingress, then snat_egress, the way options.attach says:
  // clsact (created or adopted) filters in slot kRuleplaneTcFilter, or tcx
  // links pinned in the pin dir; replaces our earlier filters or links
  // atomically. The returned hook detaches on destruction unless released.
  absl::StatusOr<TcHook> AttachToInterface(int ifindex) const;
  absl::StatusOr<TcHook> AttachToInterface(absl::string_view ifname) const;

  // --- pod source addresses (ruleplane_pods) ---
  [[nodiscard]] absl::Status UpsertPodAddress(Ipv4Addr pod);
  // Absent: OK (idempotent DEL).
  [[nodiscard]] absl::Status DeletePodAddress(Ipv4Addr pod);
  // Makes the map equal `pods`: inserts new entries first, then deletes the
  // ones not listed, so a pod present before and after never disappears.
  [[nodiscard]] absl::Status ReplacePodAddresses(absl::Span<const Ipv4Addr> pods);
  absl::StatusOr<std::vector<Ipv4Addr>> ListPodAddresses() const;

  // --- destinations that keep the pod source (ruleplane_excl, _exclf) ---
  // Converges the trie with the same insert-then-delete order as
  // ReplacePodAddresses; prefixes are canonicalised (host bits cleared).
  // Then, when the set fits one bank (RP_SNAT_FAST_EXCLUSIONS), writes it to
  // the ruleplane_exclf bank not in use and switches rp_snat_cfg.excl_bank
  // to it; otherwise switches egress back to the trie. Each packet sees the
  // old set or the new one.
  [[nodiscard]] absl::Status ReplaceExclusions(absl::Span<const Ipv4Prefix> prefixes);
  // The trie's prefixes, sorted.
  absl::StatusOr<std::vector<Ipv4Prefix>> ListExclusions() const;
  // Where egress looks exclusions up: the live bank's prefixes in bank
  // order, or nullopt when the trie answers (too many prefixes, or maps of
  // an agent that predates the banks).
  absl::StatusOr<std::optional<std::vector<Ipv4Prefix>>> ReadExclusionBank() const;

  // --- egress addresses (ruleplane_eaddr + ruleplane_cfg) ---
  // At most RP_SNAT_MAX_EGRESS_ADDRS, tried in order; unspecified or
  // duplicate addresses are InvalidArgument. Order of writes: the slots
  // [0, n), then the count, then clearing slots [n, max). While it runs the
  // program sees old and new addresses mixed, never an unwritten slot.
  // Existing flows keep their address (see EgressAddress::draining).
  [[nodiscard]] absl::Status SetEgressAddresses(absl::Span<const EgressAddress> addrs);
  absl::StatusOr<std::vector<EgressAddress>> ListEgressAddresses() const;

  // --- statistics and state (read-only) ---
  absl::StatusOr<ReasonCounters> ReadReasonCounters() const;
  absl::StatusOr<std::vector<EgressUsage>> ReadEgressUsage() const;
  absl::StatusOr<std::optional<rp_nat_val>> LookupNat(const rp_nat_key& key) const;
  absl::StatusOr<std::optional<rp_rnat_val>> LookupReverseNat(const rp_rnat_key& key) const;

  // A flow map pinned with another size than config.max_flows (the operator
  // changed snat_bpf_max_flows) is not adopted: Create() makes a new map of
  // the configured size and copies the pinned one's flows into it, while the
  // predecessor's programs still run on the old one. Call this once the
  // programs of this object are attached everywhere: it copies what the old
  // map gained meanwhile (entries the new one has win) and moves the pin
  // over. Until then the old pin stays, so a crash in between leaves a
  // successor the old map to migrate from again. No-op when nothing is
  // pending. A flow whose first packet arrives between the two copies can
  // get a second translation (the window is the attach). Shrinking keeps
  // whatever the new map's LRU keeps.
  [[nodiscard]] absl::Status FinishFlowMapMigration();
  bool flow_map_migration_pending() const { return !migrating_.empty(); }

  // Removes the pins (uninstall). The maps live on while this object or an
  // attached program holds them.
  [[nodiscard]] absl::Status UnpinMaps();

 private:
  SnatProgram(SnatProgramOptions options, BpfSkeleton<snat> skel, std::vector<std::string> reused_maps);

  bpf_map* PodsMap() const;
  bpf_map* ExclMap() const;
  bpf_map* EgressAddrMap() const;
  bpf_map* CfgMap() const;
  bpf_map* ExclBankMap() const;
  absl::StatusOr<rp_snat_cfg> ReadCfg() const;
  bpf_map* NatMap() const;
  bpf_map* ReverseNatMap() const;
  bpf_map* ReasonMap() const;
  bpf_map* EgressStatsMap() const;

  SnatProgramOptions options_;
  BpfSkeleton<snat> skel_;
  std::vector<std::string> reused_maps_;
  // Flow maps whose pin still names the predecessor's map: (name, pin path).
  std::vector<std::pair<std::string, std::string>> migrating_;
};

}  // namespace ruleplane::kernel::bpf
