// FakeNftPort: an in-memory nftables table with batch semantics (all ops of
// a plan apply, or none), for engine tests without a kernel. Errors can be
// injected per element key. Several ports may share one FakeKernel, so a
// "restarted" engine sees what the previous one left behind.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "agent/render/plan.h"
#include "agent/txn/nft_port.h"

namespace ruleplane::testing {

struct FakeKernel {
  absl::Mutex mu;
  std::optional<txn::KernelTable> table;  // nullopt: no table
  int commits = 0;                        // successful commits
  int rejected = 0;                       // rejected batches
  std::vector<render::Plan> plans;        // every plan received
  // An element whose key matches is refused with this status.
  std::map<std::vector<uint8_t>, absl::Status> element_errors;
  // Refuse a whole op (no element index) when the predicate says so.
  std::function<std::optional<absl::Status>(const render::Op&)> op_error;
  // Runs inside Commit before applying (e.g. to block or count).
  std::function<void()> on_commit;
  // Next commit reports outcome_unknown after applying the batch.
  bool lose_next_ack = false;

  size_t ElementCount(const std::string& set);
  bool HasElement(const std::string& set, const std::vector<uint8_t>& key);
};

class FakeNftPort : public txn::NftPort {
 public:
  explicit FakeNftPort(std::shared_ptr<FakeKernel> kernel) : kernel_(std::move(kernel)) {}
  txn::CommitReport Commit(const render::Plan& plan) override;
  absl::StatusOr<txn::KernelTable> Dump(std::string_view table, uint32_t family) override;

 private:
  std::shared_ptr<FakeKernel> kernel_;
};

}  // namespace ruleplane::testing
