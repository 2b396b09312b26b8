// SNAT backends: the nftables objects (golden), the BPF plan (golden), the
// failover steering decisions and the statistics summary. Pure.
#include <netinet/in.h>

#include "agent/backend/bpf_snat_backend.h"
#include "agent/backend/nft_snat_backend.h"
#include "agent/backend/snat_backend.h"
#include "agent/backend/snat_stats.h"
#include "agent/render/plan.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test/unit/golden.h"
#include "test/unit/test_util.h"

namespace ruleplane::backend {
namespace {

using ::ruleplane::testing::ExpectGolden;
using ::ruleplane::testing::Ip;

core::SnatSettings Settings(core::SnatMode mode) {
  core::SnatSettings s;
  s.mode = mode;
  s.egress_interfaces = {"eth0", "bond1"};
  s.egress_ipv4 = {Ip("192.0.2.1"), Ip("192.0.2.2")};
  // Overlapping and adjacent prefixes merge into one interval; a /32 and an
  // open-ended prefix at the top of the space need special ends.
  for (const char* p : {"10.0.0.0/8", "10.96.0.0/12", "11.0.0.0/8", "172.16.0.0/12", "203.0.113.7", "240.0.0.0/4"}) {
    s.exclude_ipv4.push_back(*core::IpPrefix::Parse(p));
  }
  s.ports = {61000, 65535};
  return s;
}

// The base ruleset with its configuration elements, as one plan text.
std::string BaseText(const render::Layout& layout) {
  render::BaseRuleset base = RenderFullBase(layout);
  render::Plan plan;
  plan.table = layout.table;
  plan.family = 1;  // NFPROTO_INET
  plan.ops = render::BaseOps(base);
  std::map<std::string, std::vector<render::Element>> by_set;
  for (const render::SetElement& se : base.elements) by_set[se.set].push_back(se.element);
  for (auto& [set, elements] : by_set) plan.ops.push_back(render::op::AddElements{set, elements});
  std::string text = render::PlanToText(plan);
  for (const std::string& d : base.dynamic_sets) absl::StrAppend(&text, "dynamic set ", d, "\n");
  return text;
}

TEST(NftSnatBackendTest, BaseRulesetGolden) {
  render::Layout layout;
  layout.snat = Settings(core::SnatMode::kNftables);
  ExpectGolden("snat_nft_ruleset.txt", BaseText(layout));
}

TEST(NftSnatBackendTest, Ipv6AndKernelDefaultPortsGolden) {
  render::Layout layout;
  layout.snat = Settings(core::SnatMode::kNftables);
  layout.snat.ports = {};
  layout.snat.fully_random = false;
  layout.snat.egress_ipv4 = {Ip("192.0.2.1")};
  layout.snat.exclude_ipv4 = {};
  layout.snat.ipv6 = true;
  layout.snat.egress_ipv6 = {Ip("2001:db8::1")};
  layout.snat.exclude_ipv6 = {*core::IpPrefix::Parse("fd00::/8")};
  ExpectGolden("snat_nft_ruleset_v6.txt", BaseText(layout));
}

TEST(NftSnatBackendTest, OtherModesAddNothingToNftables) {
  render::Layout off;
  const std::string plain = BaseText(off);
  for (core::SnatMode mode : {core::SnatMode::kOff, core::SnatMode::kBpf}) {
    render::Layout layout;
    layout.snat = Settings(mode);
    EXPECT_EQ(BaseText(layout), plain) << core::SnatModeName(mode);
  }
}

TEST(NftSnatBackendTest, PodAddressesStayInThePodSetsOnly) {
  // Per-pod changes are element changes of pod-ipv4/-v6: the SNAT rules
  // reference those sets and never name a pod.
  render::Layout layout;
  layout.snat = Settings(core::SnatMode::kNftables);
  render::BaseRuleset base = RenderFullBase(layout);
  bool references_pods = false;
  for (const render::RuleSpec& r : base.rules) {
    for (const render::Expr& e : r.exprs) {
      if (const auto* l = std::get_if<render::expr::Lookup>(&e); l && l->set == render::kSetPodIpv4) {
        references_pods = true;
      }
    }
  }
  EXPECT_TRUE(references_pods);
  for (const render::SetElement& se : base.elements) {
    EXPECT_NE(se.set, render::kSetPodIpv4);
  }
}

TEST(BpfSnatBackendTest, PlanGolden) {
  BpfSnatBackend bpf(Settings(core::SnatMode::kBpf));
  ExpectGolden("snat_bpf_plan.txt", render::BpfPlanToText(bpf.PlanBpf()));
  EXPECT_FALSE(NftSnatBackend(Settings(core::SnatMode::kNftables)).PlanBpf().enabled);
  EXPECT_FALSE(MakeSnatBackend(core::SnatSettings{})->PlanBpf().enabled);
  EXPECT_TRUE(MakeSnatBackend(Settings(core::SnatMode::kBpf))->PlanBpf().enabled);
}

TEST(BpfSnatBackendTest, DefaultPortsAreAboveTheLocalPortRange) {
  core::SnatSettings s = Settings(core::SnatMode::kBpf);
  s.ports = {};
  render::BpfSnatPlan plan = BpfSnatBackend(s).PlanBpf();
  EXPECT_EQ(plan.port_min, 61000);
  EXPECT_EQ(plan.port_max, 65535);
}

TEST(BpfSnatBackendTest, FullyRandomOffAsksTheProgramsToKeepThePodsPort) {
  core::SnatSettings s = Settings(core::SnatMode::kBpf);
  EXPECT_TRUE(BpfSnatBackend(s).PlanBpf().fully_random);
  s.fully_random = false;
  const render::BpfSnatPlan plan = BpfSnatBackend(s).PlanBpf();
  EXPECT_FALSE(plan.fully_random);
  EXPECT_NE(plan, BpfSnatBackend(Settings(core::SnatMode::kBpf)).PlanBpf()) << "a change reloads the programs";
  EXPECT_THAT(render::BpfPlanToText(plan), ::testing::HasSubstr(" keep_port\n"));
}

// --- failover steering ---

SnatTupleUsage Use(const char* egress, const char* remote, uint16_t port, uint8_t proto, uint32_t n) {
  return SnatTupleUsage{Ip(egress), Ip(remote), port, proto, n};
}

std::vector<std::string> Steering(const core::SnatSettings& s, const std::vector<SnatTupleUsage>& usage) {
  std::vector<std::string> out;
  for (const render::SetElement& se : NftSnatBackend(s).PlanSteering(usage)) {
    out.push_back(se.set + " " + se.element.text);
  }
  return out;
}

TEST(NftSnatBackendTest, SteeringMovesSaturatedDestinationsToTheNextAddress) {
  core::SnatSettings s = Settings(core::SnatMode::kNftables);
  s.ports = {61000, 61001};  // 2 ports, threshold 2 (10% of 2 rounds to 0)
  EXPECT_EQ(NftSnatBackend(s).FailoverThreshold(), 2u);
  using ::testing::ElementsAre;
  using ::testing::IsEmpty;
  EXPECT_THAT(Steering(s, {Use("192.0.2.1", "198.51.100.9", 443, IPPROTO_TCP, 1)}), IsEmpty());
  EXPECT_THAT(Steering(s, {Use("192.0.2.1", "198.51.100.9", 443, IPPROTO_TCP, 2)}),
              ElementsAre("snat-steer-v4 198.51.100.9 . tcp . 443 : 192.0.2.2"));
  EXPECT_THAT(Steering(s, {Use("192.0.2.1", "198.51.100.9", 443, IPPROTO_TCP, 2),
                           Use("192.0.2.2", "198.51.100.9", 443, IPPROTO_TCP, 1)}),
              ElementsAre("snat-steer-v4 198.51.100.9 . tcp . 443 : 192.0.2.2"));
  EXPECT_THAT(Steering(s, {Use("192.0.2.1", "198.51.100.9", 53, IPPROTO_UDP, 2),
                           Use("192.0.2.2", "198.51.100.9", 53, IPPROTO_UDP, 2)}),
              ElementsAre("snat-full-v4 198.51.100.9 . udp . 53"));
  // Other destinations, ICMP, and addresses outside the pool do not count.
  EXPECT_THAT(Steering(s, {Use("192.0.2.1", "198.51.100.9", 443, IPPROTO_TCP, 1),
                           Use("192.0.2.1", "198.51.100.9", 80, IPPROTO_TCP, 1),
                           Use("192.0.2.1", "198.51.100.9", 0, IPPROTO_ICMP, 5),
                           Use("192.0.2.99", "198.51.100.9", 443, IPPROTO_TCP, 9)}),
              IsEmpty());
}

TEST(NftSnatBackendTest, SteeringHeadroomThenAnyFreePort) {
  core::SnatSettings s = Settings(core::SnatMode::kNftables);
  s.ports = {61000, 61099};  // 100 ports, 10% headroom: full at 90
  EXPECT_EQ(NftSnatBackend(s).FailoverThreshold(), 90u);
  EXPECT_THAT(Steering(s, {Use("192.0.2.1", "198.51.100.9", 443, IPPROTO_TCP, 89)}), ::testing::IsEmpty());
  EXPECT_THAT(Steering(s, {Use("192.0.2.1", "198.51.100.9", 443, IPPROTO_TCP, 90)}),
              ::testing::ElementsAre("snat-steer-v4 198.51.100.9 . tcp . 443 : 192.0.2.2"));
  // Both past the headroom but not full: the first with a free port, which
  // is the first address (no element).
  EXPECT_THAT(Steering(s, {Use("192.0.2.1", "198.51.100.9", 443, IPPROTO_TCP, 95),
                           Use("192.0.2.2", "198.51.100.9", 443, IPPROTO_TCP, 92)}),
              ::testing::IsEmpty());
  EXPECT_THAT(Steering(s, {Use("192.0.2.1", "198.51.100.9", 443, IPPROTO_TCP, 100),
                           Use("192.0.2.2", "198.51.100.9", 443, IPPROTO_TCP, 92)}),
              ::testing::ElementsAre("snat-steer-v4 198.51.100.9 . tcp . 443 : 192.0.2.2"));
}

TEST(NftSnatBackendTest, SteeringElementsFitTheirSets) {
  core::SnatSettings s = Settings(core::SnatMode::kNftables);
  s.ports = {61000, 61000};
  render::Layout layout;
  layout.snat = s;
  render::BaseRuleset base = RenderFullBase(layout);
  for (const render::SetElement& se :
       NftSnatBackend(s).PlanSteering({Use("192.0.2.1", "198.51.100.9", 443, IPPROTO_TCP, 1),
                                       Use("192.0.2.1", "198.51.100.8", 443, IPPROTO_TCP, 1),
                                       Use("192.0.2.2", "198.51.100.8", 443, IPPROTO_TCP, 1)})) {
    auto set = std::find_if(base.sets.begin(), base.sets.end(), [&](const render::SetSpec& x) { return x.name == se.set; });
    ASSERT_NE(set, base.sets.end()) << se.set;
    EXPECT_EQ(se.element.key.size(), set->KeyLen()) << se.set;
    EXPECT_EQ(se.element.data.size(), set->DataLen()) << se.set;
    EXPECT_NE(std::find(base.dynamic_sets.begin(), base.dynamic_sets.end(), se.set), base.dynamic_sets.end());
  }
}

// --- statistics ---

TEST(SnatStatsTest, SummarizesPerAddressAndTopK) {
  std::vector<SnatTupleUsage> usage = {
      Use("192.0.2.1", "198.51.100.9", 443, IPPROTO_TCP, 3),
      Use("192.0.2.1", "198.51.100.8", 53, IPPROTO_UDP, 1),
      Use("192.0.2.2", "198.51.100.9", 443, IPPROTO_TCP, 5),
      Use("192.0.2.9", "198.51.100.9", 443, IPPROTO_TCP, 1),  // no longer in the pool
  };
  SnatStats s = SummarizeUsage(core::SnatMode::kBpf, usage, {Ip("192.0.2.1"), Ip("192.0.2.2"), Ip("192.0.2.3")}, 10, 2);
  ASSERT_EQ(s.egress.size(), 4u);
  EXPECT_EQ(s.egress[0].addr, Ip("192.0.2.1"));
  EXPECT_EQ(s.egress[0].translations, 4u);
  EXPECT_EQ(s.egress[0].busiest_in_use, 3u);
  EXPECT_EQ(s.egress[1].translations, 5u);
  EXPECT_EQ(s.egress[2].translations, 0u);
  EXPECT_FALSE(s.egress[3].in_pool);
  EXPECT_EQ(s.translations_total, 10u);
  ASSERT_EQ(s.top.size(), 2u);
  EXPECT_EQ(s.top[0].egress, Ip("192.0.2.2"));
  EXPECT_DOUBLE_EQ(s.top[0].utilization, 0.5);
  EXPECT_EQ(s.top[1].in_use, 3u);
}

}  // namespace
}  // namespace ruleplane::backend
