#include "agent/txn/drift_monitor.h"

#include <linux/netfilter.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/common/status_macros.h"
#include "glog/logging.h"

namespace ruleplane::txn {
namespace {

// NEWGEN carries the committing *thread's* id (the engine thread for us), so
// a commit is ours when that id is one of this process's tasks.
bool IsOwnThread(uint32_t pid, uint32_t self) {
  if (pid == 0) return false;
  if (pid == self) return true;
  return ::access(absl::StrCat("/proc/self/task/", pid).c_str(), F_OK) == 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DriftMonitor>> DriftMonitor::Start(Engine* engine,
                                                                  const std::string& netns_path,
                                                                  const std::string& table,
                                                                  metrics::Registry* registry) {
  ASSIGN_OR_RETURN(auto watcher, kernel::nft::NftEventWatcher::Create(netns_path, table, NFPROTO_INET));
  auto monitor = std::unique_ptr<DriftMonitor>(new DriftMonitor(engine, std::move(watcher), registry));
  if (!monitor->stop_fd_.valid()) return absl::ErrnoToStatus(errno, "eventfd for drift monitor");
  monitor->thread_ = std::thread([m = monitor.get()] { m->Run(); });
  return monitor;
}

DriftMonitor::DriftMonitor(Engine* engine, std::unique_ptr<kernel::nft::NftEventWatcher> watcher,
                           metrics::Registry* registry)
    : engine_(engine),
      watcher_(std::move(watcher)),
      stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  foreign_changes_ = registry->GetCounter(
      "ruleplane_drift_foreign_changes_total",
      "nftables transactions by other processes that touched the agent's table");
}

DriftMonitor::~DriftMonitor() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    if (::write(stop_fd_.get(), &one, sizeof(one)) < 0) {
      PLOG(ERROR) << "wake drift monitor";
    }
    thread_.join();
  }
}

void DriftMonitor::Run() {
  const uint32_t self = static_cast<uint32_t>(::getpid());
  for (;;) {
    pollfd fds[2] = {{watcher_->fd(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      PLOG(ERROR) << "drift monitor poll";
      return;
    }
    if (fds[1].revents) return;
    absl::StatusOr<std::vector<kernel::nft::RulesetChange>> changes = watcher_->ReadPending();
    if (!changes.ok()) {
      LOG_EVERY_T(ERROR, 5) << "read nftables events: " << changes.status();
      engine_->RequestResync(absl::StrCat("event socket error: ", changes.status().message()));
      continue;
    }
    for (const kernel::nft::RulesetChange& c : *changes) {
      if (IsOwnThread(c.pid, self)) continue;  // our own commits
      changes_seen_.fetch_add(1);
      foreign_changes_->Increment();
      std::string who = c.pid ? absl::StrCat(c.proc_name, "[pid ", c.pid, "]") : "unknown process";
      LOG(WARNING) << "table changed by " << who << " (generation " << c.generation
                   << "): " << absl::StrJoin(c.events, ", ") << "; re-asserting";
      engine_->RequestResync(absl::StrCat("changed by ", who));
    }
  }
}

}  // namespace ruleplane::txn
