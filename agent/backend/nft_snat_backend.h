// NftSnatBackend: pod egress SNAT as rules in the agent's own table.
//
// Objects (all in `inet <table>`, all named here; see agent/backend/README.md
// for why the failover works the way it does):
//
//   chain nat-postrouting (nat, postrouting, 105; from render::RenderBase)
//     meta nfproto ipv4 oifname @snat-egress-ifs ip saddr @pod-ipv4
//       ip daddr != @snat-exclude-v4 jump snat-v4
//   chain snat-v4
//     ip daddr . meta l4proto . th dport @snat-full-v4 counter drop
//     counter snat ip to ip daddr . meta l4proto . th dport map @snat-steer-v4 :PORTS [fully-random]
//     counter snat ip to <first egress address> :PORTS [fully-random]
//   set snat-egress-ifs   ifname                   egress interfaces (config)
//   set snat-exclude-v4   ipv4_addr, interval      destinations keeping the pod source (config)
//   map snat-steer-v4     daddr . proto . dport : egress address   (dynamic: failover)
//   set snat-full-v4      daddr . proto . dport    (dynamic: every address exhausted)
//   + the same for IPv6 (no failover) when settings.ipv6.
//
// Pod ADD/DEL only changes pod-ipv4/pod-ipv6 elements; configuration changes
// only touch elements of the config sets, and the rules change only when the
// first egress address, the port range or randomisation change.
#pragma once

#include "agent/backend/snat_backend.h"

namespace ruleplane::backend {

inline constexpr char kChainSnatV4[] = "snat-v4";
inline constexpr char kChainSnatV6[] = "snat-v6";
inline constexpr char kSetSnatEgressIfs[] = "snat-egress-ifs";
inline constexpr char kSetSnatExcludeV4[] = "snat-exclude-v4";
inline constexpr char kSetSnatExcludeV6[] = "snat-exclude-v6";
inline constexpr char kMapSnatSteerV4[] = "snat-steer-v4";
inline constexpr char kSetSnatFullV4[] = "snat-full-v4";

// Rule tag names (render::MakeRule adds "ruleplane:" and a hash). The SNAT
// monitor reads the counters of these rules back as statistics.
inline constexpr char kRuleSnatJumpV4[] = "snat-v4";
inline constexpr char kRuleSnatJumpV6[] = "snat-v6";
inline constexpr char kRuleSnatExhaustedV4[] = "snat-exhausted-v4";
inline constexpr char kRuleSnatFailoverV4[] = "snat-failover-v4";
inline constexpr char kRuleSnatPrimaryV4[] = "snat-primary-v4";
inline constexpr char kRuleSnatPrimaryV6[] = "snat-primary-v6";

class NftSnatBackend : public SnatBackend {
 public:
  explicit NftSnatBackend(core::SnatSettings settings) : settings_(std::move(settings)) {}

  core::SnatMode mode() const override { return core::SnatMode::kNftables; }
  void PlanNft(render::BaseRuleset& base) const override;
  render::BpfSnatPlan PlanBpf() const override { return {}; }
  std::vector<render::SetElement> PlanSteering(const std::vector<SnatTupleUsage>& usage) const override;
  std::string Describe() const override { return core::DescribeSnat(settings_); }

  // Translations one (egress address, destination) tuple can hold before an
  // address counts as full for it (port range minus the headroom).
  uint32_t FailoverThreshold() const;

 private:
  core::SnatSettings settings_;
};

}  // namespace ruleplane::backend
