// BpfSnatBackend: pod egress SNAT by the tc programs of bpf/snat.bpf.c.
//
// Plans only: the BPF dataplane (interfaces to hook, egress address slots,
// exclusions, port range, pin dir) as a render::BpfSnatPlan that the engine
// hands to its DataplanePort, which loads, attaches and fills the maps.
// Nothing in the nftables table: pod addresses still live in pod-ipv4 (the
// engine mirrors that set into the BPF map ruleplane_pods after every
// commit), and the tc programs see pod traffic after nftables' postrouting.
// Failover happens in the datapath (RP_FAILOVER), so no steering elements.
#pragma once

#include "agent/backend/snat_backend.h"

namespace ruleplane::backend {

class BpfSnatBackend : public SnatBackend {
 public:
  explicit BpfSnatBackend(core::SnatSettings settings) : settings_(std::move(settings)) {}

  core::SnatMode mode() const override { return core::SnatMode::kBpf; }
  void PlanNft(render::BaseRuleset&) const override {}
  render::BpfSnatPlan PlanBpf() const override;
  std::vector<render::SetElement> PlanSteering(const std::vector<SnatTupleUsage>&) const override { return {}; }
  std::string Describe() const override { return core::DescribeSnat(settings_); }

 private:
  core::SnatSettings settings_;
};

// Mode off: no objects, and the BPF dataplane must be gone.
class OffSnatBackend : public SnatBackend {
 public:
  core::SnatMode mode() const override { return core::SnatMode::kOff; }
  void PlanNft(render::BaseRuleset&) const override {}
  render::BpfSnatPlan PlanBpf() const override { return {}; }
  std::vector<render::SetElement> PlanSteering(const std::vector<SnatTupleUsage>&) const override { return {}; }
  std::string Describe() const override { return "mode=off"; }
};

}  // namespace ruleplane::backend
