// BringupRecorder: the timeline of this agent start, phase by phase, with
// timestamps relative to process start and to boot, and the history of the
// previous starts kept in the state dir.
//
// Why: "why did this node take four minutes to become Ready" is answered by
// which phase waited, and whether it was the node's first start since boot
// or a restart. Phases are recorded by main() and by the components that
// own the event (first CNI ADD in the Cni service); waits and failures are
// phases too.
//
// Clock: CLOCK_BOOTTIME (monotonic, counts suspend), so process start
// (/proc/self/stat field 22) and phases share one time base.
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "agent/common/metrics.h"
#include "ruleplane/v1/diagnostics.pb.h"

namespace ruleplane::bringup {

// Phase names (the `phase` label of ruleplane_bringup_phase_seconds).
inline constexpr char kConfigLoaded[] = "config loaded";
inline constexpr char kKernelProbes[] = "kernel probes";
inline constexpr char kCoexistence[] = "coexistence checks";
inline constexpr char kGrpcServing[] = "gRPC serving";
inline constexpr char kCheckpointLoaded[] = "checkpoint loaded";
inline constexpr char kKernelAdopted[] = "kernel state adopted";
inline constexpr char kBaseCommitted[] = "base ruleset committed";
inline constexpr char kBpfAttached[] = "BPF attached";
inline constexpr char kReady[] = "ready";
inline constexpr char kCniConfigInstalled[] = "CNI config installed";
inline constexpr char kWaitingForApiServer[] = "waiting for API server";
inline constexpr char kApiServerReachable[] = "API server reachable";
inline constexpr char kFirstCniAdd[] = "first CNI ADD served";
// SNAT started without its egress address (the interface had none yet);
// ends when the address is taken.
inline constexpr char kWaitingForEgressAddress[] = "waiting for egress address";

enum class PhaseStatus { kOk, kFailed, kSkipped };

// Seconds since boot on CLOCK_BOOTTIME.
double BootSecondsNow();

class BringupRecorder {
 public:
  struct Options {
    std::string version;
    std::string proc_root = "/proc";
    metrics::Registry* registry = nullptr;  // may be null (tests)
  };
  explicit BringupRecorder(Options options);

  // Where the history lives (<state_dir>/bringup-history.json) and how many
  // starts it keeps. Loads the previous starts; a damaged file is reported
  // in the returned status and replaced on the next Save().
  absl::Status AttachStateDir(const std::string& state_dir, size_t keep) ABSL_LOCKS_EXCLUDED(mu_);

  // Opens a phase now; returns its handle for End().
  int Begin(const std::string& name, const std::string& detail = "") ABSL_LOCKS_EXCLUDED(mu_);
  // Closes phase `id` now. An empty `detail` keeps the one given to Begin.
  void End(int id, PhaseStatus status = PhaseStatus::kOk, const std::string& detail = "")
      ABSL_LOCKS_EXCLUDED(mu_);
  // A phase that already happened, between two BootSecondsNow() readings.
  void Record(const std::string& name, PhaseStatus status, const std::string& detail, double start_boot,
              double end_boot) ABSL_LOCKS_EXCLUDED(mu_);
  // A zero-length phase now (an event: "ready", "first CNI ADD served").
  void Instant(const std::string& name, PhaseStatus status = PhaseStatus::kOk, const std::string& detail = "")
      ABSL_LOCKS_EXCLUDED(mu_);
  // Records the first occurrence of `name` only (later calls are no-ops);
  // true when this call recorded it.
  bool InstantOnce(const std::string& name, PhaseStatus status = PhaseStatus::kOk, const std::string& detail = "")
      ABSL_LOCKS_EXCLUDED(mu_);
  bool Has(const std::string& name) const ABSL_LOCKS_EXCLUDED(mu_);

  // Marks the agent ready (ready_seconds, outcome "ready").
  void MarkReady() ABSL_LOCKS_EXCLUDED(mu_);
  // "failed" (never became ready) or "stopped" (was ready): for the history.
  // Phases still running are closed as failed with `why`.
  void MarkFinished(const std::string& why = "the agent exited before this phase finished")
      ABSL_LOCKS_EXCLUDED(mu_);

  v1::BringupReport Current() const ABSL_LOCKS_EXCLUDED(mu_);
  // The previous starts, oldest first, at most `n`.
  std::vector<v1::BringupReport> Previous(size_t n) const ABSL_LOCKS_EXCLUDED(mu_);

  // Writes previous + current to the history file atomically (temp file,
  // fsync, rename). No-op before AttachStateDir().
  absl::Status Save() ABSL_LOCKS_EXCLUDED(mu_, save_mu_);

 private:
  double SinceProcessStart(double boot_seconds) const { return boot_seconds - process_start_boot_; }
  void Observe(const v1::BringupPhase& p);

  const Options options_;
  double process_start_boot_ = 0;
  std::string boot_id_;

  mutable absl::Mutex mu_;
  v1::BringupReport current_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::BringupReport> previous_ ABSL_GUARDED_BY(mu_);
  std::string history_path_ ABSL_GUARDED_BY(mu_);
  size_t keep_ ABSL_GUARDED_BY(mu_) = 10;

  absl::Mutex save_mu_;  // one writer of the history file at a time
};

}  // namespace ruleplane::bringup
