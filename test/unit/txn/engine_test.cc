// Engine against FakeNftPort: group commit, ordering, culprit isolation,
// drift, restart adoption. No privileges.
#include "agent/txn/engine.h"

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "test/fakes/fake_nft_port.h"
#include "test/unit/test_util.h"

namespace ruleplane::txn {
namespace {

using core::Mutation;
using ruleplane::testing::FakeKernel;
using ruleplane::testing::FakeNftPort;
using ruleplane::testing::Ip;
using ruleplane::testing::Pod;
using ruleplane::testing::Tcp;

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("rp-engine-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    kernel_ = std::make_shared<FakeKernel>();
  }
  void TearDown() override {
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }
  void StartEngine(absl::Duration periodic_resync = absl::Minutes(10)) {
    engine_.reset();
    EngineOptions opts;
    opts.state_dir = dir_.string();
    opts.periodic_resync = periodic_resync;
    auto e = Engine::Create(opts, std::make_unique<FakeNftPort>(kernel_), &registry_);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    ASSERT_TRUE(engine_->Start().ok());
  }
  int Commits() {
    absl::MutexLock l(&kernel_->mu);
    return kernel_->commits;
  }

  std::filesystem::path dir_;
  std::shared_ptr<FakeKernel> kernel_;
  metrics::Registry registry_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, StartCommitsBaseRulesetOnce) {
  StartEngine();
  EXPECT_EQ(Commits(), 1);
  absl::MutexLock l(&kernel_->mu);
  ASSERT_TRUE(kernel_->table.has_value());
  EXPECT_EQ(kernel_->table->chains.size(), 4u);
  EXPECT_EQ(kernel_->table->sets.size(), 8u);
}

TEST_F(EngineTest, AddAndDeleteReachTheKernel) {
  StartEngine();
  MutationResult r = engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.0.0.2", {Tcp(8080, 80)})));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_GT(r.commit_id, 0u);
  EXPECT_TRUE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.2").bytes()));
  EXPECT_EQ(kernel_->ElementCount("hostport-v4"), 1u);
  EXPECT_EQ(kernel_->ElementCount("hairpin-v4"), 1u);
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Delete({"a", "eth0"})).status.ok());
  EXPECT_EQ(kernel_->ElementCount("pod-ipv4"), 0u);
  EXPECT_EQ(kernel_->ElementCount("hostport-v4"), 0u);
}

TEST_F(EngineTest, IdempotentAddAndUnknownDeleteNeedNoCommit) {
  StartEngine();
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.0.0.2"))).status.ok());
  int before = Commits();
  MutationResult again = engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.0.0.2")));
  EXPECT_TRUE(again.status.ok());
  EXPECT_TRUE(engine_->SubmitAndWait(Mutation::Delete({"ghost", "eth0"})).status.ok());
  EXPECT_EQ(Commits(), before);
}

TEST_F(EngineTest, GroupCommitFoldsConcurrentMutations) {
  StartEngine();
  // Hold the writer inside the first commit so that the other 99 pile up.
  absl::Notification release;
  std::atomic<int> entered{0};
  kernel_->on_commit = [&] {
    if (entered.fetch_add(1) == 0) release.WaitForNotification();
  };
  int base = Commits();
  constexpr int kN = 100;
  std::atomic<int> ok{0};
  absl::Mutex mu;
  int done = 0;
  for (int i = 0; i < kN; ++i) {
    engine_->Submit(Mutation::Upsert(Pod("c" + std::to_string(i), "10.1.0." + std::to_string(i + 1))),
                    [&](const MutationResult& r) {
                      if (r.status.ok()) ok.fetch_add(1);
                      absl::MutexLock l(&mu);
                      ++done;
                    });
    if (i == 0) {
      while (entered.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  while (engine_->QueueDepth() < kN - 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  release.Notify();
  {
    absl::MutexLock l(&mu);
    mu.Await(absl::Condition(+[](int* d) { return *d == kN; }, &done));
  }
  EXPECT_EQ(ok.load(), kN);
  EXPECT_EQ(Commits() - base, 2) << "one commit for the first, one for the other 99";
  EXPECT_EQ(kernel_->ElementCount("pod-ipv4"), static_cast<size_t>(kN));
}

TEST_F(EngineTest, MutationsForOneContainerApplyInArrivalOrder) {
  StartEngine();
  absl::Notification release;
  std::atomic<int> entered{0};
  kernel_->on_commit = [&] {
    if (entered.fetch_add(1) == 0) release.WaitForNotification();
  };
  std::atomic<int> completed{0};
  auto count = [&](const MutationResult&) { completed.fetch_add(1); };
  engine_->Submit(Mutation::Upsert(Pod("blocker", "10.9.9.9")), count);
  while (entered.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // Same container: add v1, delete, add v2, delete, add v3 — all in one batch.
  engine_->Submit(Mutation::Upsert(Pod("x", "10.0.0.1", {Tcp(81, 80)})), count);
  engine_->Submit(Mutation::Delete({"x", "eth0"}), count);
  engine_->Submit(Mutation::Upsert(Pod("x", "10.0.0.2", {Tcp(82, 80)})), count);
  engine_->Submit(Mutation::Delete({"x", "eth0"}), count);
  engine_->Submit(Mutation::Upsert(Pod("x", "10.0.0.3", {Tcp(83, 80)})), count);
  release.Notify();
  while (completed.load() < 6) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.3").bytes()));
  EXPECT_FALSE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.1").bytes()));
  EXPECT_FALSE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.2").bytes()));
  EXPECT_EQ(kernel_->ElementCount("hostport-v4"), 1u);
}

TEST_F(EngineTest, KernelRefusalFailsOnlyTheCulprit) {
  StartEngine();
  kernel_->element_errors[Ip("10.0.0.66").bytes()] = absl::ResourceExhaustedError("No space left on device");
  absl::Notification release;
  std::atomic<int> entered{0};
  kernel_->on_commit = [&] {
    if (entered.fetch_add(1) == 0) release.WaitForNotification();
  };
  absl::Mutex mu;
  std::map<std::string, absl::Status> results;
  auto record = [&](std::string id) {
    return [&, id](const MutationResult& r) {
      absl::MutexLock l(&mu);
      results[id] = r.status;
    };
  };
  engine_->Submit(Mutation::Upsert(Pod("first", "10.0.0.1")), record("first"));
  while (entered.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  engine_->Submit(Mutation::Upsert(Pod("good1", "10.0.0.10")), record("good1"));
  engine_->Submit(Mutation::Upsert(Pod("bad", "10.0.0.66")), record("bad"));
  engine_->Submit(Mutation::Upsert(Pod("good2", "10.0.0.11")), record("good2"));
  release.Notify();
  {
    absl::MutexLock l(&mu);
    mu.Await(absl::Condition(+[](std::map<std::string, absl::Status>* m) { return m->size() == 4; }, &results));
  }
  EXPECT_TRUE(results["good1"].ok()) << results["good1"];
  EXPECT_TRUE(results["good2"].ok()) << results["good2"];
  EXPECT_EQ(results["bad"].code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(results["bad"].message().find("upsert bad/eth0"), std::string::npos) << results["bad"];
  EXPECT_NE(results["bad"].message().find("pod-ipv4"), std::string::npos) << results["bad"];
  EXPECT_TRUE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.10").bytes()));
  EXPECT_TRUE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.11").bytes()));
  EXPECT_FALSE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.66").bytes()));
  // The model was rolled back for the culprit too.
  absl::Status inspected = engine_->Inspect([](const core::DesiredState& s, const render::ElementIndex&) {
    EXPECT_EQ(s.Find({"bad", "eth0"}), nullptr);
    EXPECT_NE(s.Find({"good1", "eth0"}), nullptr);
  });
  EXPECT_TRUE(inspected.ok());
}

TEST_F(EngineTest, UnattributedRefusalFallsBackToOneByOne) {
  StartEngine();
  // A refusal on the whole op (no element index) with mixed origins.
  std::atomic<bool> refuse_batches{true};
  kernel_->op_error = [&](const render::Op& o) -> std::optional<absl::Status> {
    const auto* add = std::get_if<render::op::AddElements>(&o);
    if (!add || add->elements.size() < 2 || !refuse_batches.load()) return std::nullopt;
    for (const auto& e : add->elements) {
      if (e.text == "10.0.0.66") return absl::InvalidArgumentError("Invalid argument");
    }
    return std::nullopt;
  };
  kernel_->element_errors[Ip("10.0.0.66").bytes()] = absl::InvalidArgumentError("Invalid argument");
  absl::Notification release;
  std::atomic<int> entered{0};
  kernel_->on_commit = [&] {
    if (entered.fetch_add(1) == 0) release.WaitForNotification();
  };
  absl::Mutex mu;
  std::map<std::string, absl::Status> results;
  auto record = [&](std::string id) {
    return [&, id](const MutationResult& r) {
      absl::MutexLock l(&mu);
      results[id] = r.status;
    };
  };
  engine_->Submit(Mutation::Upsert(Pod("first", "10.0.0.1")), record("first"));
  while (entered.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  engine_->Submit(Mutation::Upsert(Pod("good1", "10.0.0.10")), record("good1"));
  engine_->Submit(Mutation::Upsert(Pod("bad", "10.0.0.66")), record("bad"));
  release.Notify();
  {
    absl::MutexLock l(&mu);
    mu.Await(absl::Condition(+[](std::map<std::string, absl::Status>* m) { return m->size() == 3; }, &results));
  }
  EXPECT_TRUE(results["good1"].ok()) << results["good1"];
  EXPECT_FALSE(results["bad"].ok());
  EXPECT_TRUE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.10").bytes()));
}

TEST_F(EngineTest, ValidationRejectionDoesNotReachKernelOrNeighbours) {
  StartEngine();
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.0.0.2", {Tcp(8080, 80)}))).status.ok());
  MutationResult conflict = engine_->SubmitAndWait(Mutation::Upsert(Pod("b", "10.0.0.3", {Tcp(8080, 80)})));
  EXPECT_EQ(conflict.status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.3").bytes()));
}

TEST_F(EngineTest, DriftIsRepairedByResync) {
  StartEngine();
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.0.0.2", {Tcp(8080, 80)}))).status.ok());
  {
    absl::MutexLock l(&kernel_->mu);
    kernel_->table.reset();  // `nft flush ruleset`
  }
  engine_->RequestResync("test flushed the ruleset");
  // The counter is bumped after the commit the fake already shows: wait for both.
  for (int i = 0; i < 200 && (kernel_->ElementCount("hostport-v4") == 0 || engine_->drift_repairs() == 0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(kernel_->ElementCount("hostport-v4"), 1u);
  EXPECT_TRUE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.2").bytes()));
  EXPECT_GE(engine_->drift_repairs(), 1u);
}

TEST_F(EngineTest, PeriodicFullSyncRepairsSilentDrift) {
  StartEngine(absl::Milliseconds(50));
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.0.0.2"))).status.ok());
  {
    absl::MutexLock l(&kernel_->mu);
    kernel_->table->sets["pod-ipv4"].elements.clear();  // nobody tells the engine
  }
  for (int i = 0; i < 400 && !kernel_->HasElement("pod-ipv4", Ip("10.0.0.2").bytes()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.2").bytes()));
}

TEST_F(EngineTest, ReconfigureMovesChainsInOneTransaction) {
  StartEngine();
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.0.0.2", {Tcp(8080, 80)}))).status.ok());
  render::Layout moved;
  moved.snat_priority = 120;
  ASSERT_TRUE(engine_->Reconfigure(moved).ok());
  absl::MutexLock l(&kernel_->mu);
  EXPECT_EQ(kernel_->table->chains["nat-postrouting"].base->priority, 120);
  EXPECT_FALSE(kernel_->table->chains["nat-postrouting"].rules.empty());
  EXPECT_EQ(kernel_->table->sets["hostport-v4"].elements.size(), 1u) << "elements untouched";
  render::Layout renamed;
  renamed.table = "ruleplane-other";
  kernel_->mu.Unlock();
  EXPECT_EQ(engine_->Reconfigure(renamed).code(), absl::StatusCode::kFailedPrecondition);
  kernel_->mu.Lock();
}

TEST_F(EngineTest, CommitAfterUnnoticedDriftRepairsAndSucceeds) {
  StartEngine();
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.0.0.2"))).status.ok());
  {
    absl::MutexLock l(&kernel_->mu);
    kernel_->table.reset();
  }
  // No resync requested: the next commit fails with ENOENT, repairs, retries.
  MutationResult r = engine_->SubmitAndWait(Mutation::Upsert(Pod("b", "10.0.0.3")));
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_TRUE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.2").bytes()));
  EXPECT_TRUE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.3").bytes()));
}

TEST_F(EngineTest, UnknownOutcomeIsResolvedByResync) {
  StartEngine();
  kernel_->lose_next_ack = true;
  MutationResult r = engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.0.0.2")));
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_TRUE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.2").bytes()));
}

TEST_F(EngineTest, RestartAdoptsKernelWithZeroDiff) {
  StartEngine();
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(engine_->SubmitAndWait(
                           Mutation::Upsert(Pod("p" + std::to_string(i), "10.2.0." + std::to_string(i + 1),
                                                {Tcp(static_cast<uint16_t>(9000 + i), 80)})))
                    .status.ok());
  }
  engine_->Stop();
  size_t plans_before;
  {
    absl::MutexLock l(&kernel_->mu);
    plans_before = kernel_->plans.size();
  }
  StartEngine();
  absl::MutexLock l(&kernel_->mu);
  ASSERT_EQ(kernel_->plans.size(), plans_before + 1);
  const render::Plan& adopt = kernel_->plans.back();
  ASSERT_EQ(adopt.ops.size(), 1u) << render::PlanToText(adopt);
  EXPECT_TRUE(std::holds_alternative<render::op::AddTable>(adopt.ops[0]))
      << "only the ownership claim; no flush, no element churn";
}

TEST_F(EngineTest, LostCheckpointKeepsKernelElementsUntilGc) {
  StartEngine();
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.0.0.2", {Tcp(8080, 80)}))).status.ok());
  engine_.reset();
  std::filesystem::remove_all(dir_);  // the state dir is wiped
  StartEngine();
  EXPECT_TRUE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.2").bytes())) << "no disruption";
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Retain({})).status.ok());
  EXPECT_FALSE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.2").bytes())) << "GC removes orphans";
}

TEST_F(EngineTest, CorruptCheckpointIsReportedNotFatal) {
  StartEngine();
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.0.0.2"))).status.ok());
  engine_.reset();
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "checkpoint.pb") << "garbage that is not a checkpoint";
  StartEngine();
  EXPECT_TRUE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.2").bytes()));
}

TEST_F(EngineTest, StopFailsQueuedWithUnavailable) {
  StartEngine();
  absl::Notification release;
  std::atomic<int> entered{0};
  kernel_->on_commit = [&] {
    if (entered.fetch_add(1) == 0) release.WaitForNotification();
  };
  std::atomic<int> unavailable{0}, done{0};
  auto cb = [&](const MutationResult& r) {
    if (absl::IsUnavailable(r.status)) unavailable.fetch_add(1);
    done.fetch_add(1);
  };
  engine_->Submit(Mutation::Upsert(Pod("a", "10.0.0.2")), cb);
  while (entered.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  engine_->Submit(Mutation::Upsert(Pod("b", "10.0.0.3")), cb);
  std::thread stopper([&] { engine_->Stop(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  release.Notify();
  stopper.join();
  EXPECT_EQ(done.load(), 2);
  EXPECT_EQ(unavailable.load(), 1);
}

TEST_F(EngineTest, MetricsCountCommitsAndWaits) {
  StartEngine();
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.0.0.2"))).status.ok());
  std::string text = registry_.Render();
  for (const char* name :
       {"ruleplane_txn_queue_wait_seconds_count 1", "ruleplane_txn_commits_total{result=\"success\"} 2",
        "ruleplane_txn_batch_mutations_count 1", "ruleplane_txn_queue_depth 0",
        "ruleplane_txn_last_commit_timestamp_seconds", "ruleplane_txn_last_queued_timestamp_seconds",
        "ruleplane_drift_repairs_total 0", "ruleplane_txn_commit_seconds_bucket"}) {
    EXPECT_NE(text.find(name), std::string::npos) << name << "\n" << text;
  }
}

}  // namespace
}  // namespace ruleplane::txn
