// DataplanePort: the engine's door to a dataplane that is not nftables (the
// tc eBPF SNAT programs and their maps).
//
// The engine's writer thread is the only caller (STYLE.md section 1). It
// calls Converge() whenever the plan may have changed (start, Reconfigure)
// or the dataplane may have drifted (after a failed update, on resync), and
// UpdatePods() after every nftables commit that changed the pod-ipv4 set,
// with the committed delta. The real implementation is
// kernel::bpf::BpfSnatPort; test/fakes has a recording fake.
//
// A failure never undoes the nftables commit that preceded it (the pod is
// in the kernel's table and in the journal): the engine logs it, counts it
// in ruleplane_dataplane_errors_total and converges again later.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "agent/render/bpf_plan.h"

namespace ruleplane::txn {

class DataplanePort {
 public:
  virtual ~DataplanePort() = default;

  // Makes the dataplane equal `plan` with exactly `pods` as translated
  // sources. With plan.enabled == false it must remove everything it (or a
  // previous agent) created: filters or tcx links, a clsact qdisc it created, pins.
  // Idempotent.
  [[nodiscard]] virtual absl::Status Converge(const render::BpfSnatPlan& plan,
                                              const std::vector<render::Ipv4Bytes>& pods) = 0;

  // Pod address delta after a committed batch. Only called while the last
  // Converge() succeeded with an enabled plan.
  [[nodiscard]] virtual absl::Status UpdatePods(const std::vector<render::Ipv4Bytes>& added,
                                                const std::vector<render::Ipv4Bytes>& removed) = 0;

  // Agent shutdown: forget the kernel objects without removing them, so
  // translation keeps running while no agent is there (restart safety).
  virtual void Release() = 0;

  // "bpf: 2 hooks (eth0, eth1), 12 pods" or "off"; for logs and status.
  virtual std::string Describe() const = 0;
};

}  // namespace ruleplane::txn
