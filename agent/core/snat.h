// SNAT settings of the node: which pod traffic leaves with which source
// address, and through which mechanism. Pure values (no I/O); the agent's
// main resolves defaults that need the kernel (the egress interface's
// address) before handing them to the engine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/core/types.h"

namespace ruleplane::core {

// How pod egress is translated. Public contract (--snat-mode).
enum class SnatMode : uint8_t {
  kOff = 0,       // no SNAT by the agent
  kNftables = 1,  // rules in the agent's nftables table (conntrack NAT)
  kBpf = 2,       // tc eBPF programs on the egress interface(s), own NAT state
};
absl::string_view SnatModeName(SnatMode mode);
// "off", "nftables" (alias "nft"), "bpf"; InvalidArgument otherwise.
absl::StatusOr<SnatMode> ParseSnatMode(absl::string_view text);

// How the bpf backend hooks tc (snat_bpf_attach).
enum class BpfAttach : uint8_t {
  kAuto = 0,    // tcx where the kernel has it (Linux >= 6.6), else clsact
  kTcx = 1,     // tcx links; refused on older kernels
  kClsact = 2,  // cls_bpf filters in a clsact qdisc
};
absl::string_view BpfAttachName(BpfAttach attach);
// "auto" (also empty), "tcx", "clsact"; InvalidArgument otherwise.
absl::StatusOr<BpfAttach> ParseBpfAttach(absl::string_view text);

// An IPv4 or IPv6 prefix; host bits must be zero.
struct IpPrefix {
  IpAddress addr;
  uint8_t len = 0;

  // "10.0.0.0/8", "fd00::/8" or a bare address (/32, /128). InvalidArgument
  // on host bits set, so a typo cannot silently widen an exclusion.
  static absl::StatusOr<IpPrefix> Parse(absl::string_view text);
  bool is_v4() const { return addr.is_v4(); }
  uint8_t max_len() const { return is_v4() ? 32 : 128; }
  // First address after the prefix (network byte order), or nullopt-like
  // empty vector when the prefix reaches the end of the address space.
  std::vector<uint8_t> EndExclusive() const;
  bool Contains(const IpAddress& ip) const;
  std::string ToString() const;

  friend auto operator<=>(const IpPrefix&, const IpPrefix&) = default;
  friend bool operator==(const IpPrefix&, const IpPrefix&) = default;
};

// Inclusive source port range (also ICMP echo identifiers). {0, 0} means
// "backend default": the kernel's choice for nftables (1024-65535 for
// unprivileged source ports), 61000-65535 for bpf.
struct PortRange {
  uint16_t lo = 0;
  uint16_t hi = 0;
  bool unset() const { return lo == 0 && hi == 0; }
  uint32_t size() const { return unset() ? 0 : uint32_t{hi} - lo + 1; }
  // "LO-HI" or "PORT"; InvalidArgument otherwise.
  static absl::StatusOr<PortRange> Parse(absl::string_view text);
  std::string ToString() const;
  friend bool operator==(const PortRange&, const PortRange&) = default;
};

inline constexpr PortRange kBpfDefaultPorts{61000, 65535};
inline constexpr PortRange kNftDefaultPorts{1024, 65535};
inline constexpr char kDefaultBpfPinDir[] = "/sys/fs/bpf/ruleplane";

struct SnatSettings {
  SnatMode mode = SnatMode::kOff;
  // Interfaces pod egress leaves through (oifname for nftables, tc hooks
  // for bpf). At least one when mode != off.
  std::vector<std::string> egress_interfaces;
  // Ordered pool of IPv4 egress addresses: new flows use the first one that
  // has a free port for their destination; the rest is failover.
  std::vector<IpAddress> egress_ipv4;
  // Destinations that keep the pod source address (cluster / VPC CIDRs).
  std::vector<IpPrefix> exclude_ipv4;
  // IPv6 pods: translated only when enabled (nftables backend only).
  bool ipv6 = false;
  std::vector<IpAddress> egress_ipv6;
  std::vector<IpPrefix> exclude_ipv6;
  PortRange ports;
  // Random source port per flow (NF_NAT_RANGE_PROTO_RANDOM_FULLY); the bpf
  // backend always picks a random start.
  bool fully_random = true;
  // bpf: where maps are pinned (survive agent restarts); ours alone.
  std::string bpf_pin_dir = kDefaultBpfPinDir;
  // bpf: ports probed per egress address before failing over (1..32).
  uint32_t bpf_max_retries = 32;
  // bpf: size of each NAT map (RP_SNAT_MAX_FLOWS_MIN..RP_SNAT_MAX_FLOWS_LIMIT
  // in bpf/include/ruleplane/snat_maps.h).
  uint32_t bpf_max_flows = 65536;
  // bpf: tcx links or clsact filters.
  BpfAttach bpf_attach = BpfAttach::kAuto;
  // nftables failover: an egress address counts as full for a destination
  // (address, port, protocol) once this percentage of the port range is in
  // use there; new flows then go to the next address (see
  // agent/backend/README.md). 0 = only when completely full.
  uint32_t failover_headroom_percent = 10;

  // Defaults the egress interface cannot give yet (no such interface, no
  // IPv4 or global IPv6 address) or no longer gives: what is missing, for
  // logs and diagnostics; empty when everything runs as configured.
  //  - IPv4 default missing at start: `mode` is kOff (nothing translated)
  //    and `waiting_mode` holds the mode asked for;
  //  - IPv6 default missing: `ipv6` is false and `waiting_ipv6` true;
  //  - a default the agent already runs with disappeared: the address is
  //    kept (FollowEgressAddresses) and this says so.
  std::string egress_waiting;
  SnatMode waiting_mode = SnatMode::kOff;
  bool waiting_ipv6 = false;
  // Effective port range for `mode` (fills the default).
  PortRange EffectivePorts() const;
  friend bool operator==(const SnatSettings&, const SnatSettings&) = default;
};

// Checks everything that does not need the kernel; the message starts with
// the config field name ("snat_egress_ips: ...").
absl::Status ValidateSnatSettings(const SnatSettings& s);

// bpf mode: the ports of the SNAT range that the node's own sockets may
// also be given as ephemeral source ports (connect() or bind() to port 0):
// `snat` ∩ net.ipv4.ip_local_port_range minus
// net.ipv4.ip_local_reserved_ports. The programs skip a port a node socket
// already holds, but the node's connect() does not see the translated
// flows: a node connection from an egress address can be given a port a
// translated flow holds towards the same remote, and the replies of one
// reach the other. conntrack (nftables mode) sees both.
struct EphemeralPortOverlap {
  uint32_t ports = 0;   // how many ports of `snat` the node may also pick
  PortRange node;       // ip_local_port_range as read
  PortRange first;      // the lowest contiguous run of shared ports (unset when none)
};
// `local_port_range`: the text of /proc/sys/net/ipv4/ip_local_port_range
// ("32768\t60999\n"); `reserved_ports`: that of ip_local_reserved_ports
// ("\n" or "8000-8100,9000\n"). InvalidArgument names the text it cannot read.
absl::StatusOr<EphemeralPortOverlap> SharedEphemeralPorts(PortRange snat, absl::string_view local_port_range,
                                                          absl::string_view reserved_ports);

// What to run after the egress interfaces changed (or on a reload):
// `resolved` (the config with the interfaces' defaults as they are now)
// against `running`. A default address that vanished without a successor
// while the same mode runs is kept (flows through it work again when it
// comes back, and rules do not churn on a flap), with `egress_waiting`
// saying so. Everything else comes from `resolved`.
SnatSettings FollowEgressAddresses(const SnatSettings& running, SnatSettings resolved);

// bpf mode with snat_fully_random false keeps a pod's source port only when
// it lies in the SNAT range; pods pick theirs from their own
// net.ipv4.ip_local_port_range, by default 32768-60999. A note saying so
// when the range misses that default entirely (the setting then changes
// nothing); empty otherwise.
std::string KeepPortNote(const SnatSettings& s);

// One line for logs and diagnostics:
// "mode=nftables ifaces=eth0 egress=192.0.2.1,192.0.2.2 exclude=10.0.0.0/8 ports=61000-65535".
std::string DescribeSnat(const SnatSettings& s);

}  // namespace ruleplane::core
