#include "agent/config/snat_config.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ruleplane::config {
namespace {

absl::Status Bad(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

}  // namespace

std::vector<std::string> SnatConfigWarnings(const v1::AgentConfig& cfg, const core::SnatSettings& s) {
  std::vector<std::string> out;
  if (std::string note = core::KeepPortNote(s); !note.empty()) out.push_back(std::move(note));
  const bool on = s.mode != core::SnatMode::kOff || s.waiting_mode != core::SnatMode::kOff;
  if (on && cfg.snat_egress_ips().empty() && s.egress_interfaces.size() > 1) {
    out.push_back(absl::StrCat("snat_egress_ips is not set, so flows leaving every egress interface (",
                               absl::StrJoin(s.egress_interfaces, ","), ") are translated to the primary address of ",
                               s.egress_interfaces.front(),
                               "; replies to flows leaving the others may not come back. Set snat_egress_ips to "
                               "addresses every egress path accepts, or list one interface"));
  }
  return out;
}

absl::StatusOr<core::SnatSettings> SnatSettingsFromConfig(const v1::AgentConfig& cfg,
                                                          const InterfaceAddressLookup& lookup) {
  core::SnatSettings s;
  absl::StatusOr<core::SnatMode> mode = core::ParseSnatMode(cfg.snat_mode());
  if (!mode.ok()) return Bad("snat_mode", mode.status().message());
  s.mode = *mode;
  for (const std::string& ifname : cfg.snat_egress_interfaces()) s.egress_interfaces.push_back(ifname);
  for (const std::string& text : cfg.snat_egress_ips()) {
    absl::StatusOr<core::IpAddress> ip = core::IpAddress::Parse(text);
    if (!ip.ok()) return Bad("snat_egress_ips", ip.status().message());
    s.egress_ipv4.push_back(*ip);
  }
  for (const std::string& text : cfg.snat_egress_ipv6_ips()) {
    absl::StatusOr<core::IpAddress> ip = core::IpAddress::Parse(text);
    if (!ip.ok()) return Bad("snat_egress_ipv6_ips", ip.status().message());
    s.egress_ipv6.push_back(*ip);
  }
  for (const std::string& text : cfg.snat_exclude()) {
    absl::StatusOr<core::IpPrefix> p = core::IpPrefix::Parse(text);
    if (!p.ok()) return Bad("snat_exclude", p.status().message());
    (p->is_v4() ? s.exclude_ipv4 : s.exclude_ipv6).push_back(*p);
  }
  if (!cfg.snat_port_range().empty()) {
    absl::StatusOr<core::PortRange> r = core::PortRange::Parse(cfg.snat_port_range());
    if (!r.ok()) return Bad("snat_port_range", r.status().message());
    s.ports = *r;
  }
  if (cfg.has_snat_fully_random()) s.fully_random = cfg.snat_fully_random();
  if (cfg.has_snat_ipv6()) s.ipv6 = cfg.snat_ipv6();
  if (cfg.has_bpf_pin_dir()) s.bpf_pin_dir = cfg.bpf_pin_dir();
  if (cfg.has_snat_bpf_max_retries()) s.bpf_max_retries = cfg.snat_bpf_max_retries();
  if (cfg.has_snat_bpf_max_flows()) s.bpf_max_flows = cfg.snat_bpf_max_flows();
  if (cfg.has_snat_bpf_attach()) {
    absl::StatusOr<core::BpfAttach> attach = core::ParseBpfAttach(cfg.snat_bpf_attach());
    if (!attach.ok()) return Bad("snat_bpf_attach", attach.status().message());
    s.bpf_attach = *attach;
  }
  if (cfg.has_snat_failover_headroom_percent()) s.failover_headroom_percent = cfg.snat_failover_headroom_percent();
  if (cfg.has_snat_stats_interval_ms() &&
      (cfg.snat_stats_interval_ms() < 100 || cfg.snat_stats_interval_ms() > 60000)) {
    return Bad("snat_stats_interval_ms", absl::StrCat(cfg.snat_stats_interval_ms(), " must be in 100..60000"));
  }
  if (cfg.has_snat_stats_top_k() && (cfg.snat_stats_top_k() == 0 || cfg.snat_stats_top_k() > 1000)) {
    return Bad("snat_stats_top_k", absl::StrCat(cfg.snat_stats_top_k(), " must be in 1..1000"));
  }

  // Defaults from the egress interface, only where SNAT is on. One that the
  // interface cannot give yet (it does not exist yet, or has no address
  // yet: DHCP, SLAAC, a bond still forming at boot) does not fail the start:
  // that part waits, says why, and the agent follows the interface
  // (agent/txn/egress_watch.h).
  std::string waiting_v4, waiting_v6;
  if (s.mode != core::SnatMode::kOff && !s.egress_interfaces.empty()) {
    const std::string& first = s.egress_interfaces.front();
    auto missing = [&](const absl::StatusOr<std::vector<core::IpAddress>>& addrs, const char* what) {
      return addrs.ok() ? absl::StrCat("interface ", first, " has no ", what, " address")
                        : std::string(addrs.status().message());
    };
    if (s.egress_ipv4.empty()) {
      absl::StatusOr<std::vector<core::IpAddress>> addrs = lookup(first, AF_INET);
      if (addrs.ok() && !addrs->empty()) {
        s.egress_ipv4.push_back(addrs->front());
      } else {
        waiting_v4 = missing(addrs, "IPv4");
      }
    }
    if (s.ipv6 && s.egress_ipv6.empty()) {
      absl::StatusOr<std::vector<core::IpAddress>> addrs = lookup(first, AF_INET6);
      if (addrs.ok() && !addrs->empty()) {
        s.egress_ipv6.push_back(addrs->front());
      } else {
        waiting_v6 = missing(addrs, "global IPv6");
      }
    }
  }
  // Everything else is checked as if the missing addresses were there.
  core::SnatSettings check = s;
  if (!waiting_v4.empty()) check.egress_ipv4 = {*core::IpAddress::Parse("192.0.2.1")};
  if (!waiting_v6.empty()) check.egress_ipv6 = {*core::IpAddress::Parse("2001:db8::1")};
  if (absl::Status v = core::ValidateSnatSettings(check); !v.ok()) return v;
  if (!waiting_v6.empty()) {
    s.ipv6 = false;
    s.waiting_ipv6 = true;
    s.egress_waiting = absl::StrCat("snat_ipv6 waits: ", waiting_v6);
  }
  if (!waiting_v4.empty()) {
    s.waiting_mode = s.mode;
    s.mode = core::SnatMode::kOff;
    s.egress_waiting = absl::StrCat("snat_mode ", core::SnatModeName(s.waiting_mode), " waits: ", waiting_v4,
                                    s.egress_waiting.empty() ? "" : "; ", s.egress_waiting);
  }
  return s;
}

}  // namespace ruleplane::config
