// SnatMonitor: measures SNAT saturation and drives nftables failover.
//
// Owns one thread (the diagnostics reader role, STYLE.md section 6) that
// every `interval`:
//  - nftables mode: dumps conntrack (ctnetlink, entries with IPS_SRC_NAT)
//    and counts translations per (egress address, remote address, remote
//    port, protocol); asks the backend for failover steering elements and,
//    when they changed, hands them to Engine::SetDynamicElements() (the one
//    writer commits them); reads our rules' counters and conntrack's
//    statistics for failover and drop counts;
//  - bpf mode: reads the pinned maps (reverse NAT entries, reason and
//    per-address counters) read-only;
// then publishes one SnatStats snapshot (GetSnatStats) and the
// ruleplane_snat_* metrics. Never mutates the kernel itself.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/backend/snat_backend.h"
#include "agent/backend/snat_stats.h"
#include "agent/common/metrics.h"
#include "agent/core/snat.h"
#include "agent/txn/dataplane_port.h"
#include "agent/txn/engine.h"

namespace ruleplane::txn {

struct SnatMonitorOptions {
  std::string table = "ruleplane";
  absl::Duration interval = absl::Seconds(1);
  size_t top_k = 10;
  // bpf: how the loaded programs run, as BpfSnatPort publishes it
  // (optional; without it GetSnatStats leaves bpf_l4_checksum/bpf_clock empty).
  std::shared_ptr<const BpfDatapathBoard> bpf_datapath;
  // bpf: where net.ipv4.ip_local_port_range and ip_local_reserved_ports
  // are read (per network namespace: the agent's own).
  std::string ipv4_sysctl_dir = "/proc/sys/net/ipv4";
};

// The pause before the next scan: `interval`, stretched so that scanning
// takes at most 1/kSnatScanDutyDivisor of one CPU (a conntrack dump costs in
// proportion to the table, and a node opening thousands of connections a
// second keeps ~100k TIME_WAIT entries), but never beyond
// max(interval, kSnatScanMaxWait): failover steering must not go stale.
inline constexpr int kSnatScanDutyDivisor = 20;
inline constexpr absl::Duration kSnatScanMaxWait = absl::Seconds(30);
absl::Duration NextSnatScanWait(absl::Duration interval, absl::Duration last_scan);

class SnatMonitor {
 public:
  // Starts the thread; the first scan runs right away.
  static std::unique_ptr<SnatMonitor> Start(Engine* engine, SnatMonitorOptions options, core::SnatSettings settings,
                                            metrics::Registry* registry);
  ~SnatMonitor();
  SnatMonitor(const SnatMonitor&) = delete;
  SnatMonitor& operator=(const SnatMonitor&) = delete;

  // After a successful reload: scan with the new settings right away.
  void SetSettings(core::SnatSettings settings) ABSL_LOCKS_EXCLUDED(mu_);
  // The last snapshot (collected_at = InfinitePast before the first scan).
  backend::SnatStats Latest() const ABSL_LOCKS_EXCLUDED(mu_);
  core::SnatSettings Settings() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t scans() const { return scans_.load(); }

 private:
  SnatMonitor(Engine* engine, SnatMonitorOptions options, core::SnatSettings settings, metrics::Registry* registry);
  void Run();
  backend::SnatStats Collect(const core::SnatSettings& settings);
  void CollectNft(const core::SnatSettings& settings, backend::SnatStats& stats);
  void CollectBpf(const core::SnatSettings& settings, backend::SnatStats& stats);
  // bpf: fills ports_shared_with_node and node_ephemeral_ports from the
  // sysctls; logs a warning when the count changes to a non-zero value.
  void CheckEphemeralPorts(const core::SnatSettings& settings, backend::SnatStats& stats);
  void Publish(const backend::SnatStats& stats);

  Engine* engine_;
  const SnatMonitorOptions options_;
  metrics::Registry* registry_;

  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  core::SnatSettings settings_ ABSL_GUARDED_BY(mu_);
  bool settings_changed_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  backend::SnatStats latest_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> scans_{0};

  // Monitor-thread state.
  std::optional<std::vector<render::SetElement>> applied_steering_;
  // Last kernel counter values, to turn them into monotonic Prometheus
  // counters across kernel-side resets (maps recreated, rules replaced).
  std::map<std::string, uint64_t> last_kernel_;
  // bpf: the last walk of the flow map, by tuple, and the map id and
  // datapath generation it was taken at (kernel::bpf::SnatMapsSnapshot):
  // while both hold, the next collection reuses it instead of walking the
  // map again (a full map stays full: LRU entries only go when replaced).
  // Map ids are unique on the node, so another pin dir or a recreated map
  // never matches.
  struct BpfUsageCache {
    uint32_t flow_map_id = 0;
    uint64_t generation = 0;
    std::vector<backend::SnatTupleUsage> usage;
  };
  std::optional<BpfUsageCache> bpf_usage_;
  // bpf: the shared-port count last logged, so a change is logged once.
  std::optional<uint32_t> logged_shared_ports_;
  std::thread thread_;

  metrics::Counter* scan_errors_;
  metrics::Histogram* scan_seconds_;
  metrics::Counter* steering_changes_;
};

}  // namespace ruleplane::txn
