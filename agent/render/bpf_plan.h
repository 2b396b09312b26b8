// BpfSnatPlan: what the tc eBPF SNAT dataplane should look like, as values.
//
// Produced by pure code (agent/backend, BpfSnatBackend::PlanBpf) and executed
// by the engine through a txn::DataplanePort (the real one is
// kernel::bpf::BpfSnatPort). Pod addresses are not part of it: they come
// from the engine's element index and change per pod, the plan changes only
// with the configuration. Values only (no libbpf), so the kernel layer stays
// a mechanical translation and the text form can be golden-tested.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "agent/core/snat.h"

namespace ruleplane::render {

using Ipv4Bytes = std::array<uint8_t, 4>;  // network byte order

struct BpfPrefix4 {
  Ipv4Bytes addr{};
  uint8_t len = 32;
  friend bool operator==(const BpfPrefix4&, const BpfPrefix4&) = default;
};

struct BpfSnatPlan {
  // false: nothing of the BPF dataplane may exist (no tc filters, no clsact
  // qdisc we created, no pins). Every other field is then ignored.
  bool enabled = false;
  std::string pin_dir;
  std::vector<std::string> interfaces;   // tc hooks, in order
  std::vector<Ipv4Bytes> egress;         // ordered pool (slot order)
  std::vector<BpfPrefix4> exclusions;    // destinations keeping the pod source
  uint16_t port_min = 0;                 // load-time config (rodata)
  uint16_t port_max = 0;
  uint32_t max_retries = 0;
  uint32_t max_flows = 0;
  bool fully_random = true;              // false: a flow first tries its own port
  core::BpfAttach attach = core::BpfAttach::kAuto;  // tc hook kind

  friend bool operator==(const BpfSnatPlan&, const BpfSnatPlan&) = default;
};

// Canonical text, one line per item; used by goldens and diagnostics.
std::string BpfPlanToText(const BpfSnatPlan& plan);

}  // namespace ruleplane::render
