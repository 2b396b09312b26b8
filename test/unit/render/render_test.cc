#include "agent/render/render.h"

#include <linux/netfilter.h>

#include <set>

#include "gtest/gtest.h"
#include "test/unit/golden.h"
#include "test/unit/test_util.h"

namespace ruleplane::render {
namespace {

using testing::Ip;
using testing::Pod;
using testing::Tcp;

Plan PlanOf(std::vector<Op> ops) {
  Plan p;
  p.table = "ruleplane";
  p.family = NFPROTO_INET;
  p.ops = std::move(ops);
  return p;
}

TEST(RenderBaseTest, MatchesGolden) {
  testing::ExpectGolden("base_ruleset.txt", PlanToText(PlanOf(BaseOps(RenderBase(Layout{})))));
}

TEST(RenderBaseTest, PrioritiesNeverCollideWithKubeProxyOrCalico) {
  const std::set<int32_t> taken = {-110, -100, 0, 100, -300, -150, -90, 110};
  for (const ChainSpec& c : RenderBase(Layout{}).chains) {
    if (c.base) {
      EXPECT_FALSE(taken.count(c.base->priority)) << c.name << " " << c.base->priority;
    }
  }
}

TEST(RenderBaseTest, RuleTagsAreUniqueAndChangeWithTheRule) {
  BaseRuleset a = RenderBase(Layout{});
  std::set<std::string> tags;
  for (const RuleSpec& r : a.rules) EXPECT_TRUE(tags.insert(r.tag).second) << r.tag;
  // Every rule references only sets/chains the base defines.
  std::set<std::string> sets;
  for (const SetSpec& s : a.sets) sets.insert(s.name);
  for (const RuleSpec& r : a.rules) {
    for (const Expr& e : r.exprs) {
      if (const auto* l = std::get_if<expr::Lookup>(&e)) {
        EXPECT_TRUE(sets.count(l->set)) << l->set;
      }
    }
  }
}

TEST(RenderBaseTest, SetKeyLayoutMatchesRegisterUse) {
  for (const SetSpec& s : RenderBase(Layout{}).sets) {
    EXPECT_EQ(s.KeyLen() % 4, 0u) << s.name;
    EXPECT_LE(s.KeyLen(), 64u) << s.name << ": a key must fit the 16 32-bit registers";
  }
  SetSpec hostport = RenderBase(Layout{}).sets[2];
  ASSERT_EQ(hostport.name, kMapHostportV4);
  EXPECT_EQ(hostport.KeyLen(), 8u);
  EXPECT_EQ(hostport.DataLen(), 8u);
  EXPECT_EQ(hostport.KeyTypeId(), (12u << 6) | 13u);  // inet_proto . inet_service
}

TEST(ElementsOfTest, MatchesGoldenForDualStackPodWithHostPorts) {
  core::Attachment a = Pod("0123456789abcdef", "10.22.0.5");
  a.ips.push_back(Ip("fd00::5"));
  a.port_mappings.push_back(Tcp(8080, 80));
  a.port_mappings.push_back(core::PortMapping{5353, 53, core::L4Proto::kUdp, Ip("192.168.1.10")});
  std::string text;
  for (const SetElement& se : ElementsOf(a)) {
    text += se.set + " " + se.element.text + " comment \"" + se.element.comment + "\" key=" +
            std::to_string(se.element.key.size()) + "B data=" + std::to_string(se.element.data.size()) + "B\n";
  }
  testing::ExpectGolden("elements_dual_stack.txt", text);
}

TEST(ElementsOfTest, EncodesHostPortKeyAndDataInNetworkOrderPadded) {
  std::vector<SetElement> els = ElementsOf(Pod("c1", "10.0.0.2", {Tcp(8080, 80)}));
  const SetElement* hp = nullptr;
  for (const SetElement& se : els) {
    if (se.set == kMapHostportV4) hp = &se;
  }
  ASSERT_NE(hp, nullptr);
  EXPECT_EQ(hp->element.key, (std::vector<uint8_t>{6, 0, 0, 0, 0x1f, 0x90, 0, 0}));
  EXPECT_EQ(hp->element.data, (std::vector<uint8_t>{10, 0, 0, 2, 0, 80, 0, 0}));
}

}  // namespace
}  // namespace ruleplane::render
