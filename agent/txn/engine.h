// Engine: the transaction queue and its single writer thread.
//
// Owns: the desired state, the element index, the state store and the
// NftPort. Many producers call Submit() from any thread; ONE writer thread
// drains everything pending, applies it to the desired state, renders one
// element delta, commits it as ONE nftables batch, persists it, and then
// completes each producer with its own result (group commit).
//
// Guarantees:
//  - mutations are applied in arrival order (so per container id too);
//  - a mutation the kernel rejects fails alone: the batch is undone in
//    memory, the culprit (from the kernel's per-message error) is dropped and
//    the rest is committed again;
//  - a producer is acknowledged only after the kernel accepted the batch and
//    the journal record was written (and fdatasynced with journal_fsync;
//    agent/txn/checkpoint.h says why that is off by default);
//  - kernel state is never torn down on Stop().
//
// Must not: block a producer on the kernel (Submit only enqueues), or touch
// the kernel from any thread but the writer (Start() runs adoption before the
// writer exists, so it is the writer then).
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/backend/snat_backend.h"
#include "agent/common/metrics.h"
#include "agent/core/desired_state.h"
#include "agent/core/types.h"
#include "agent/render/render.h"
#include "agent/txn/checkpoint.h"
#include "agent/txn/dataplane_port.h"
#include "agent/txn/nft_port.h"
#include "agent/txn/reconcile.h"

namespace ruleplane::txn {

struct CommitInfo;

struct EngineOptions {
  render::Layout layout;
  std::string state_dir;
  // fdatasync the journal before acknowledging a commit. Off: the record is
  // written (page cache) before the ack, which survives the agent's death;
  // what it mirrors does not survive the node's (agent/txn/checkpoint.h).
  bool journal_fsync = false;
  // Upper bound of mutations folded into one commit.
  size_t max_batch_mutations = 20000;
  // Delay before retrying a failed resync.
  absl::Duration resync_retry = absl::Milliseconds(250);
  // Full read-back-and-converge at least this often, even without events
  // (catches drift the event socket could not report). 0 disables.
  absl::Duration periodic_resync = absl::Minutes(10);
  // How many finished commits RecentCommits() keeps.
  size_t history = 256;
  // The non-nftables dataplane (tc eBPF SNAT); null = none, which makes the
  // engine refuse a layout whose SNAT backend needs one. Only the writer
  // calls it (DataplanePort contract).
  std::shared_ptr<DataplanePort> dataplane;
  // Delay before converging the dataplane again after a failure.
  absl::Duration dataplane_retry = absl::Seconds(1);
  // Called with every finished transaction (after it is in RecentCommits()),
  // on the thread that finished it (the writer, or Start()'s caller). Keep
  // it short: it delays the next commit. Used by WatchTransactions.
  std::function<void(const CommitInfo&)> on_commit;
  // Called as Start() passes each step, with the bring-up phase name
  // ("checkpoint loaded", "kernel state adopted", "base ruleset committed")
  // and a detail; a failed step gets ok=false.
  std::function<void(const std::string& phase, bool ok, const std::string& detail)> on_start_phase;
};

struct MutationResult {
  absl::Status status;
  uint64_t commit_id = 0;         // 0 when no kernel commit was needed
  absl::Duration queue_wait;      // enqueue -> picked up by the writer
  absl::Duration commit;          // netlink round trip of the commit that carried it
};

// One finished transaction, for logs, metrics and diagnostics.
struct CommitInfo {
  uint64_t id = 0;
  std::string kind;    // "mutations", "adopt", "resync"
  std::string reason;  // why a resync ran
  absl::Time start;
  size_t mutations = 0;
  size_t rejected = 0;  // mutations that failed (validation or kernel)
  uint32_t messages = 0;
  size_t elements = 0;
  int attempts = 0;
  absl::Duration queue_wait_max;
  absl::Duration render;
  absl::Duration commit;
  absl::Status status;
  std::string failing_op;  // first op the kernel refused, if any
};

class Engine {
 public:
  using Done = absl::AnyInvocable<void(const MutationResult&) &&>;

  // FailedPrecondition when the state dir is unusable.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(EngineOptions options,
                                                        std::unique_ptr<NftPort> port,
                                                        metrics::Registry* registry);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Loads the checkpoint, reads our table back from the kernel, converges it
  // with ONE diff transaction (no flush), then starts the writer thread.
  // Errors: the base ruleset could not be committed (the message names the
  // op and errno). Call once.
  [[nodiscard]] absl::Status Start();
  // Fails everything still queued with Unavailable, stops the writer. Kernel
  // state stays in place. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // Enqueues; `done` runs on the writer thread (keep it short) exactly once.
  void Submit(core::Mutation m, Done done) ABSL_LOCKS_EXCLUDED(mu_);
  // Submit and wait. DeadlineExceeded if not completed within `timeout`
  // (the mutation may still be committed later).
  MutationResult SubmitAndWait(core::Mutation m, absl::Duration timeout = absl::Seconds(30));

  // Asks the writer to read the kernel back and converge (drift repair).
  void RequestResync(std::string reason) ABSL_LOCKS_EXCLUDED(mu_);

  // Runs `fn` on the writer thread between batches (a consistent view of
  // the desired state) and waits for it. Unavailable when stopped,
  // DeadlineExceeded on timeout.
  absl::Status Inspect(absl::AnyInvocable<void(const core::DesiredState&, const render::ElementIndex&) &&> fn,
                       absl::Duration timeout = absl::Seconds(10));

  // Applies a new layout (priorities, table flags, later SNAT settings)
  // through the queue: the writer swaps the base ruleset and converges the
  // kernel with one diff transaction, ordered after everything queued before.
  // FailedPrecondition if the table name differs (that needs a restart).
  absl::Status Reconfigure(render::Layout layout, absl::Duration timeout = absl::Seconds(30));

  std::vector<CommitInfo> RecentCommits() const ABSL_LOCKS_EXCLUDED(history_mu_);
  size_t QueueDepth() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t drift_repairs() const { return drift_repairs_.load(); }
  // Writer thread (or inside Inspect) only: Reconfigure() replaces it.
  const render::BaseRuleset& base() const { return base_; }
  // Writer thread (or inside Inspect) only: every element the kernel should
  // hold (pods, configuration elements of the base ruleset, dynamic ones).
  DesiredElements DesiredElementsNow() const;

  // Replaces the elements of the base ruleset's dynamic sets (SNAT failover
  // steering) with `elements`, through the queue, as one commit of element
  // ops. InvalidArgument for a set that is not dynamic in the current base
  // (e.g. the SNAT mode changed meanwhile); the kernel's error otherwise.
  absl::Status SetDynamicElements(std::vector<render::SetElement> elements,
                                  absl::Duration timeout = absl::Seconds(10));
  // SNAT mode of the current layout; any thread.
  core::SnatMode snat_mode() const { return snat_mode_.load(); }

 private:
  struct Item {
    uint64_t id = 0;
    std::optional<core::Mutation> mutation;
    absl::AnyInvocable<void() &&> task;  // Inspect(), Reconfigure()
    Done done;
    absl::Time enqueued;
  };

  Engine(EngineOptions options, std::unique_ptr<NftPort> port, std::unique_ptr<StateStore> store,
         metrics::Registry* registry);

  void Run();
  absl::Status RunOnWriter(absl::AnyInvocable<void() &&> task, absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);
  void ProcessBatch(std::vector<Item>& items, bool allow_split);
  // Reads the kernel and converges it to the desired state. Writer only.
  absl::Status ResyncNow(const std::string& kind, const std::string& reason);
  // Converges the dataplane port to the current backend's plan and pods.
  // On failure marks it dirty (retried from Run()) and returns the error.
  absl::Status SyncDataplane(const std::string& why);
  // Mirrors the pod-ipv4 delta of a committed plan into the dataplane.
  void UpdateDataplanePods(const render::Plan& committed);
  render::Plan MakePlan(std::vector<render::Op> ops) const;
  void RecordCommit(CommitInfo info) ABSL_LOCKS_EXCLUDED(history_mu_);
  void PersistOrFail(uint64_t commit_id, std::vector<Item>& items,
                     const std::vector<std::optional<absl::Status>>& results,
                     std::vector<absl::Status>& final_status);

  const EngineOptions options_;
  render::Layout layout_;
  render::BaseRuleset base_;
  std::unique_ptr<NftPort> port_;
  std::unique_ptr<StateStore> store_;

  // Writer-thread state (no locks: only the writer touches it after Start).
  core::DesiredState state_;
  render::ElementIndex index_;
  uint64_t next_commit_id_ = 1;
  bool snapshot_needed_ = false;
  std::unique_ptr<backend::SnatBackend> snat_backend_;
  // Elements of base_.dynamic_sets, by set and (key, flags).
  std::map<std::string, std::map<std::pair<std::vector<uint8_t>, uint32_t>, render::Element>> dynamic_;
  bool dataplane_dirty_ = false;
  absl::Time dataplane_retry_at_ = absl::InfinitePast();
  std::atomic<core::SnatMode> snat_mode_{core::SnatMode::kOff};
  absl::Time last_full_sync_ = absl::Now();

  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<Item> pending_ ABSL_GUARDED_BY(mu_);
  std::string resync_reason_ ABSL_GUARDED_BY(mu_);
  absl::Time resync_not_before_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_item_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::thread writer_;

  mutable absl::Mutex history_mu_;
  std::deque<CommitInfo> history_ ABSL_GUARDED_BY(history_mu_);

  std::atomic<uint64_t> drift_repairs_{0};

  // Metrics (names are a public contract).
  metrics::Histogram* queue_wait_;
  metrics::Histogram* commit_seconds_;
  metrics::Histogram* render_seconds_;
  metrics::Histogram* batch_mutations_;
  metrics::Counter* commits_ok_;
  metrics::Counter* commits_failed_;
  metrics::Counter* commits_unknown_;
  metrics::Counter* mutations_ok_;
  metrics::Counter* mutations_rejected_;
  metrics::Gauge* queue_depth_;
  metrics::Gauge* last_commit_ts_;
  metrics::Gauge* last_queued_ts_;
  metrics::Counter* drift_repairs_total_;
  metrics::Counter* persist_errors_;
  metrics::Gauge* attachments_;
  metrics::Gauge* elements_;
  metrics::Counter* dataplane_errors_;
  metrics::Counter* dataplane_syncs_;
};

}  // namespace ruleplane::txn
