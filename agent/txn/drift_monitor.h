// DriftMonitor: watches nftables events and asks the engine to re-assert
// its table when another process changed it (e.g. `nft flush ruleset`).
//
// Owns one read-only event socket and one thread (the diagnostics reader
// role in STYLE.md section 6). Never mutates the kernel itself: it only calls
// Engine::RequestResync(), so repair goes through the one writer.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "agent/common/metrics.h"
#include "agent/common/unique_fd.h"
#include "agent/kernel/nft/events.h"
#include "agent/txn/engine.h"

namespace ruleplane::txn {

class DriftMonitor {
 public:
  // `netns_path` empty = the agent's own network namespace.
  static absl::StatusOr<std::unique_ptr<DriftMonitor>> Start(Engine* engine, const std::string& netns_path,
                                                             const std::string& table,
                                                             metrics::Registry* registry);
  ~DriftMonitor();
  DriftMonitor(const DriftMonitor&) = delete;
  DriftMonitor& operator=(const DriftMonitor&) = delete;

  uint64_t changes_seen() const { return changes_seen_.load(); }

 private:
  DriftMonitor(Engine* engine, std::unique_ptr<kernel::nft::NftEventWatcher> watcher,
               metrics::Registry* registry);
  void Run();

  Engine* engine_;
  std::unique_ptr<kernel::nft::NftEventWatcher> watcher_;
  UniqueFd stop_fd_;  // eventfd: wakes Run() for shutdown
  std::thread thread_;
  std::atomic<uint64_t> changes_seen_{0};
  metrics::Counter* foreign_changes_;
};

}  // namespace ruleplane::txn
