// EgressWatcher: follows the node's interfaces for SNAT (egress addresses
// that are defaults of an interface; tc hooks on a device that was
// replaced).
//
// Owns a kernel::nl::LinkWatcher (rtnetlink notifications in the agent's
// netns) and one thread. When interfaces change it waits until the changes
// settle (`settle` without a new notification, at most `max_delay` after the
// first) and calls `on_change` on its thread with everything that changed
// meanwhile. It never changes kernel state itself: the callback (the
// agent's main) re-resolves the SNAT settings and reconfigures the engine
// through the transaction queue.
#pragma once

#include <memory>
#include <thread>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/common/unique_fd.h"
#include "agent/kernel/nl/link_watch.h"

namespace ruleplane::txn {

struct EgressWatchOptions {
  absl::Duration settle = absl::Milliseconds(200);
  absl::Duration max_delay = absl::Seconds(2);
  // Runs on the watcher's thread; may block (a reconfiguration waits for
  // the queue). Changes arriving meanwhile are delivered next time.
  absl::AnyInvocable<void(const kernel::nl::LinkChanges&)> on_change;
};

class EgressWatcher {
 public:
  // Subscribes, then starts the thread. Errors: the subscription failed
  // (named by LinkWatcher::Open).
  static absl::StatusOr<std::unique_ptr<EgressWatcher>> Start(EgressWatchOptions options);
  // Stops the thread (after the callback in progress, if any) and joins.
  ~EgressWatcher();
  EgressWatcher(const EgressWatcher&) = delete;
  EgressWatcher& operator=(const EgressWatcher&) = delete;

 private:
  EgressWatcher(EgressWatchOptions options, std::unique_ptr<kernel::nl::LinkWatcher> links, UniqueFd stop);
  void Run();

  EgressWatchOptions options_;
  std::unique_ptr<kernel::nl::LinkWatcher> links_;
  UniqueFd stop_;  // eventfd: written once by the destructor
  std::thread thread_;
};

}  // namespace ruleplane::txn
