// SnatBackend: how pod egress SNAT is realised, as plans (STYLE.md section 1).
//
// Two real implementations, chosen by core::SnatSettings::mode:
//  - NftSnatBackend: rules in the agent's own nftables table, hung off
//    nat-postrouting; conntrack does the translation.
//  - BpfSnatBackend: tc programs on the egress interface(s) with their own
//    NAT state in pinned BPF maps (bpf/snat.bpf.c).
// and OffSnatBackend for mode off.
//
// Backends are pure: they never perform I/O and never log. The engine asks a
// backend for (a) the nftables objects it needs in the base ruleset, (b) the
// BPF dataplane it needs, (c) failover steering elements computed from
// observed usage, and executes those plans through its kernel ports
// (NftPort, DataplanePort). Thread-compatible; immutable after construction.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agent/core/snat.h"
#include "agent/core/types.h"
#include "agent/render/bpf_plan.h"
#include "agent/render/render.h"

namespace ruleplane::backend {

// How many translations one (egress address, remote address, remote port,
// protocol) tuple holds right now, as observed in conntrack (nftables) or in
// the BPF reverse-NAT map (bpf).
struct SnatTupleUsage {
  core::IpAddress egress;
  core::IpAddress remote;
  uint16_t remote_port = 0;  // 0 for ICMP
  uint8_t proto = 0;         // IPPROTO_*
  uint32_t in_use = 0;
};

class SnatBackend {
 public:
  virtual ~SnatBackend() = default;

  virtual core::SnatMode mode() const = 0;

  // Adds this backend's chains, sets, rules and configuration elements to
  // `base`, which RenderBase(layout) produced. Never changes per pod.
  virtual void PlanNft(render::BaseRuleset& base) const = 0;

  // The BPF dataplane this backend needs; `enabled` is false for every
  // backend but bpf, which makes the engine remove what is left of it.
  virtual render::BpfSnatPlan PlanBpf() const = 0;

  // Failover steering: the dynamic elements (render::BaseRuleset::
  // dynamic_sets) that move new flows of a saturated destination to the next
  // egress address, or drop them when every address is full. Only the
  // nftables backend needs them (bpf fails over in the datapath).
  virtual std::vector<render::SetElement> PlanSteering(const std::vector<SnatTupleUsage>& usage) const = 0;

  // One line: mode and settings, for logs and GetStatus.
  virtual std::string Describe() const = 0;
};

// The backend for `settings.mode`. `settings` must have passed
// core::ValidateSnatSettings.
std::unique_ptr<SnatBackend> MakeSnatBackend(const core::SnatSettings& settings);

// render::RenderBase(layout) plus the SNAT backend's nftables objects: the
// complete base ruleset the engine converges.
render::BaseRuleset RenderFullBase(const render::Layout& layout);

}  // namespace ruleplane::backend
