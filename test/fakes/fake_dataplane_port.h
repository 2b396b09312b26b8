// FakeDataplanePort: records what the engine asks of the BPF dataplane
// (converges with their plans and pods, pod deltas) and can be told to fail.
// Thread-safe: the engine's writer calls it, the test reads it.
#pragma once

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "agent/txn/dataplane_port.h"

namespace ruleplane::testing {

class FakeDataplanePort : public txn::DataplanePort {
 public:
  struct Converged {
    render::BpfSnatPlan plan;
    std::vector<render::Ipv4Bytes> pods;
  };

  absl::Status Converge(const render::BpfSnatPlan& plan, const std::vector<render::Ipv4Bytes>& pods) override;
  absl::Status UpdatePods(const std::vector<render::Ipv4Bytes>& added,
                          const std::vector<render::Ipv4Bytes>& removed) override;
  void Release() override;
  std::string Describe() const override { return "fake dataplane"; }

  // The next `n` Converge() calls fail with `status`.
  void FailConverges(int n, absl::Status status);
  // The next UpdatePods() fails with `status`.
  void FailNextUpdate(absl::Status status);
  // Runs at the start of every Converge() (e.g. to look at the nftables
  // fake at that moment). Set before the engine starts.
  std::function<void(const render::BpfSnatPlan&)> on_converge;

  std::vector<Converged> converges() const;
  // The pods the dataplane holds now (after converges and deltas).
  std::set<render::Ipv4Bytes> pods() const;
  bool enabled() const;
  int updates() const;
  bool released() const;

 private:
  mutable absl::Mutex mu_;
  std::vector<Converged> converges_ ABSL_GUARDED_BY(mu_);
  std::set<render::Ipv4Bytes> pods_ ABSL_GUARDED_BY(mu_);
  bool enabled_ ABSL_GUARDED_BY(mu_) = false;
  int updates_ ABSL_GUARDED_BY(mu_) = 0;
  int fail_converges_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status converge_error_ ABSL_GUARDED_BY(mu_);
  absl::Status update_error_ ABSL_GUARDED_BY(mu_);
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ruleplane::testing
