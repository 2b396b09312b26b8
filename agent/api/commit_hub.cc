#include "agent/api/commit_hub.h"

#include "absl/status/status.h"

namespace ruleplane::api {

v1::Transaction TransactionToProto(const txn::CommitInfo& ci) {
  v1::Transaction t;
  t.set_id(ci.id);
  t.set_kind(ci.kind);
  t.set_reason(ci.reason);
  t.set_start_unix_us(absl::ToUnixMicros(ci.start));
  t.set_mutations(static_cast<uint32_t>(ci.mutations));
  t.set_rejected(static_cast<uint32_t>(ci.rejected));
  t.set_messages(ci.messages);
  t.set_elements(ci.elements);
  t.set_attempts(static_cast<uint32_t>(ci.attempts));
  t.set_queue_wait_max_us(static_cast<uint64_t>(absl::ToInt64Microseconds(ci.queue_wait_max)));
  t.set_render_us(static_cast<uint64_t>(absl::ToInt64Microseconds(ci.render)));
  t.set_commit_us(static_cast<uint64_t>(absl::ToInt64Microseconds(ci.commit)));
  t.set_result(ci.status.ok() ? "OK" : std::string(absl::StatusCodeToString(ci.status.code())));
  t.set_error(std::string(ci.status.message()));
  t.set_failing_op(ci.failing_op);
  return t;
}

void CommitHub::Publish(const txn::CommitInfo& info) {
  absl::MutexLock lock(&mu_);
  if (subscribers_.empty()) return;
  v1::Transaction t = TransactionToProto(info);
  for (Subscriber* s : subscribers_) s->OnTransaction(t);
}

void CommitHub::Add(Subscriber* s) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) {
    s->OnShutdown();
    return;
  }
  subscribers_.insert(s);
}

void CommitHub::Remove(Subscriber* s) {
  absl::MutexLock lock(&mu_);
  subscribers_.erase(s);
}

void CommitHub::Shutdown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  for (Subscriber* s : subscribers_) s->OnShutdown();
}

size_t CommitHub::watchers() const {
  absl::MutexLock lock(&mu_);
  return subscribers_.size();
}

}  // namespace ruleplane::api
