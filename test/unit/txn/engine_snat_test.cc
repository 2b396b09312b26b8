// Engine + SNAT: the backend's nftables objects in the base ruleset, the
// BPF dataplane port driven from the writer (converge, pod deltas, retry,
// ordering on mode switches, rollback), and dynamic (steering) elements.
// Fakes only; no privileges.
#include <filesystem>

#include "agent/backend/nft_snat_backend.h"
#include "agent/txn/engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test/fakes/fake_dataplane_port.h"
#include "test/fakes/fake_nft_port.h"
#include "test/unit/test_util.h"

namespace ruleplane::txn {
namespace {

using core::Mutation;
using ruleplane::testing::FakeDataplanePort;
using ruleplane::testing::FakeKernel;
using ruleplane::testing::FakeNftPort;
using ruleplane::testing::Ip;
using ruleplane::testing::Pod;
using ::testing::HasSubstr;

core::SnatSettings Snat(core::SnatMode mode) {
  core::SnatSettings s;
  s.mode = mode;
  s.egress_interfaces = {"eth0"};
  s.egress_ipv4 = {Ip("192.0.2.1"), Ip("192.0.2.2")};
  s.exclude_ipv4 = {*core::IpPrefix::Parse("10.0.0.0/8")};
  s.ports = {61000, 61001};
  return s;
}

render::Ipv4Bytes V4(const char* ip) {
  std::vector<uint8_t> b = Ip(ip).bytes();
  return {b[0], b[1], b[2], b[3]};
}

class EngineSnatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("rp-engine-snat-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    kernel_ = std::make_shared<FakeKernel>();
    dataplane_ = std::make_shared<FakeDataplanePort>();
  }
  void TearDown() override {
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }
  absl::Status StartEngine(core::SnatSettings snat) {
    engine_.reset();
    EngineOptions opts;
    opts.state_dir = dir_.string();
    opts.layout.snat = std::move(snat);
    opts.dataplane = dataplane_;
    opts.dataplane_retry = absl::Milliseconds(10);
    auto e = Engine::Create(opts, std::make_unique<FakeNftPort>(kernel_), &registry_);
    if (!e.ok()) return e.status();
    engine_ = std::move(*e);
    return engine_->Start();
  }
  render::Layout LayoutWith(core::SnatSettings snat) {
    render::Layout l;
    l.snat = std::move(snat);
    return l;
  }
  bool HasChain(const std::string& chain) {
    absl::MutexLock l(&kernel_->mu);
    return kernel_->table && kernel_->table->chains.count(chain) > 0;
  }
  bool HasSet(const std::string& set) {
    absl::MutexLock l(&kernel_->mu);
    return kernel_->table && kernel_->table->sets.count(set) > 0;
  }
  std::vector<KernelElement> Elements(const std::string& set) {
    absl::MutexLock l(&kernel_->mu);
    if (!kernel_->table || !kernel_->table->sets.count(set)) return {};
    return kernel_->table->sets.at(set).elements;
  }
  int Commits() {
    absl::MutexLock l(&kernel_->mu);
    return kernel_->commits;
  }
  render::SetElement SteerElement(const char* dest, const char* to) {
    std::vector<uint8_t> key = Ip(dest).bytes();
    for (uint8_t b : {6, 0, 0, 0, 0x01, 0xbb, 0, 0}) key.push_back(b);  // tcp . 443
    return render::SetElement{backend::kMapSnatSteerV4, render::Element{key, Ip(to).bytes(), "test", "steer", 0, 0}};
  }

  std::filesystem::path dir_;
  std::shared_ptr<FakeKernel> kernel_;
  std::shared_ptr<FakeDataplanePort> dataplane_;
  metrics::Registry registry_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineSnatTest, NftablesModeCommitsRulesAndConfigElements) {
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kNftables)).ok());
  EXPECT_TRUE(HasChain("snat-v4"));
  EXPECT_EQ(Elements("snat-egress-ifs").size(), 1u);
  // 10.0.0.0/8 is an interval: a start element and an end element.
  std::vector<KernelElement> excl = Elements("snat-exclude-v4");
  ASSERT_EQ(excl.size(), 2u);
  EXPECT_EQ(excl[0].key, Ip("10.0.0.0").bytes());
  EXPECT_EQ(excl[1].key, Ip("11.0.0.0").bytes());
  EXPECT_NE(excl[1].flags, 0u);
  EXPECT_EQ(engine_->snat_mode(), core::SnatMode::kNftables);
  // The dataplane is told to hold nothing.
  ASSERT_FALSE(dataplane_->converges().empty());
  EXPECT_FALSE(dataplane_->converges().back().plan.enabled);
}

TEST_F(EngineSnatTest, ResyncOfAnUnchangedTableCommitsNothing) {
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kNftables)).ok());
  const int before = Commits();
  engine_->RequestResync("test");
  // Inspect runs after the resync on the writer.
  ASSERT_TRUE(engine_->Inspect([](const core::DesiredState&, const render::ElementIndex&) {}).ok());
  EXPECT_EQ(Commits(), before) << "interval ends must read back as the same elements";
}

TEST_F(EngineSnatTest, BpfModeMirrorsPodsIntoTheDataplane) {
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kBpf)).ok());
  EXPECT_FALSE(HasChain("snat-v4")) << "bpf mode has no nftables SNAT rules";
  ASSERT_TRUE(dataplane_->enabled());
  EXPECT_EQ(dataplane_->converges().back().plan.egress.size(), 2u);
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.22.0.2"))).status.ok());
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Upsert(Pod("b", "10.22.0.3"))).status.ok());
  EXPECT_EQ(dataplane_->pods(), (std::set<render::Ipv4Bytes>{V4("10.22.0.2"), V4("10.22.0.3")}));
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Delete({"a", "eth0"})).status.ok());
  EXPECT_EQ(dataplane_->pods(), (std::set<render::Ipv4Bytes>{V4("10.22.0.3")}));
  EXPECT_GE(dataplane_->updates(), 3);
}

TEST_F(EngineSnatTest, RestartConvergesWithThePodsOfTheCheckpoint) {
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kBpf)).ok());
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.22.0.2"))).status.ok());
  dataplane_ = std::make_shared<FakeDataplanePort>();
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kBpf)).ok());
  ASSERT_EQ(dataplane_->converges().size(), 1u);
  EXPECT_EQ(dataplane_->converges()[0].pods, std::vector<render::Ipv4Bytes>{V4("10.22.0.2")});
}

TEST_F(EngineSnatTest, FailedPodUpdateIsRepairedByAFullConverge) {
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kBpf)).ok());
  const size_t converges = dataplane_->converges().size();
  dataplane_->FailNextUpdate(absl::UnavailableError("map update failed"));
  MutationResult r = engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.22.0.2")));
  EXPECT_TRUE(r.status.ok()) << "the pod is in nftables and journaled: " << r.status;
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (dataplane_->pods().empty() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ(dataplane_->pods(), std::set<render::Ipv4Bytes>{V4("10.22.0.2")});
  EXPECT_GT(dataplane_->converges().size(), converges);
}

TEST_F(EngineSnatTest, StartFailsWhenTheDataplaneCannotBeSetUp) {
  dataplane_->FailConverges(1, absl::PermissionDeniedError("load snat: no CAP_BPF"));
  absl::Status s = StartEngine(Snat(core::SnatMode::kBpf));
  EXPECT_TRUE(absl::IsPermissionDenied(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("snat dataplane"));
}

TEST_F(EngineSnatTest, SwitchToBpfBringsTheDataplaneUpBeforeTheRulesGo) {
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kNftables)).ok());
  ASSERT_TRUE(engine_->SubmitAndWait(Mutation::Upsert(Pod("a", "10.22.0.2"))).status.ok());
  bool rules_present_at_enable = false;
  bool enabled_once = false;
  dataplane_->on_converge = [&](const render::BpfSnatPlan& plan) {
    if (plan.enabled && !enabled_once) rules_present_at_enable = HasChain("snat-v4");
    enabled_once = enabled_once || plan.enabled;
  };
  ASSERT_TRUE(engine_->Reconfigure(LayoutWith(Snat(core::SnatMode::kBpf))).ok());
  EXPECT_TRUE(rules_present_at_enable) << "new flows must be translated throughout the switch";
  EXPECT_FALSE(HasChain("snat-v4"));
  EXPECT_FALSE(HasSet("snat-exclude-v4"));
  EXPECT_TRUE(dataplane_->enabled());
  EXPECT_EQ(dataplane_->pods(), std::set<render::Ipv4Bytes>{V4("10.22.0.2")});
  EXPECT_EQ(engine_->snat_mode(), core::SnatMode::kBpf);
  dataplane_->on_converge = nullptr;
}

TEST_F(EngineSnatTest, SwitchAwayFromBpfRemovesTheDataplaneAfterTheRulesCome) {
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kBpf)).ok());
  bool rules_present_at_disable = false;
  bool disabled_once = false;
  dataplane_->on_converge = [&](const render::BpfSnatPlan& plan) {
    if (!plan.enabled && !disabled_once) rules_present_at_disable = HasChain("snat-v4");
    disabled_once = disabled_once || !plan.enabled;
  };
  ASSERT_TRUE(engine_->Reconfigure(LayoutWith(Snat(core::SnatMode::kNftables))).ok());
  EXPECT_TRUE(rules_present_at_disable);
  EXPECT_FALSE(dataplane_->enabled());
  dataplane_->on_converge = nullptr;
  ASSERT_TRUE(engine_->Reconfigure(LayoutWith(core::SnatSettings{})).ok());
  EXPECT_FALSE(HasChain("snat-v4"));
  EXPECT_FALSE(dataplane_->enabled());
  EXPECT_EQ(engine_->snat_mode(), core::SnatMode::kOff);
}

TEST_F(EngineSnatTest, FailedSwitchToBpfKeepsTheRunningMode) {
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kNftables)).ok());
  dataplane_->FailConverges(1, absl::InternalError("verifier says no"));
  absl::Status s = engine_->Reconfigure(LayoutWith(Snat(core::SnatMode::kBpf)));
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("verifier says no"));
  EXPECT_TRUE(HasChain("snat-v4")) << "the nftables rules stay";
  EXPECT_EQ(engine_->snat_mode(), core::SnatMode::kNftables);
  EXPECT_FALSE(dataplane_->converges().back().plan.enabled) << "what the failed attempt left is removed";
}

TEST_F(EngineSnatTest, DynamicElementsAreCommittedAdoptedAndDropped) {
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kNftables)).ok());
  ASSERT_TRUE(engine_->SetDynamicElements({SteerElement("198.51.100.9", "192.0.2.2")}).ok());
  ASSERT_EQ(Elements("snat-steer-v4").size(), 1u);
  EXPECT_EQ(Elements("snat-steer-v4")[0].data, Ip("192.0.2.2").bytes());
  // Same again: nothing to commit.
  const int commits = Commits();
  ASSERT_TRUE(engine_->SetDynamicElements({SteerElement("198.51.100.9", "192.0.2.2")}).ok());
  EXPECT_EQ(Commits(), commits);
  // Other data for the same key: replaced.
  ASSERT_TRUE(engine_->SetDynamicElements({SteerElement("198.51.100.9", "192.0.2.1")}).ok());
  EXPECT_EQ(Elements("snat-steer-v4")[0].data, Ip("192.0.2.1").bytes());
  // A restart keeps the kernel's steering until the monitor decides.
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kNftables)).ok());
  EXPECT_EQ(Elements("snat-steer-v4").size(), 1u);
  ASSERT_TRUE(engine_->SetDynamicElements({}).ok());
  EXPECT_TRUE(Elements("snat-steer-v4").empty());
  // Only dynamic sets.
  render::SetElement wrong = SteerElement("198.51.100.9", "192.0.2.1");
  wrong.set = "pod-ipv4";
  EXPECT_TRUE(absl::IsInvalidArgument(engine_->SetDynamicElements({wrong})));
}

TEST_F(EngineSnatTest, LeavingNftablesForgetsSteering) {
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kNftables)).ok());
  ASSERT_TRUE(engine_->SetDynamicElements({SteerElement("198.51.100.9", "192.0.2.2")}).ok());
  ASSERT_TRUE(engine_->Reconfigure(LayoutWith(core::SnatSettings{})).ok());
  EXPECT_FALSE(HasSet("snat-steer-v4"));
  ASSERT_TRUE(engine_->Reconfigure(LayoutWith(Snat(core::SnatMode::kNftables))).ok());
  EXPECT_TRUE(Elements("snat-steer-v4").empty()) << "stale steering must not come back";
  ASSERT_TRUE(engine_->Reconfigure(LayoutWith(core::SnatSettings{})).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(engine_->SetDynamicElements({SteerElement("198.51.100.9", "192.0.2.2")})))
      << "no steering sets without the nftables backend";
}

TEST_F(EngineSnatTest, DiffSeesConfigurationElementsAsDesired) {
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kNftables)).ok());
  DesiredElements desired;
  ASSERT_TRUE(engine_->Inspect([&](const core::DesiredState&, const render::ElementIndex&) {
                       desired = engine_->DesiredElementsNow();
                     }).ok());
  EXPECT_EQ(desired["snat-exclude-v4"].size(), 2u);
  EXPECT_EQ(desired["snat-egress-ifs"].size(), 1u);
}

TEST_F(EngineSnatTest, StopReleasesTheDataplane) {
  ASSERT_TRUE(StartEngine(Snat(core::SnatMode::kBpf)).ok());
  engine_->Stop();
  EXPECT_TRUE(dataplane_->released());
  EXPECT_TRUE(dataplane_->enabled()) << "stopping never tears the dataplane down";
}

TEST_F(EngineSnatTest, BpfModeWithoutADataplaneIsRefused) {
  dataplane_.reset();
  engine_.reset();
  EngineOptions opts;
  opts.state_dir = dir_.string();
  opts.layout.snat = Snat(core::SnatMode::kBpf);
  auto e = Engine::Create(opts, std::make_unique<FakeNftPort>(kernel_), &registry_);
  ASSERT_TRUE(e.ok());
  absl::Status s = (*e)->Start();
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
}

}  // namespace
}  // namespace ruleplane::txn
