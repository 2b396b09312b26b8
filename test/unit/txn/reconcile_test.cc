#include "agent/txn/reconcile.h"

#include "gtest/gtest.h"
#include "test/fakes/fake_nft_port.h"
#include "test/unit/test_util.h"

namespace ruleplane::txn {
namespace {

using ruleplane::testing::FakeKernel;
using ruleplane::testing::FakeNftPort;
using ruleplane::testing::Ip;
using ruleplane::testing::Pod;

render::Plan P(std::vector<render::Op> ops) {
  render::Plan p;
  p.table = "ruleplane";
  p.ops = std::move(ops);
  return p;
}

DesiredElements Desired(const std::vector<core::Attachment>& pods) {
  DesiredElements d;
  for (const auto& a : pods) {
    for (auto& se : render::ElementsOf(a)) d[se.set].push_back(se.element);
  }
  return d;
}

// Applies reconcile against the fake until it is a fixed point.
class ReconcileTest : public ::testing::Test {
 protected:
  std::shared_ptr<FakeKernel> kernel_ = std::make_shared<FakeKernel>();
  FakeNftPort port_{kernel_};
  render::BaseRuleset base_ = render::RenderBase(render::Layout{});

  std::vector<render::Op> Step(const DesiredElements& d, ReconcileSummary* sum = nullptr) {
    KernelTable t = *port_.Dump("ruleplane", 1);
    std::vector<render::Op> ops = Reconcile(base_, d, t, sum);
    if (!ops.empty()) {
      CommitReport r = port_.Commit(P(ops));
      EXPECT_TRUE(r.status.ok()) << r.status << "\n" << render::PlanToText(P(ops));
    }
    return ops;
  }
};

TEST_F(ReconcileTest, FromNothingCreatesEverythingThenIsAFixedPoint) {
  DesiredElements d = Desired({Pod("a", "10.0.0.2"), Pod("b", "10.0.0.3")});
  ReconcileSummary sum;
  EXPECT_FALSE(Step(d, &sum).empty());
  EXPECT_TRUE(sum.table_created);
  EXPECT_EQ(kernel_->ElementCount("pod-ipv4"), 2u);
  EXPECT_TRUE(Step(d).empty()) << "second pass must be a no-op";
}

TEST_F(ReconcileTest, RemovesForeignElementsAndRestoresMissingOnes) {
  DesiredElements d = Desired({Pod("a", "10.0.0.2")});
  Step(d);
  {
    absl::MutexLock l(&kernel_->mu);
    auto& els = kernel_->table->sets["pod-ipv4"].elements;
    els.clear();
    els.push_back(KernelElement{Ip("10.9.9.9").bytes(), {}, "foreign"});
  }
  ReconcileSummary sum;
  Step(d, &sum);
  EXPECT_EQ(sum.elements_added, 1u);
  EXPECT_EQ(sum.elements_deleted, 1u);
  EXPECT_TRUE(kernel_->HasElement("pod-ipv4", Ip("10.0.0.2").bytes()));
  EXPECT_FALSE(kernel_->HasElement("pod-ipv4", Ip("10.9.9.9").bytes()));
}

TEST_F(ReconcileTest, ForeignRuleInOurChainRewritesThatChainOnly) {
  Step({});
  {
    absl::MutexLock l(&kernel_->mu);
    kernel_->table->chains["nat-output"].rules.push_back(KernelRule{"someone else", 99});
  }
  std::vector<render::Op> ops = Step({});
  ASSERT_FALSE(ops.empty());
  int flushes = 0;
  for (const auto& o : ops) {
    if (const auto* f = std::get_if<render::op::FlushChain>(&o)) {
      ++flushes;
      EXPECT_EQ(f->chain, "nat-output");
    }
  }
  EXPECT_EQ(flushes, 1);
  EXPECT_TRUE(Step({}).empty());
}

TEST_F(ReconcileTest, ChangedPriorityRecreatesTheChainInOneBatch) {
  Step({});
  render::Layout moved;
  moved.snat_priority = 120;
  base_ = render::RenderBase(moved);
  ReconcileSummary sum;
  std::vector<render::Op> ops = Step({}, &sum);
  EXPECT_GE(sum.chains_rewritten, 1u);
  absl::MutexLock l(&kernel_->mu);
  EXPECT_EQ(kernel_->table->chains["nat-postrouting"].base->priority, 120);
  EXPECT_FALSE(kernel_->table->chains["nat-postrouting"].rules.empty());
}

TEST_F(ReconcileTest, ExtraSetIsDeleted) {
  Step({});
  {
    absl::MutexLock l(&kernel_->mu);
    kernel_->table->sets["leftover"] = KernelSet{};
  }
  Step({});
  absl::MutexLock l(&kernel_->mu);
  EXPECT_FALSE(kernel_->table->sets.count("leftover"));
}

}  // namespace
}  // namespace ruleplane::txn
