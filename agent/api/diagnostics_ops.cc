// Diagnostics RPCs for operations: WatchTransactions (server stream),
// GetLockStats (xtables lock monitor), GetBringupReport (start timeline).
// Kept apart from diagnostics_service.cc so the two evolve independently.
#include <algorithm>
#include <deque>

#include "absl/strings/str_cat.h"
#include "agent/api/diagnostics_service.h"
#include "agent/api/grpc_status.h"

namespace ruleplane::api {
namespace {

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* c, const absl::Status& s) {
  grpc::ServerUnaryReactor* r = c->DefaultReactor();
  r->Finish(ToGrpcStatus(s));
  return r;
}

// Most transactions a stream buffers before it starts missing some.
constexpr size_t kMaxQueued = 4096;

// One WatchTransactions stream. Deletes itself in OnDone().
//
// Lock order: CommitHub::mu_ -> mu_ (the hub calls OnTransaction with its
// lock held); so this class never calls into the hub while holding mu_.
class WatchReactor final : public grpc::ServerWriteReactor<v1::Transaction>, public CommitHub::Subscriber {
 public:
  WatchReactor(CommitHub* hub, txn::Engine* engine, uint32_t backlog) : hub_(hub) {
    // Subscribe first, then read the backlog: a commit finishing in between
    // is then in both, and deduplicated by id, rather than in neither.
    hub_->Add(this);
    std::vector<txn::CommitInfo> recent = backlog ? engine->RecentCommits() : std::vector<txn::CommitInfo>{};
    size_t first = recent.size() > backlog ? recent.size() - backlog : 0;
    absl::MutexLock lock(&mu_);
    std::deque<v1::Transaction> early = std::move(queue_);
    queue_.clear();
    uint64_t last = 0;
    for (size_t i = first; i < recent.size(); ++i) {
      queue_.push_back(TransactionToProto(recent[i]));
      last = recent[i].id;
    }
    for (v1::Transaction& t : early) {
      if (t.id() > last) queue_.push_back(std::move(t));
    }
    started_ = true;
    MaybeWriteLocked();
  }

  void OnTransaction(const v1::Transaction& t) override {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    if (queue_.size() >= kMaxQueued) {
      ++missed_;
      return;
    }
    queue_.push_back(t);
    if (started_) MaybeWriteLocked();
  }

  void OnShutdown() override {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    if (!writing_) FinishLocked(ToGrpcStatus(absl::UnavailableError("agent is shutting down")));
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok || cancelled_) return FinishLocked(grpc::Status::CANCELLED);
    if (shutting_down_) return FinishLocked(ToGrpcStatus(absl::UnavailableError("agent is shutting down")));
    MaybeWriteLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (!writing_) FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    hub_->Remove(this);
    delete this;
  }

 private:
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    if (missed_ > 0) {
      current_.Clear();
      current_.set_kind("gap");
      current_.set_reason(absl::StrCat(missed_, " transactions missed: the client read too slowly"));
      missed_ = 0;
    } else if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
    } else {
      return;
    }
    writing_ = true;
    StartWrite(&current_);
  }

  void FinishLocked(const grpc::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(s);
  }

  CommitHub* const hub_;
  absl::Mutex mu_;
  std::deque<v1::Transaction> queue_ ABSL_GUARDED_BY(mu_);
  v1::Transaction current_ ABSL_GUARDED_BY(mu_);  // the one being written
  uint64_t missed_ ABSL_GUARDED_BY(mu_) = 0;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// A stream that fails at once (authorization, feature off).
class FailedStream final : public grpc::ServerWriteReactor<v1::Transaction> {
 public:
  explicit FailedStream(const grpc::Status& s) { Finish(s); }
  void OnDone() override { delete this; }
};

void ToProto(const coexist::ProcessInfo& p, v1::LockProcess* out) {
  out->set_pid(p.pid);
  out->set_name(p.name);
  out->set_comm(p.comm);
  out->set_cmdline(p.cmdline);
  out->set_parent_pid(p.ppid);
  out->set_parent_name(p.parent_name);
  out->set_parent_cmdline(p.parent_cmdline);
  out->set_known(p.known);
}

void ToProto(const coexist::LockHold& h, v1::LockHold* out) {
  ToProto(h.holder, out->mutable_holder());
  out->set_start_unix_us(absl::ToUnixMicros(h.start));
  out->set_held_seconds(absl::ToDoubleSeconds(h.held));
  out->set_in_progress(h.in_progress);
  out->set_max_waiters(static_cast<uint32_t>(h.max_waiters));
  for (const coexist::ProcessInfo& w : h.waiters) ToProto(w, out->add_waiters());
}

}  // namespace

grpc::ServerWriteReactor<v1::Transaction>* DiagnosticsService::WatchTransactions(
    grpc::CallbackServerContext* c, const v1::WatchTransactionsRequest* req) {
  if (absl::Status s = ctx_->Authorize(c, false, "Diagnostics/WatchTransactions"); !s.ok()) {
    return new FailedStream(ToGrpcStatus(s));
  }
  if (ctx_->options().commits == nullptr) {
    return new FailedStream(ToGrpcStatus(absl::UnimplementedError("WatchTransactions: no commit stream wired")));
  }
  return new WatchReactor(ctx_->options().commits, ctx_->engine(), req->backlog());
}

grpc::ServerUnaryReactor* DiagnosticsService::GetLockStats(grpc::CallbackServerContext* c,
                                                           const v1::GetLockStatsRequest* req,
                                                           v1::GetLockStatsResponse* resp) {
  if (absl::Status s = ctx_->Authorize(c, false, "Diagnostics/GetLockStats"); !s.ok()) return FinishNow(c, s);
  std::optional<coexist::LockStats> st;
  if (ctx_->options().lock_stats) st = ctx_->options().lock_stats();
  if (!st) {
    resp->set_monitoring(false);
    return FinishNow(c, absl::OkStatus());
  }
  resp->set_monitoring(true);
  resp->set_path(st->path);
  resp->set_file_state(st->file_state);
  resp->set_file_detail(st->file_detail);
  if (st->current) ToProto(*st->current, resp->mutable_current());
  for (const coexist::ProcessInfo& w : st->waiters_now) ToProto(w, resp->add_waiters());
  resp->set_holds(st->holds);
  resp->set_long_holds(st->long_holds);
  resp->set_opens(st->opens);
  resp->set_longest_hold_seconds(absl::ToDoubleSeconds(st->longest_hold));
  resp->set_long_hold_threshold_seconds(absl::ToDoubleSeconds(st->long_hold_threshold));
  size_t want = req->recent() ? req->recent() : 20;
  size_t first = st->recent.size() > want ? st->recent.size() - want : 0;
  for (size_t i = first; i < st->recent.size(); ++i) ToProto(st->recent[i], resp->add_recent());
  std::vector<std::pair<std::string, coexist::HolderTotals>> holders(st->by_holder.begin(), st->by_holder.end());
  std::sort(holders.begin(), holders.end(), [](const auto& a, const auto& b) { return a.second.total > b.second.total; });
  for (const auto& [name, t] : holders) {
    v1::LockHolderTotals* h = resp->add_holders();
    h->set_holder(name);
    h->set_holds(t.holds);
    h->set_total_seconds(absl::ToDoubleSeconds(t.total));
    h->set_longest_seconds(absl::ToDoubleSeconds(t.longest));
    h->set_example(t.example);
  }
  v1::IptablesBackends* b = resp->mutable_backends();
  for (const auto& x : st->backends.legacy_tables) b->add_legacy_tables(x);
  for (const auto& x : st->backends.nft_tables) b->add_nft_tables(x);
  for (const auto& x : st->backends.kube_hints) b->add_kube_hints(x);
  for (const auto& x : st->backends.kube_proxy_nft) b->add_kube_proxy_nft(x);
  b->set_legacy_in_use(st->backends.legacy_in_use);
  b->set_nft_in_use(st->backends.nft_in_use);
  b->set_mixed(st->backends.mixed);
  b->set_summary(st->backends.summary);
  b->set_error(st->backends_error);
  if (st->backends_checked != absl::Time()) b->set_checked_unix_us(absl::ToUnixMicros(st->backends_checked));
  return FinishNow(c, absl::OkStatus());
}

grpc::ServerUnaryReactor* DiagnosticsService::GetBringupReport(grpc::CallbackServerContext* c,
                                                               const v1::GetBringupReportRequest* req,
                                                               v1::GetBringupReportResponse* resp) {
  if (absl::Status s = ctx_->Authorize(c, false, "Diagnostics/GetBringupReport"); !s.ok()) return FinishNow(c, s);
  bringup::BringupRecorder* rec = ctx_->options().bringup;
  if (rec == nullptr) return FinishNow(c, absl::UnimplementedError("GetBringupReport: no bring-up recorder wired"));
  *resp->mutable_current() = rec->Current();
  for (v1::BringupReport& r : rec->Previous(req->previous() ? req->previous() : 5)) {
    *resp->add_previous() = std::move(r);
  }
  return FinishNow(c, absl::OkStatus());
}

}  // namespace ruleplane::api
