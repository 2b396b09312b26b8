#include "agent/backend/bpf_snat_backend.h"

#include <algorithm>


namespace ruleplane::backend {
namespace {

render::Ipv4Bytes V4(const core::IpAddress& ip) {
  std::vector<uint8_t> b = ip.bytes();
  return {b[0], b[1], b[2], b[3]};
}

}  // namespace

render::BpfSnatPlan BpfSnatBackend::PlanBpf() const {
  render::BpfSnatPlan plan;
  plan.enabled = true;
  plan.pin_dir = settings_.bpf_pin_dir;
  plan.interfaces = settings_.egress_interfaces;
  for (const core::IpAddress& ip : settings_.egress_ipv4) plan.egress.push_back(V4(ip));
  for (const core::IpPrefix& p : settings_.exclude_ipv4) plan.exclusions.push_back({V4(p.addr), p.len});
  // The LPM trie holds each prefix once; sorted so the plan text is stable.
  std::sort(plan.exclusions.begin(), plan.exclusions.end(), [](const render::BpfPrefix4& a, const render::BpfPrefix4& b) {
    return std::tie(a.addr, a.len) < std::tie(b.addr, b.len);
  });
  plan.exclusions.erase(std::unique(plan.exclusions.begin(), plan.exclusions.end()), plan.exclusions.end());
  const core::PortRange ports = settings_.EffectivePorts();
  plan.port_min = ports.lo;
  plan.port_max = ports.hi;
  plan.max_retries = settings_.bpf_max_retries;
  plan.max_flows = settings_.bpf_max_flows;
  plan.fully_random = settings_.fully_random;
  plan.attach = settings_.bpf_attach;
  return plan;
}

}  // namespace ruleplane::backend
