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

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
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

// How the bpf programs run on this kernel, as the loader loaded them.
struct BpfDatapath {
  // "direct": the pair that writes L4 checksums itself (snat_egress/
  // snat_ingress); "helper": the pair that calls bpf_l4_csum_replace for
  // every change (older kernels, or the verifier refused the direct pair).
  std::string l4_checksum;
  // Stamp clock: "jiffies" (bpf_jiffies64 with the kernel's CONFIG_HZ) or
  // "ktime" (the bpf_ktime_get_coarse_ns helper).
  std::string clock;
};

// The loader's word on the programs it loaded, for the statistics thread:
// the kernel names the programs that use a map only to a CAP_SYS_ADMIN
// caller (BPF_PROG_GET_NEXT_ID), which the agent is not. Thread-safe: the
// engine's writer (kernel::bpf::BpfSnatPort) publishes, the SNAT monitor
// reads (GetSnatStats bpf_l4_checksum and bpf_clock, metric
// ruleplane_snat_bpf_datapath_info).
class BpfDatapathBoard {
 public:
  void Publish(uint32_t flow_map_id, BpfDatapath datapath) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    flow_map_id_ = flow_map_id;
    datapath_ = std::move(datapath);
  }
  void Clear() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    datapath_.reset();
  }
  // What was published for flow map `flow_map_id` (the pinned map the
  // statistics read); nullopt for another map (a reload or resize under
  // way, or pins another agent left) or after Clear().
  std::optional<BpfDatapath> For(uint32_t flow_map_id) const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (!datapath_ || flow_map_id_ != flow_map_id) return std::nullopt;
    return datapath_;
  }

 private:
  mutable absl::Mutex mu_;
  uint32_t flow_map_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<BpfDatapath> datapath_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ruleplane::txn
