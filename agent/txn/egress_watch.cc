#include "agent/txn/egress_watch.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "absl/strings/str_join.h"
#include "glog/logging.h"

namespace ruleplane::txn {

absl::StatusOr<std::unique_ptr<EgressWatcher>> EgressWatcher::Start(EgressWatchOptions options) {
  absl::StatusOr<std::unique_ptr<kernel::nl::LinkWatcher>> links = kernel::nl::LinkWatcher::Open();
  if (!links.ok()) return links.status();
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop.valid()) return absl::ErrnoToStatus(errno, "eventfd for the egress watcher");
  std::unique_ptr<EgressWatcher> w(new EgressWatcher(std::move(options), std::move(*links), std::move(stop)));
  w->thread_ = std::thread([raw = w.get()] { raw->Run(); });
  return w;
}

EgressWatcher::EgressWatcher(EgressWatchOptions options, std::unique_ptr<kernel::nl::LinkWatcher> links, UniqueFd stop)
    : options_(std::move(options)), links_(std::move(links)), stop_(std::move(stop)) {}

EgressWatcher::~EgressWatcher() {
  const uint64_t one = 1;
  if (::write(stop_.get(), &one, sizeof(one)) < 0) PLOG(ERROR) << "egress watcher: stop";
  if (thread_.joinable()) thread_.join();
}

void EgressWatcher::Run() {
  kernel::nl::LinkChanges pending;
  absl::Time first = absl::InfiniteFuture();  // of the pending changes
  absl::Time last = absl::InfiniteFuture();
  for (;;) {
    int timeout_ms = -1;
    if (!pending.empty()) {
      const absl::Time due = std::min(last + options_.settle, first + options_.max_delay);
      timeout_ms = static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(due - absl::Now()) + 1));
    }
    pollfd fds[2] = {{links_->fd(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    const int ready = ::poll(fds, 2, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      PLOG(ERROR) << "egress watcher: poll; stopping";
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents != 0) {
      absl::StatusOr<kernel::nl::LinkChanges> got = links_->ReadPending();
      if (!got.ok()) {
        // Unknown state: treat it like lost notifications, and do not spin.
        LOG_EVERY_T(ERROR, 10) << "egress watcher: " << got.status();
        got = kernel::nl::LinkChanges{.interfaces = {}, .overflow = true};
        ::usleep(100 * 1000);
      }
      if (!got->empty()) {
        const absl::Time now = absl::Now();
        if (pending.empty()) first = now;
        last = now;
        pending.interfaces.merge(got->interfaces);
        pending.overflow = pending.overflow || got->overflow;
      }
      continue;
    }
    if (pending.empty() || absl::Now() < std::min(last + options_.settle, first + options_.max_delay)) continue;
    VLOG(1) << "egress watcher: changed " << absl::StrJoin(pending.interfaces, ",")
            << (pending.overflow ? " (notifications lost)" : "");
    kernel::nl::LinkChanges batch = std::move(pending);
    pending = {};
    first = last = absl::InfiniteFuture();
    options_.on_change(batch);
  }
}

}  // namespace ruleplane::txn
