#include "test/fakes/fake_dataplane_port.h"

namespace ruleplane::testing {

absl::Status FakeDataplanePort::Converge(const render::BpfSnatPlan& plan,
                                         const std::vector<render::Ipv4Bytes>& pods) {
  if (on_converge) on_converge(plan);
  absl::MutexLock lock(&mu_);
  converges_.push_back({plan, pods});
  if (fail_converges_ > 0) {
    --fail_converges_;
    return converge_error_;
  }
  enabled_ = plan.enabled;
  pods_ = plan.enabled ? std::set<render::Ipv4Bytes>(pods.begin(), pods.end()) : std::set<render::Ipv4Bytes>{};
  return absl::OkStatus();
}

absl::Status FakeDataplanePort::UpdatePods(const std::vector<render::Ipv4Bytes>& added,
                                           const std::vector<render::Ipv4Bytes>& removed) {
  absl::MutexLock lock(&mu_);
  ++updates_;
  if (!update_error_.ok()) return std::exchange(update_error_, absl::OkStatus());
  for (const auto& p : removed) pods_.erase(p);
  for (const auto& p : added) pods_.insert(p);
  return absl::OkStatus();
}

void FakeDataplanePort::Release() {
  absl::MutexLock lock(&mu_);
  released_ = true;
}

void FakeDataplanePort::FailConverges(int n, absl::Status status) {
  absl::MutexLock lock(&mu_);
  fail_converges_ = n;
  converge_error_ = std::move(status);
}

void FakeDataplanePort::FailNextUpdate(absl::Status status) {
  absl::MutexLock lock(&mu_);
  update_error_ = std::move(status);
}

std::vector<FakeDataplanePort::Converged> FakeDataplanePort::converges() const {
  absl::MutexLock lock(&mu_);
  return converges_;
}

std::set<render::Ipv4Bytes> FakeDataplanePort::pods() const {
  absl::MutexLock lock(&mu_);
  return pods_;
}

bool FakeDataplanePort::enabled() const {
  absl::MutexLock lock(&mu_);
  return enabled_;
}

int FakeDataplanePort::updates() const {
  absl::MutexLock lock(&mu_);
  return updates_;
}

bool FakeDataplanePort::released() const {
  absl::MutexLock lock(&mu_);
  return released_;
}

}  // namespace ruleplane::testing
