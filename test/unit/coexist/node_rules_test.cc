#include "agent/coexist/node_rules.h"

#include <linux/netfilter.h>

#include "agent/render/render.h"
#include "gtest/gtest.h"

namespace ruleplane::coexist {
namespace {

NftChainRef Base(uint32_t family, std::string table, std::string name, uint32_t hook, int32_t prio,
                 std::string type = "nat") {
  return {family, std::move(table), std::move(name), render::BaseChainSpec{std::move(type), hook, prio, NF_ACCEPT}};
}
NftChainRef Regular(uint32_t family, std::string table, std::string name) {
  return {family, std::move(table), std::move(name), std::nullopt};
}

TEST(DetectBackends, NothingOnTheNode) {
  BackendReport r = DetectBackends({}, {});
  EXPECT_FALSE(r.legacy_in_use);
  EXPECT_FALSE(r.nft_in_use);
  EXPECT_FALSE(r.mixed);
  EXPECT_EQ(r.summary, "no iptables tables");
}

TEST(DetectBackends, IptablesNftWithKubeletHints) {
  BackendReport r = DetectBackends(
      {}, {Base(NFPROTO_IPV4, "nat", "PREROUTING", NF_INET_PRE_ROUTING, -100),
           Regular(NFPROTO_IPV4, "mangle", "KUBE-IPTABLES-HINT"), Regular(NFPROTO_IPV6, "mangle", "KUBE-KUBELET-CANARY"),
           // A hand-written nft table that happens to be called filter is not iptables-nft's.
           Base(NFPROTO_INET, "filter", "input", NF_INET_LOCAL_IN, 0, "filter"),
           Base(NFPROTO_INET, "ruleplane", "nat-prerouting", NF_INET_PRE_ROUTING, -105)});
  EXPECT_TRUE(r.nft_in_use);
  EXPECT_FALSE(r.legacy_in_use);
  EXPECT_FALSE(r.mixed);
  EXPECT_EQ(r.nft_tables, std::vector<std::string>{"ip nat"});
  EXPECT_EQ(r.kube_hints,
            (std::vector<std::string>{"KUBE-IPTABLES-HINT in ip mangle", "KUBE-KUBELET-CANARY in ip6 mangle"}));
}

TEST(DetectBackends, LegacyAndNftTogetherIsMixed) {
  BackendReport r = DetectBackends({{NFPROTO_IPV4, "filter"}, {NFPROTO_IPV4, "nat"}},
                                   {Base(NFPROTO_IPV4, "filter", "INPUT", NF_INET_LOCAL_IN, 0, "filter")});
  EXPECT_TRUE(r.mixed);
  EXPECT_NE(r.summary.find("MIXED"), std::string::npos) << r.summary;
  EXPECT_NE(r.summary.find("ip nat"), std::string::npos) << r.summary;
}

TEST(DetectBackends, KubeProxyNftablesMode) {
  BackendReport r = DetectBackends({}, {Base(NFPROTO_IPV4, "kube-proxy", "nat-prerouting", NF_INET_PRE_ROUTING, -100)});
  EXPECT_EQ(r.kube_proxy_nft, std::vector<std::string>{"ip kube-proxy"});
  EXPECT_FALSE(r.nft_in_use) << "kube-proxy's own table is not iptables-nft";
}

TEST(FindPriorityCollisions, SameHookSamePriorityInOverlappingFamily) {
  std::vector<HookedChain> ours = NftHooks({Base(NFPROTO_INET, "ruleplane", "nat-prerouting", NF_INET_PRE_ROUTING, -105),
                                            Base(NFPROTO_INET, "ruleplane", "nat-postrouting", NF_INET_POST_ROUTING, 105)});
  std::vector<HookedChain> present = NftHooks({
      Base(NFPROTO_INET, "ruleplane", "nat-prerouting", NF_INET_PRE_ROUTING, -105),  // ourselves
      Base(NFPROTO_IPV4, "other", "pre", NF_INET_PRE_ROUTING, -105),                 // collides (ip vs inet)
      Base(NFPROTO_IPV6, "other6", "post", NF_INET_POST_ROUTING, 104),               // other priority
      Base(NFPROTO_INET, "x", "out", NF_INET_LOCAL_OUT, -105),                       // other hook
      Base(NFPROTO_BRIDGE, "br", "pre", NF_INET_PRE_ROUTING, -105),                  // other family
      Base(NFPROTO_INET, "ruleplane-2", "nat-postrouting", NF_INET_POST_ROUTING, 105),  // another agent's table
  });
  std::vector<PriorityCollision> c = FindPriorityCollisions(NFPROTO_INET, "ruleplane", ours, present);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].theirs.table, "other");
  EXPECT_EQ(c[0].message,
            "ip other chain pre (nat prerouting priority -105) uses priority -105 at hook prerouting, as does "
            "ruleplane's inet ruleplane chain nat-prerouting (nat prerouting priority -105)");
  EXPECT_EQ(c[1].theirs.table, "ruleplane-2");
}

TEST(FindPriorityCollisions, LegacyTablesHaveFixedPriorities) {
  std::vector<HookedChain> legacy = LegacyHooks({{NFPROTO_IPV4, "nat"}, {NFPROTO_ARP, "filter"}});
  ASSERT_EQ(legacy.size(), 4u);
  std::vector<HookedChain> ours = NftHooks({Base(NFPROTO_INET, "ruleplane", "nat-prerouting", NF_INET_PRE_ROUTING, -100)});
  std::vector<PriorityCollision> c = FindPriorityCollisions(NFPROTO_INET, "ruleplane", ours, legacy);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_NE(c[0].message.find("ip nat (iptables-legacy)"), std::string::npos) << c[0].message;
}

TEST(FindPriorityCollisions, OurRenderedBaseRulesetAgainstKubeProxyAndCalico) {
  render::Layout layout;
  render::BaseRuleset base = render::RenderBase(layout);
  std::vector<HookedChain> ours = HooksOf(base.table, base.chains);
  ASSERT_EQ(ours.size(), 3u) << "nat-prerouting, nat-output, nat-postrouting";
  // kube-proxy (nftables mode) and Calico priorities never equal ours.
  std::vector<HookedChain> others = NftHooks({
      Base(NFPROTO_IPV4, "kube-proxy", "nat-prerouting", NF_INET_PRE_ROUTING, -100),
      Base(NFPROTO_IPV4, "kube-proxy", "nat-output", NF_INET_LOCAL_OUT, -100),
      Base(NFPROTO_IPV4, "kube-proxy", "nat-postrouting", NF_INET_POST_ROUTING, 100),
      Base(NFPROTO_IPV4, "calico", "nat-postrouting", NF_INET_POST_ROUTING, 110),
  });
  std::vector<HookedChain> legacy = LegacyHooks({{NFPROTO_IPV4, "nat"}, {NFPROTO_IPV4, "mangle"},
                                                 {NFPROTO_IPV4, "raw"}, {NFPROTO_IPV4, "filter"}});
  others.insert(others.end(), legacy.begin(), legacy.end());
  EXPECT_TRUE(FindPriorityCollisions(base.table.family, base.table.name, ours, others).empty());
}

}  // namespace
}  // namespace ruleplane::coexist
