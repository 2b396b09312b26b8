#include "agent/core/snat.h"

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace ruleplane::core {
namespace {

// Both backends share one limit so that a mode switch never changes what a
// valid configuration is (bpf: RP_SNAT_MAX_EGRESS_ADDRS).
constexpr size_t kMaxEgressAddresses = 8;
constexpr size_t kMaxExclusions = 1024;  // bpf: RP_SNAT_MAX_EXCLUSIONS
constexpr uint32_t kMinBpfFlows = 1024;     // bpf: RP_SNAT_MAX_FLOWS_MIN
constexpr uint32_t kMaxBpfFlows = 1u << 24;  // bpf: RP_SNAT_MAX_FLOWS_LIMIT
constexpr size_t kIfNameMax = 15;        // IFNAMSIZ - 1

}  // namespace

absl::string_view SnatModeName(SnatMode mode) {
  switch (mode) {
    case SnatMode::kOff: return "off";
    case SnatMode::kNftables: return "nftables";
    case SnatMode::kBpf: return "bpf";
  }
  return "?";
}

absl::StatusOr<SnatMode> ParseSnatMode(absl::string_view text) {
  if (text == "off" || text.empty()) return SnatMode::kOff;
  if (text == "nftables" || text == "nft") return SnatMode::kNftables;
  if (text == "bpf" || text == "ebpf") return SnatMode::kBpf;
  return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not one of nftables, bpf, off"));
}

absl::string_view BpfAttachName(BpfAttach attach) {
  switch (attach) {
    case BpfAttach::kAuto: return "auto";
    case BpfAttach::kTcx: return "tcx";
    case BpfAttach::kClsact: return "clsact";
  }
  return "?";
}

absl::StatusOr<BpfAttach> ParseBpfAttach(absl::string_view text) {
  if (text == "auto" || text.empty()) return BpfAttach::kAuto;
  if (text == "tcx") return BpfAttach::kTcx;
  if (text == "clsact" || text == "tc") return BpfAttach::kClsact;
  return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not one of auto, tcx, clsact"));
}

absl::StatusOr<IpPrefix> IpPrefix::Parse(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, absl::MaxSplits('/', 1));
  IpPrefix p;
  absl::StatusOr<IpAddress> addr = IpAddress::Parse(parts[0]);
  if (!addr.ok()) return absl::InvalidArgumentError(absl::StrCat("not a CIDR: \"", text, "\""));
  p.addr = *addr;
  int len = p.max_len();
  if (parts.size() == 2 && (!absl::SimpleAtoi(parts[1], &len) || len < 0 || len > p.max_len())) {
    return absl::InvalidArgumentError(absl::StrCat("bad prefix length in \"", text, "\""));
  }
  p.len = static_cast<uint8_t>(len);
  std::vector<uint8_t> b = p.addr.bytes();
  for (size_t bit = p.len; bit < b.size() * 8; ++bit) {
    if (b[bit / 8] & (0x80 >> (bit % 8))) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", text, "\" has host bits set (did you mean a /", len, " network address?)"));
    }
  }
  return p;
}

std::vector<uint8_t> IpPrefix::EndExclusive() const {
  std::vector<uint8_t> b = addr.bytes();
  if (len == 0) return {};
  // Add 1 at bit position len-1 (counting from the most significant bit).
  int bit = len - 1;
  int byte = bit / 8;
  int carry = 0x80 >> (bit % 8);
  for (int i = byte; i >= 0; --i) {
    int v = b[i] + carry;
    b[i] = static_cast<uint8_t>(v & 0xff);
    carry = v >> 8;
    if (!carry) break;
  }
  if (carry) return {};  // wrapped past the last address
  return b;
}

bool IpPrefix::Contains(const IpAddress& ip) const {
  if (ip.is_v4() != is_v4()) return false;
  std::vector<uint8_t> a = addr.bytes(), b = ip.bytes();
  for (size_t bit = 0; bit < len; ++bit) {
    const uint8_t m = 0x80 >> (bit % 8);
    if ((a[bit / 8] & m) != (b[bit / 8] & m)) return false;
  }
  return true;
}

std::string IpPrefix::ToString() const { return absl::StrCat(addr.ToString(), "/", len); }

absl::StatusOr<PortRange> PortRange::Parse(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, absl::MaxSplits('-', 1));
  uint32_t lo = 0, hi = 0;
  if (!absl::SimpleAtoi(parts[0], &lo) || (parts.size() == 2 && !absl::SimpleAtoi(parts[1], &hi))) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not LO-HI"));
  }
  if (parts.size() == 1) hi = lo;
  if (lo == 0 || lo > hi || hi > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" must satisfy 1 <= LO <= HI <= 65535"));
  }
  return PortRange{static_cast<uint16_t>(lo), static_cast<uint16_t>(hi)};
}

std::string PortRange::ToString() const { return unset() ? "default" : absl::StrCat(lo, "-", hi); }

absl::StatusOr<EphemeralPortOverlap> SharedEphemeralPorts(PortRange snat, absl::string_view local_port_range,
                                                          absl::string_view reserved_ports) {
  EphemeralPortOverlap out;
  std::vector<absl::string_view> lohi =
      absl::StrSplit(absl::StripAsciiWhitespace(local_port_range), absl::ByAnyChar(" \t"), absl::SkipEmpty());
  uint32_t lo = 0, hi = 0;
  if (lohi.size() != 2 || !absl::SimpleAtoi(lohi[0], &lo) || !absl::SimpleAtoi(lohi[1], &hi) || lo == 0 ||
      lo > hi || hi > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("ip_local_port_range: \"", absl::CEscape(local_port_range), "\" is not \"LO HI\""));
  }
  out.node = PortRange{static_cast<uint16_t>(lo), static_cast<uint16_t>(hi)};
  // Ports the node may pick: its range minus the reserved ones.
  std::vector<bool> node_may_pick(65536, false);
  for (uint32_t p = lo; p <= hi; ++p) node_may_pick[p] = true;
  for (absl::string_view item :
       absl::StrSplit(absl::StripAsciiWhitespace(reserved_ports), ',', absl::SkipWhitespace())) {
    absl::StatusOr<PortRange> r = PortRange::Parse(absl::StripAsciiWhitespace(item));
    if (!r.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("ip_local_reserved_ports: \"", absl::CEscape(reserved_ports), "\": ", r.status().message()));
    }
    for (uint32_t p = r->lo; p <= r->hi; ++p) node_may_pick[p] = false;
  }
  if (snat.unset()) return out;
  for (uint32_t p = snat.lo; p <= snat.hi; ++p) {
    if (!node_may_pick[p]) continue;
    ++out.ports;
    if (out.first.unset()) {
      out.first = PortRange{static_cast<uint16_t>(p), static_cast<uint16_t>(p)};
    } else if (out.first.hi + 1u == p && out.ports == out.first.size() + 1) {
      out.first.hi = static_cast<uint16_t>(p);
    }
  }
  return out;
}

PortRange SnatSettings::EffectivePorts() const {
  if (!ports.unset()) return ports;
  return mode == SnatMode::kBpf ? kBpfDefaultPorts : kNftDefaultPorts;
}

absl::Status ValidateSnatSettings(const SnatSettings& s) {
  auto bad = [](absl::string_view field, auto&&... why) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", why...));
  };
  std::set<std::string> seen_if;
  for (const std::string& ifname : s.egress_interfaces) {
    if (ifname.empty() || ifname.size() > kIfNameMax || ifname.find_first_of("/ \t:") != std::string::npos ||
        ifname == "." || ifname == "..") {
      return bad("snat_egress_interfaces", "\"", ifname, "\" is not a valid interface name");
    }
    if (!seen_if.insert(ifname).second) return bad("snat_egress_interfaces", "\"", ifname, "\" is listed twice");
  }
  std::set<IpAddress> seen_ip;
  for (const IpAddress& ip : s.egress_ipv4) {
    if (!ip.is_v4() || ip.IsUnspecified()) {
      return bad("snat_egress_ips", ip.ToString(), " is not a usable IPv4 address");
    }
    if (!seen_ip.insert(ip).second) return bad("snat_egress_ips", ip.ToString(), " is listed twice");
  }
  if (s.egress_ipv4.size() > kMaxEgressAddresses) {
    return bad("snat_egress_ips", s.egress_ipv4.size(), " addresses given, at most ", kMaxEgressAddresses);
  }
  for (const IpAddress& ip : s.egress_ipv6) {
    if (ip.is_v4() || ip.IsUnspecified()) {
      return bad("snat_egress_ipv6_ips", ip.ToString(), " is not a usable IPv6 address");
    }
    if (!seen_ip.insert(ip).second) return bad("snat_egress_ipv6_ips", ip.ToString(), " is listed twice");
  }
  if (s.egress_ipv6.size() > kMaxEgressAddresses) {
    return bad("snat_egress_ipv6_ips", s.egress_ipv6.size(), " addresses given, at most ", kMaxEgressAddresses);
  }
  for (const IpPrefix& p : s.exclude_ipv4) {
    if (!p.is_v4()) return bad("snat_exclude", p.ToString(), " is IPv6 but was filed as IPv4");
  }
  for (const IpPrefix& p : s.exclude_ipv6) {
    if (p.is_v4()) return bad("snat_exclude", p.ToString(), " is IPv4 but was filed as IPv6");
  }
  if (s.exclude_ipv4.size() > kMaxExclusions || s.exclude_ipv6.size() > kMaxExclusions) {
    return bad("snat_exclude", "at most ", kMaxExclusions, " prefixes per family");
  }
  if (!s.ports.unset() && (s.ports.lo == 0 || s.ports.lo > s.ports.hi)) {
    return bad("snat_port_range", s.ports.ToString(), " must satisfy 1 <= LO <= HI <= 65535");
  }
  if (s.bpf_max_retries == 0 || s.bpf_max_retries > 32) {
    return bad("snat_bpf_max_retries", s.bpf_max_retries, " must be in 1..32");
  }
  if (s.bpf_max_flows < kMinBpfFlows || s.bpf_max_flows > kMaxBpfFlows) {
    return bad("snat_bpf_max_flows", s.bpf_max_flows, " must be in ", kMinBpfFlows, "..", kMaxBpfFlows);
  }
  if (s.failover_headroom_percent > 50) {
    return bad("snat_failover_headroom_percent", s.failover_headroom_percent, " must be in 0..50");
  }
  if (s.bpf_pin_dir.empty() || s.bpf_pin_dir[0] != '/') {
    return bad("bpf_pin_dir", "\"", s.bpf_pin_dir, "\" must be an absolute path");
  }
  if (s.mode == SnatMode::kOff) return absl::OkStatus();

  if (s.egress_interfaces.empty()) {
    return bad("snat_egress_interfaces", "snat_mode ", SnatModeName(s.mode), " needs at least one egress interface");
  }
  if (s.egress_ipv4.empty()) {
    return bad("snat_egress_ips", "no IPv4 egress address (and none could be taken from the egress interface)");
  }
  if (s.waiting_mode != SnatMode::kOff) {
    return bad("snat_mode", "internal: waiting for ", SnatModeName(s.waiting_mode), " while ", SnatModeName(s.mode),
               " runs");
  }
  if (s.ipv6 && s.mode == SnatMode::kBpf) {
    return bad("snat_ipv6", "IPv6 SNAT is only implemented by snat_mode nftables");
  }
  if (s.ipv6 && s.egress_ipv6.empty()) {
    return bad("snat_egress_ipv6_ips", "snat_ipv6 is on but no IPv6 egress address is known");
  }
  if (s.mode == SnatMode::kBpf && s.egress_interfaces.size() > 16) {
    return bad("snat_egress_interfaces", "at most 16 interfaces in bpf mode");
  }
  return absl::OkStatus();
}

std::string KeepPortNote(const SnatSettings& s) {
  constexpr PortRange kLinuxEphemeral{32768, 60999};
  if (s.mode != SnatMode::kBpf || s.fully_random) return "";
  const PortRange r = s.EffectivePorts();
  if (r.hi >= kLinuxEphemeral.lo && r.lo <= kLinuxEphemeral.hi) return "";  // some pod ports can be kept
  return absl::StrCat("snat_fully_random false keeps a pod's source port only inside snat_port_range ", r.ToString(),
                      ", which misses the pods' default ephemeral ports ", kLinuxEphemeral.ToString(),
                      ": unless pods move net.ipv4.ip_local_port_range into it, every flow gets a random port");
}

SnatSettings FollowEgressAddresses(const SnatSettings& running, SnatSettings resolved) {
  std::vector<std::string> kept;
  if (resolved.waiting_mode != SnatMode::kOff && resolved.waiting_mode == running.mode &&
      !running.egress_ipv4.empty()) {
    resolved.mode = resolved.waiting_mode;
    resolved.waiting_mode = SnatMode::kOff;
    resolved.egress_ipv4 = running.egress_ipv4;
    kept.push_back(running.egress_ipv4.front().ToString());
  }
  if (resolved.waiting_ipv6 && resolved.mode == running.mode && running.ipv6 && !running.egress_ipv6.empty()) {
    resolved.ipv6 = true;
    resolved.waiting_ipv6 = false;
    resolved.egress_ipv6 = running.egress_ipv6;
    kept.push_back(running.egress_ipv6.front().ToString());
  }
  if (!kept.empty()) {
    absl::StrAppend(&resolved.egress_waiting, "; new flows keep using ", absl::StrJoin(kept, " and "),
                    " until it has one");
  }
  return resolved;
}

std::string DescribeSnat(const SnatSettings& s) {
  auto ips = [](const std::vector<IpAddress>& v) {
    return absl::StrJoin(v, ",", [](std::string* out, const IpAddress& ip) { out->append(ip.ToString()); });
  };
  auto prefixes = [](const std::vector<IpPrefix>& v) {
    return absl::StrJoin(v, ",", [](std::string* out, const IpPrefix& p) { out->append(p.ToString()); });
  };
  std::string out = absl::StrCat("mode=", SnatModeName(s.mode));
  const std::string waiting = s.egress_waiting.empty() ? "" : absl::StrCat(" waiting=\"", s.egress_waiting, "\"");
  if (s.mode == SnatMode::kOff) {
    if (s.waiting_mode != SnatMode::kOff) absl::StrAppend(&out, " (", SnatModeName(s.waiting_mode), " waits)");
    return out + waiting;
  }
  absl::StrAppend(&out, " ifaces=", absl::StrJoin(s.egress_interfaces, ","), " egress=", ips(s.egress_ipv4),
                  " exclude=", prefixes(s.exclude_ipv4), " ports=", s.EffectivePorts().ToString(),
                  " fully_random=", s.fully_random ? "true" : "false");
  if (s.ipv6) absl::StrAppend(&out, " egress6=", ips(s.egress_ipv6), " exclude6=", prefixes(s.exclude_ipv6));
  if (s.mode == SnatMode::kBpf) {
    absl::StrAppend(&out, " pin_dir=", s.bpf_pin_dir, " attach=", BpfAttachName(s.bpf_attach));
  }
  return out + waiting;
}

}  // namespace ruleplane::core
