// XtablesLockMonitor: who holds /run/xtables.lock, for how long, and who
// waits behind it, without ever taking (or even opening) the lock.
//
// How: inotify on the lock file wakes us when a process opens or closes it
// (iptables opens, flock()s, works, exits). While the lock is in use we read
// /proc/locks every `poll_interval` to find the holder (FLOCK entry) and the
// blocked waiters ("->" entries) of the file's inode, and /proc/<pid> for
// their comm, command line and parent ("iptables-restore, child of
// kube-proxy"). When nobody has used the lock for `idle_after` we go back to
// sleeping in poll() on the inotify fd: no timer, no /proc reads, so an idle
// node costs nothing. A close wakes us at once, so a hold's end is exact
// to a scheduling delay; its start is exact to one poll interval. Holds
// shorter than one poll interval (a single `iptables -A`) may pass unseen;
// `opens` still counts every use, and a blocked waiter's wait is measured
// even when its own hold is too short to be seen.
//
// The lock file may be absent (nobody ran iptables-legacy yet; we then watch
// its directory for its creation) or a directory (a hostPath mount without
// `type: File` created one): both are reported, never fatal.
//
// Visibility: /proc/locks hides locks of processes outside our pid
// namespace, so in a pod the agent needs hostPID to see kube-proxy.
//
// Threads: one monitor thread (the diagnostics reader role of STYLE.md
// section 6). Snapshot() may be called from any thread.
#pragma once

#include <sys/types.h>

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
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/coexist/node_rules.h"
#include "agent/coexist/proc_info.h"
#include "agent/common/metrics.h"
#include "agent/common/unique_fd.h"

namespace ruleplane::coexist {

struct XtablesLockMonitorOptions {
  std::string path = "/run/xtables.lock";
  std::string proc_root = "/proc";
  // Holds at least this long get a WARNING line naming holder and waiters.
  absl::Duration long_hold = absl::Seconds(1);
  // /proc/locks sampling period while the lock is in use.
  absl::Duration poll_interval = absl::Milliseconds(10);
  // Stop sampling after this long without any lock entry on the file.
  absl::Duration idle_after = absl::Milliseconds(500);
  // How often to re-read which iptables backends are in use (also after
  // lock activity, at most once per `backend_min_interval`).
  absl::Duration backend_interval = absl::Minutes(5);
  absl::Duration backend_min_interval = absl::Seconds(10);
  // Finished holds kept for Snapshot().
  size_t recent_holds = 64;
  // Distinct holder label values before new ones become "other".
  size_t max_holder_labels = 32;
  // Lists nf_tables chains of every family (read-only); empty = only legacy
  // tables are looked at.
  std::function<absl::StatusOr<std::vector<NftChainRef>>()> list_nft_chains;
};

struct LockHold {
  ProcessInfo holder;
  absl::Time start;
  absl::Duration held;
  bool in_progress = false;
  size_t max_waiters = 0;
  std::vector<ProcessInfo> waiters;  // everyone seen blocked during the hold
};

struct HolderTotals {
  uint64_t holds = 0;
  absl::Duration total;
  absl::Duration longest;
  std::string example;  // Describe() of the latest hold's holder
};

struct LockStats {
  std::string path;
  // "file", "absent", "directory", "error"; detail says why it matters.
  std::string file_state;
  std::string file_detail;
  std::optional<LockHold> current;
  std::vector<ProcessInfo> waiters_now;
  uint64_t holds = 0;
  uint64_t long_holds = 0;
  uint64_t opens = 0;  // inotify open events seen
  absl::Duration longest_hold;
  absl::Duration long_hold_threshold;
  std::vector<LockHold> recent;  // oldest first
  std::map<std::string, HolderTotals> by_holder;
  BackendReport backends;
  std::string backends_error;  // why the nf_tables side could not be read
  absl::Time backends_checked;
};

class XtablesLockMonitor {
 public:
  // Starts the monitor thread. Errors only for what makes monitoring
  // impossible (no inotify); a missing or odd lock file is state, not error.
  static absl::StatusOr<std::unique_ptr<XtablesLockMonitor>> Start(XtablesLockMonitorOptions options,
                                                                   metrics::Registry* registry);
  ~XtablesLockMonitor();
  XtablesLockMonitor(const XtablesLockMonitor&) = delete;
  XtablesLockMonitor& operator=(const XtablesLockMonitor&) = delete;

  LockStats Snapshot() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  XtablesLockMonitor(XtablesLockMonitorOptions options, UniqueFd inotify, UniqueFd stop,
                     metrics::Registry* registry);
  void Run();
  // (Re)establishes the inotify watches for the current shape of the path.
  void Watch();
  // Reads inotify events; true when the lock file was opened or closed.
  bool DrainEvents(bool* rewatch);
  void Sample(absl::Time now);
  void FinishHold(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DetectBackendsNow();
  metrics::Histogram* HoldHistogram(const std::string& holder);
  void SetFileState(const std::string& state, const std::string& detail);

  const XtablesLockMonitorOptions options_;
  metrics::Registry* registry_;
  UniqueFd inotify_;
  UniqueFd stop_;  // eventfd
  std::thread thread_;

  // Monitor-thread state.
  int file_wd_ = -1;
  int dir_wd_ = -1;
  std::optional<FileId> file_id_;
  pid_t current_holder_pid_ = 0;  // 0: nobody (pid -1 is an OFD lock)
  bool active_ = false;
  absl::Time last_entry_seen_ = absl::InfinitePast();
  absl::Time last_event_ = absl::InfinitePast();  // latest open/close of the lock file
  absl::Time last_backend_check_ = absl::InfinitePast();
  bool backend_recheck_wanted_ = false;
  std::map<pid_t, absl::Time> waiting_since_;
  std::map<std::string, metrics::Histogram*> hold_histograms_;

  mutable absl::Mutex mu_;
  LockStats stats_ ABSL_GUARDED_BY(mu_);
  std::deque<LockHold> recent_ ABSL_GUARDED_BY(mu_);

  metrics::Gauge* waiters_gauge_;
  metrics::Gauge* longest_gauge_;
  metrics::Gauge* holding_gauge_;
  metrics::Histogram* wait_seconds_;
  metrics::Counter* long_holds_total_;
  std::map<std::string, metrics::Gauge*> file_state_gauges_;
  metrics::Gauge* backend_legacy_;
  metrics::Gauge* backend_nft_;
  metrics::Gauge* backend_mixed_;
};

}  // namespace ruleplane::coexist
