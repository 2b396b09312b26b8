// Privileged: kernel::nft::ListChains reads every chain of every family in a
// throwaway netns, and changes nothing (the ruleset generation is the same
// before and after).
#include "agent/kernel/nft/list.h"

#include <linux/netfilter.h>

#include <algorithm>

#include "agent/kernel/nft/netlink_nft_port.h"
#include "gtest/gtest.h"
#include "test/integration/netns_fixture.h"

namespace ruleplane::testing {
namespace {

TEST(PrivilegedListChains, EveryFamilyBaseAndRegularChains) {
  if (auto why = PrivilegedSkipReason()) GTEST_SKIP() << *why;
  auto ns = TestNetns::Create();
  ASSERT_TRUE(ns.ok()) << ns.status();
  CommandResult setup = (*ns)->RunIn(
      "nft -f - <<'EOF'\n"
      "table ip filter { chain INPUT { type filter hook input priority 0; }; chain KUBE-IPTABLES-HINT { }; }\n"
      "table inet other { chain pre { type nat hook prerouting priority -105; }; }\n"
      "table ip6 six { chain post { type nat hook postrouting priority 105; }; }\n"
      "table bridge br { chain brfwd { type filter hook forward priority -200; }; }\n"
      "EOF");
  ASSERT_EQ(setup.exit_code, 0) << setup.error;

  auto port = kernel::nft::NetlinkNftPort::Create({(*ns)->path()});
  ASSERT_TRUE(port.ok()) << port.status();
  absl::StatusOr<uint32_t> gen_before = (*port)->Generation();
  ASSERT_TRUE(gen_before.ok());
  absl::StatusOr<std::vector<kernel::nft::ChainListing>> chains = kernel::nft::ListChains((*ns)->path());
  ASSERT_TRUE(chains.ok()) << chains.status();
  absl::StatusOr<uint32_t> gen_after = (*port)->Generation();
  ASSERT_TRUE(gen_after.ok());
  EXPECT_EQ(*gen_before, *gen_after) << "listing must not change the ruleset";

  auto find = [&](uint32_t family, const std::string& table, const std::string& name) {
    auto it = std::find_if(chains->begin(), chains->end(), [&](const kernel::nft::ChainListing& c) {
      return c.family == family && c.table == table && c.name == name;
    });
    return it == chains->end() ? nullptr : &*it;
  };
  ASSERT_EQ(chains->size(), 5u);
  const auto* input = find(NFPROTO_IPV4, "filter", "INPUT");
  ASSERT_NE(input, nullptr);
  ASSERT_TRUE(input->base.has_value());
  EXPECT_EQ(input->base->hook, static_cast<uint32_t>(NF_INET_LOCAL_IN));
  EXPECT_EQ(input->base->priority, 0);
  EXPECT_EQ(input->base->type, "filter");
  const auto* hint = find(NFPROTO_IPV4, "filter", "KUBE-IPTABLES-HINT");
  ASSERT_NE(hint, nullptr);
  EXPECT_FALSE(hint->base.has_value());
  const auto* pre = find(NFPROTO_INET, "other", "pre");
  ASSERT_NE(pre, nullptr);
  EXPECT_EQ(pre->base->priority, -105);
  EXPECT_EQ(pre->base->type, "nat");
  ASSERT_NE(find(NFPROTO_IPV6, "six", "post"), nullptr);
  const auto* br = find(NFPROTO_BRIDGE, "br", "brfwd");
  ASSERT_NE(br, nullptr);
  EXPECT_EQ(br->base->priority, -200);
}

TEST(PrivilegedListChains, EmptyRuleset) {
  if (auto why = PrivilegedSkipReason()) GTEST_SKIP() << *why;
  auto ns = TestNetns::Create();
  ASSERT_TRUE(ns.ok()) << ns.status();
  absl::StatusOr<std::vector<kernel::nft::ChainListing>> chains = kernel::nft::ListChains((*ns)->path());
  ASSERT_TRUE(chains.ok()) << chains.status();
  EXPECT_TRUE(chains->empty());
}

}  // namespace
}  // namespace ruleplane::testing
