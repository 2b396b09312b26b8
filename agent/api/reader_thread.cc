#include "agent/api/reader_thread.h"

namespace ruleplane::api {

ReaderThread::ReaderThread() : thread_([this] { Run(); }) {}

ReaderThread::~ReaderThread() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void ReaderThread::Post(absl::AnyInvocable<void(bool) &&> job) {
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      jobs_.push_back(std::move(job));
      return;
    }
  }
  std::move(job)(true);
}

void ReaderThread::Run() {
  for (;;) {
    absl::AnyInvocable<void(bool) &&> job;
    bool stopping;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ReaderThread* t) ABSL_NO_THREAD_SAFETY_ANALYSIS { return t->stopping_ || !t->jobs_.empty(); },
          this));
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
      stopping = stopping_;
    }
    std::move(job)(stopping);
  }
}

}  // namespace ruleplane::api
