#include "agent/coexist/xtables_lock_monitor.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"

namespace ruleplane::coexist {
namespace {

constexpr uint32_t kFileEvents = IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE | IN_ATTRIB | IN_DELETE_SELF |
                                 IN_MOVE_SELF;
constexpr uint32_t kDirEvents = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR;
// Retry period when neither the file nor its directory can be watched.
constexpr absl::Duration kRewatchRetry = absl::Seconds(30);
// /proc/locks is one line per lock on the node; bounded read.
constexpr size_t kMaxProcLocksBytes = 8 << 20;

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string BaseOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

int ToPollMs(absl::Duration d) {
  if (d == absl::InfiniteDuration()) return -1;
  if (d <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(absl::Ceil(d, absl::Milliseconds(1))), 1 << 30));
}

std::string WaitersText(const std::vector<ProcessInfo>& waiters) {
  if (waiters.empty()) return "no waiters";
  std::vector<std::string> parts;
  for (const ProcessInfo& w : waiters) parts.push_back(Describe(w));
  return absl::StrCat(waiters.size(), waiters.size() == 1 ? " waiter: " : " waiters: ", absl::StrJoin(parts, "; "));
}

}  // namespace

absl::StatusOr<std::unique_ptr<XtablesLockMonitor>> XtablesLockMonitor::Start(XtablesLockMonitorOptions options,
                                                                              metrics::Registry* registry) {
  UniqueFd in(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!in.valid()) return absl::ErrnoToStatus(errno, "xtables lock monitor: inotify_init1");
  UniqueFd stop(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!stop.valid()) return absl::ErrnoToStatus(errno, "xtables lock monitor: eventfd");
  auto m = std::unique_ptr<XtablesLockMonitor>(
      new XtablesLockMonitor(std::move(options), std::move(in), std::move(stop), registry));
  m->thread_ = std::thread([p = m.get()] { p->Run(); });
  return m;
}

XtablesLockMonitor::XtablesLockMonitor(XtablesLockMonitorOptions options, UniqueFd inotify, UniqueFd stop,
                                       metrics::Registry* registry)
    : options_(std::move(options)), registry_(registry), inotify_(std::move(inotify)), stop_(std::move(stop)) {
  waiters_gauge_ = registry_->GetGauge("ruleplane_xtables_lock_waiters",
                                       "Processes blocked waiting for the xtables lock right now.");
  longest_gauge_ = registry_->GetGauge("ruleplane_xtables_lock_longest_hold_seconds",
                                       "Longest xtables lock hold seen since the agent started (grows while held).");
  holding_gauge_ = registry_->GetGauge("ruleplane_xtables_lock_held", "1 while some process holds the xtables lock.");
  wait_seconds_ = registry_->GetHistogram("ruleplane_xtables_lock_wait_seconds",
                                          "Time processes spent blocked on the xtables lock.",
                                          metrics::ExponentialBuckets(0.001, 2, 17));
  long_holds_total_ = registry_->GetCounter("ruleplane_xtables_lock_long_holds_total",
                                            "xtables lock holds at least as long as the long-hold threshold.");
  for (const char* s : {"file", "absent", "directory", "error"}) {
    file_state_gauges_[s] = registry_->GetGauge(
        "ruleplane_xtables_lock_file", "1 for the current state of the xtables lock path.", {{"state", s}});
  }
  backend_legacy_ = registry_->GetGauge("ruleplane_iptables_backend_in_use",
                                        "1 when tables of that iptables backend exist on the node.",
                                        {{"backend", "legacy"}});
  backend_nft_ = registry_->GetGauge("ruleplane_iptables_backend_in_use",
                                     "1 when tables of that iptables backend exist on the node.", {{"backend", "nft"}});
  backend_mixed_ = registry_->GetGauge(
      "ruleplane_iptables_mixed_backends",
      "1 (a warning) when both iptables-legacy and iptables-nft tables exist on the node.");
  absl::MutexLock lock(&mu_);
  stats_.path = options_.path;
  stats_.long_hold_threshold = options_.long_hold;
  stats_.file_state = "error";
  stats_.file_detail = "not looked at yet";
}

XtablesLockMonitor::~XtablesLockMonitor() {
  uint64_t one = 1;
  if (::write(stop_.get(), &one, sizeof(one)) < 0) PLOG(ERROR) << "xtables lock monitor: wake for stop";
  if (thread_.joinable()) thread_.join();
}

LockStats XtablesLockMonitor::Snapshot() const {
  absl::MutexLock lock(&mu_);
  LockStats s = stats_;
  s.recent.assign(recent_.begin(), recent_.end());
  if (s.current) s.current->held = absl::Now() - s.current->start;
  return s;
}

metrics::Histogram* XtablesLockMonitor::HoldHistogram(const std::string& holder) {
  std::string label = holder.empty() ? "unknown" : holder;
  auto it = hold_histograms_.find(label);
  if (it != hold_histograms_.end()) return it->second;
  if (hold_histograms_.size() >= options_.max_holder_labels) label = "other";
  metrics::Histogram* h = registry_->GetHistogram("ruleplane_xtables_lock_hold_seconds",
                                                  "How long each xtables lock hold lasted, by holder (comm).",
                                                  metrics::ExponentialBuckets(0.001, 2, 17), {{"holder", label}});
  hold_histograms_[label] = h;
  return h;
}

void XtablesLockMonitor::SetFileState(const std::string& state, const std::string& detail) {
  bool changed;
  {
    absl::MutexLock lock(&mu_);
    changed = stats_.file_state != state || stats_.file_detail != detail;
    stats_.file_state = state;
    stats_.file_detail = detail;
  }
  for (auto& [s, g] : file_state_gauges_) g->Set(s == state ? 1 : 0);
  if (!changed) return;
  if (state == "file") {
    LOG(INFO) << "xtables lock monitor: watching " << options_.path;
  } else {
    LOG(WARNING) << "xtables lock monitor: " << options_.path << " " << detail;
  }
}

void XtablesLockMonitor::Watch() {
  if (file_wd_ >= 0) inotify_rm_watch(inotify_.get(), file_wd_);
  if (dir_wd_ >= 0) inotify_rm_watch(inotify_.get(), dir_wd_);
  file_wd_ = dir_wd_ = -1;
  file_id_.reset();
  const std::string dir = DirOf(options_.path);

  // The directory is watched before the path is looked at: a lock file
  // created between the stat() and the watch would otherwise go unseen
  // (its IN_CREATE came before anybody listened).
  dir_wd_ = inotify_add_watch(inotify_.get(), dir.c_str(), kDirEvents);
  const int dir_errno = errno;
  struct stat st {};
  if (::stat(options_.path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    if (dir_wd_ >= 0) inotify_rm_watch(inotify_.get(), dir_wd_);
    dir_wd_ = -1;
    // stat(), not open(): we never hold an fd on the lock file.
    file_wd_ = inotify_add_watch(inotify_.get(), options_.path.c_str(), kFileEvents);
    if (file_wd_ < 0) {
      SetFileState("error", absl::StrCat("cannot be watched: inotify_add_watch: ", std::strerror(errno)));
      return;
    }
    file_id_ = FileId{major(st.st_dev), minor(st.st_dev), static_cast<uint64_t>(st.st_ino)};
    SetFileState("file", "");
    active_ = true;  // it may be held right now
    last_event_ = absl::Now();
    return;
  }
  int stat_errno = errno;
  bool is_dir = stat_errno == 0 ? S_ISDIR(st.st_mode) : false;
  std::string dir_note = dir_wd_ < 0 ? absl::StrCat(" (and its directory ", dir, " cannot be watched: ",
                                                    std::strerror(dir_errno), "; retrying every 30s)")
                                     : "";
  if (stat_errno == 0 && is_dir) {
    SetFileState("directory",
                 absl::StrCat("is a directory, not a file: a hostPath mount without `type: File` (or FileOrCreate) "
                              "created it; iptables-legacy cannot lock it and fails",
                              dir_note));
  } else if (stat_errno == 0) {
    SetFileState("error", absl::StrCat("is neither a regular file nor a directory (mode ", st.st_mode, ")", dir_note));
  } else if (stat_errno == ENOENT) {
    SetFileState("absent", absl::StrCat("does not exist (yet): nobody has used iptables-legacy since boot, or the "
                                        "lock is not mounted into this container",
                                        dir_note));
  } else {
    SetFileState("error", absl::StrCat("stat: ", std::strerror(stat_errno), dir_note));
  }
}

bool XtablesLockMonitor::DrainEvents(bool* rewatch) {
  alignas(inotify_event) char buf[8192];
  bool lock_event = false;
  const std::string base = BaseOf(options_.path);
  for (;;) {
    ssize_t n = ::read(inotify_.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (char* p = buf; p < buf + n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(p);
      p += sizeof(inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        *rewatch = true;
        lock_event = true;
        continue;
      }
      if (ev->wd == file_wd_ && file_wd_ >= 0) {
        if (ev->mask & IN_OPEN) {
          absl::MutexLock lock(&mu_);
          ++stats_.opens;
        }
        if (ev->mask & (IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE)) lock_event = true;
        if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) *rewatch = true;
        if (ev->mask & IN_ATTRIB) {
          // Unlinked or replaced (rename over it) shows up as a link-count
          // change on the old inode.
          struct stat st {};
          if (::stat(options_.path.c_str(), &st) != 0 || !file_id_ ||
              static_cast<uint64_t>(st.st_ino) != file_id_->inode) {
            *rewatch = true;
          }
        }
      } else if (ev->wd == dir_wd_ && dir_wd_ >= 0) {
        if (ev->len > 0 && base == ev->name) *rewatch = true;
        if (ev->mask & IN_IGNORED) *rewatch = true;
      }
    }
  }
  return lock_event;
}

void XtablesLockMonitor::Sample(absl::Time now) {
  std::optional<std::string> text = ReadSmallFile(options_.proc_root + "/locks", kMaxProcLocksBytes);
  std::vector<FileLock> locks = text && file_id_ ? ParseProcLocks(*text, *file_id_) : std::vector<FileLock>{};
  std::optional<pid_t> holder;
  std::vector<pid_t> waiters;
  for (const FileLock& l : locks) {
    if (!l.blocked && !holder) {
      holder = l.pid;
    } else if (l.blocked) {
      waiters.push_back(l.pid);
    }
  }
  // /proc reads happen outside the stats mutex (only this thread changes
  // the current holder, so current_holder_pid_ mirrors it without locking).
  std::optional<ProcessInfo> holder_info;
  if (holder && current_holder_pid_ != *holder) holder_info = ReadProcess(options_.proc_root, *holder);
  std::set<pid_t> waiting(waiters.begin(), waiters.end());
  std::vector<pid_t> new_waiters;
  for (pid_t w : waiters) {
    if (!waiting_since_.count(w)) new_waiters.push_back(w);
  }
  std::map<pid_t, ProcessInfo> new_infos;
  for (pid_t w : new_waiters) new_infos[w] = ReadProcess(options_.proc_root, w);

  absl::MutexLock lock(&mu_);
  if (stats_.current && (!holder || stats_.current->holder.pid != *holder)) FinishHold(now);
  if (holder && !stats_.current) {
    LockHold h;
    h.holder = holder_info ? *std::move(holder_info) : ReadProcess(options_.proc_root, *holder);
    h.start = now;
    h.in_progress = true;
    stats_.current = std::move(h);
    current_holder_pid_ = *holder;
  }
  // Waiters: who started and who stopped waiting.
  for (auto it = waiting_since_.begin(); it != waiting_since_.end();) {
    if (!waiting.count(it->first)) {
      wait_seconds_->Observe(absl::ToDoubleSeconds(now - it->second));
      it = waiting_since_.erase(it);
    } else {
      ++it;
    }
  }
  for (pid_t w : new_waiters) waiting_since_[w] = now;
  std::vector<ProcessInfo> now_waiting;
  for (pid_t w : waiters) {
    auto ni = new_infos.find(w);
    if (ni != new_infos.end()) {
      now_waiting.push_back(ni->second);
      continue;
    }
    bool found = false;
    for (const ProcessInfo& p : stats_.waiters_now) {
      if (p.pid == w) {
        now_waiting.push_back(p);
        found = true;
        break;
      }
    }
    if (!found) now_waiting.push_back(ReadProcess(options_.proc_root, w));
  }
  stats_.waiters_now = now_waiting;
  if (stats_.current) {
    LockHold& h = *stats_.current;
    h.held = now - h.start;
    h.max_waiters = std::max(h.max_waiters, now_waiting.size());
    for (const ProcessInfo& w : now_waiting) {
      bool known = false;
      for (const ProcessInfo& k : h.waiters) known = known || k.pid == w.pid;
      if (!known) h.waiters.push_back(w);
    }
    if (h.held > stats_.longest_hold) {
      stats_.longest_hold = h.held;
      longest_gauge_->Set(absl::ToDoubleSeconds(h.held));
    }
  }
  waiters_gauge_->Set(static_cast<double>(now_waiting.size()));
  holding_gauge_->Set(stats_.current ? 1 : 0);
  if (!locks.empty()) {
    last_entry_seen_ = now;
  } else if (now - std::max(last_entry_seen_, last_event_) >= options_.idle_after) {
    active_ = false;  // back to sleeping on inotify
  }
}

void XtablesLockMonitor::FinishHold(absl::Time now) {
  LockHold h = std::move(*stats_.current);
  stats_.current.reset();
  current_holder_pid_ = 0;
  h.held = now - h.start;
  h.in_progress = false;
  ++stats_.holds;
  HoldHistogram(h.holder.name)->Observe(absl::ToDoubleSeconds(h.held));
  HolderTotals& t = stats_.by_holder[h.holder.name.empty() ? "unknown" : h.holder.name];
  ++t.holds;
  t.total += h.held;
  t.longest = std::max(t.longest, h.held);
  t.example = Describe(h.holder);
  if (h.held > stats_.longest_hold) {
    stats_.longest_hold = h.held;
    longest_gauge_->Set(absl::ToDoubleSeconds(h.held));
  }
  if (h.held >= options_.long_hold) {
    ++stats_.long_holds;
    long_holds_total_->Increment();
    LOG(WARNING) << "xtables lock held " << absl::StrFormat("%.3fs", absl::ToDoubleSeconds(h.held)) << " by "
                 << Describe(h.holder) << " cmd=\"" << h.holder.cmdline << "\"; " << WaitersText(h.waiters)
                 << " (path " << options_.path << ")";
  } else {
    VLOG(1) << "xtables lock held " << absl::ToDoubleSeconds(h.held) << "s by " << Describe(h.holder);
  }
  recent_.push_back(std::move(h));
  while (recent_.size() > options_.recent_holds) recent_.pop_front();
  backend_recheck_wanted_ = true;
}

void XtablesLockMonitor::DetectBackendsNow() {
  std::vector<LegacyTable> legacy = ReadLegacyTables(options_.proc_root);
  std::vector<NftChainRef> chains;
  std::string error;
  if (options_.list_nft_chains) {
    absl::StatusOr<std::vector<NftChainRef>> c = options_.list_nft_chains();
    if (c.ok()) {
      chains = std::move(*c);
    } else {
      error = std::string(c.status().message());
    }
  }
  BackendReport r = DetectBackends(legacy, chains);
  backend_legacy_->Set(r.legacy_in_use ? 1 : 0);
  backend_nft_->Set(r.nft_in_use ? 1 : 0);
  backend_mixed_->Set(r.mixed ? 1 : 0);
  std::string previous;
  {
    absl::MutexLock lock(&mu_);
    previous = stats_.backends.summary;
    stats_.backends = r;
    stats_.backends_error = error;
    stats_.backends_checked = absl::Now();
  }
  last_backend_check_ = absl::Now();
  backend_recheck_wanted_ = false;
  if (previous != r.summary) {
    if (r.mixed) {
      LOG(WARNING) << "iptables backends: " << r.summary;
    } else {
      LOG(INFO) << "iptables backends: " << r.summary;
    }
  }
  if (!error.empty()) {
    LOG_EVERY_T(WARNING, 300) << "iptables backends: cannot list nf_tables chains: " << error;
  }
}

void XtablesLockMonitor::Run() {
  Watch();
  DetectBackendsNow();
  absl::Time last_watch = absl::Now();
  for (;;) {
    absl::Time now = absl::Now();
    absl::Duration timeout = options_.backend_interval - (now - last_backend_check_);
    if (active_) {
      // Long holds are sampled less often: their end is signalled by the
      // holder's close(), which wakes us anyway.
      absl::Duration interval = options_.poll_interval;
      {
        absl::MutexLock lock(&mu_);
        if (stats_.current && now - stats_.current->start > absl::Seconds(1)) {
          interval = std::min(options_.poll_interval * 5, std::max(options_.poll_interval, absl::Milliseconds(50)));
        }
      }
      timeout = std::min(timeout, interval);
    } else if (backend_recheck_wanted_) {
      timeout = std::min(timeout, options_.backend_min_interval - (now - last_backend_check_));
    }
    if (file_wd_ < 0 && dir_wd_ < 0) timeout = std::min(timeout, kRewatchRetry - (now - last_watch));
    pollfd fds[2] = {{inotify_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, ToPollMs(timeout));
    if (n < 0 && errno != EINTR) {
      PLOG(ERROR) << "xtables lock monitor: poll; stopping";
      return;
    }
    if (fds[1].revents) return;
    bool rewatch = false;
    if (fds[0].revents & POLLIN) {
      if (DrainEvents(&rewatch)) {
        // An open may precede its flock() by a moment: keep sampling for
        // idle_after from the latest event, not from the latest lock seen.
        active_ = true;
        last_event_ = absl::Now();
      }
    }
    now = absl::Now();
    if (rewatch || (file_wd_ < 0 && dir_wd_ < 0 && now - last_watch >= kRewatchRetry)) {
      Watch();
      last_watch = now;
    }
    if (active_ && file_id_) {
      Sample(now);
    } else if (active_) {
      active_ = false;
    }
    if (!active_) {
      absl::MutexLock lock(&mu_);
      if (stats_.current) FinishHold(now);  // the file went away under a hold
    }
    if (now - last_backend_check_ >= options_.backend_interval ||
        (backend_recheck_wanted_ && !active_ && now - last_backend_check_ >= options_.backend_min_interval)) {
      DetectBackendsNow();
    }
  }
}

}  // namespace ruleplane::coexist
