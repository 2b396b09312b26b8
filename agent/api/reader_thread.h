// ReaderThread: the agent's one diagnostics reader. Runs read-only jobs
// (kernel dumps for CHECK, DumpRuleset, DiffDesiredActual) so that no gRPC
// thread ever blocks on the kernel. Jobs run in order; never mutates kernel
// state (its NftPort is used for Dump only).
#pragma once

#include <deque>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace ruleplane::api {

class ReaderThread {
 public:
  ReaderThread();
  ~ReaderThread();
  // Queues `job`; when the thread is stopping, the job runs with
  // `cancelled` = true so its reactor can still be finished.
  void Post(absl::AnyInvocable<void(bool cancelled) &&> job) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Run();
  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void(bool) &&>> jobs_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace ruleplane::api
