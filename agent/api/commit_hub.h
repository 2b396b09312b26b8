// CommitHub: fans finished transactions out to WatchTransactions streams.
//
// The engine calls Publish() on its writer thread for every finished
// transaction (EngineOptions::on_commit); each open stream has a bounded
// queue, so a slow client never slows the writer down: when its queue is
// full it misses transactions and is told how many (a "gap" entry).
#pragma once

#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "agent/txn/engine.h"
#include "ruleplane/v1/diagnostics.pb.h"

namespace ruleplane::api {

// CommitInfo as the Diagnostics API shows it.
v1::Transaction TransactionToProto(const txn::CommitInfo& ci);

class CommitHub {
 public:
  class Subscriber {
   public:
    virtual ~Subscriber() = default;
    // Called with the hub's lock held: enqueue and return.
    virtual void OnTransaction(const v1::Transaction& t) = 0;
    // The agent is stopping: finish the stream.
    virtual void OnShutdown() = 0;
  };

  // Engine thread; cheap when nobody watches.
  void Publish(const txn::CommitInfo& info) ABSL_LOCKS_EXCLUDED(mu_);
  void Add(Subscriber* s) ABSL_LOCKS_EXCLUDED(mu_);
  // After Remove() returns, the hub never calls `s` again.
  void Remove(Subscriber* s) ABSL_LOCKS_EXCLUDED(mu_);
  // Finishes every stream; later Add()s are told OnShutdown() at once.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);
  size_t watchers() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::set<Subscriber*> subscribers_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ruleplane::api
