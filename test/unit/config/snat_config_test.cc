// AgentConfig -> SnatSettings: defaults from the egress interface and
// errors that name the config field. Pure (the interface lookup is faked).
#include "agent/config/snat_config.h"

#include <sys/socket.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test/unit/test_util.h"

namespace ruleplane::config {
namespace {

using ::ruleplane::testing::Ip;
using ::testing::StartsWith;

absl::StatusOr<std::vector<core::IpAddress>> FakeLookup(const std::string& ifname, int family) {
  if (ifname == "eth0") {
    if (family == AF_INET) return std::vector<core::IpAddress>{Ip("192.0.2.10"), Ip("192.0.2.11")};
    return std::vector<core::IpAddress>{Ip("2001:db8::10")};
  }
  if (ifname == "bare") return std::vector<core::IpAddress>{};
  if (ifname == "v4only") {
    if (family == AF_INET) return std::vector<core::IpAddress>{Ip("192.0.2.20")};
    return std::vector<core::IpAddress>{};
  }
  return absl::NotFoundError("interface " + ifname + " does not exist");
}

v1::AgentConfig Config(const std::string& mode) {
  v1::AgentConfig c;
  c.set_snat_mode(mode);
  c.add_snat_egress_interfaces("eth0");
  return c;
}

TEST(SnatConfigTest, OffNeedsNothing) {
  v1::AgentConfig c;
  auto s = SnatSettingsFromConfig(c, FakeLookup);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->mode, core::SnatMode::kOff);
}

TEST(SnatConfigTest, EgressAddressDefaultsToThePrimaryAddressOfTheInterface) {
  auto s = SnatSettingsFromConfig(Config("nftables"), FakeLookup);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->egress_ipv4, std::vector<core::IpAddress>{Ip("192.0.2.10")});
  EXPECT_TRUE(s->fully_random);
  EXPECT_FALSE(s->ipv6);
  EXPECT_EQ(s->bpf_pin_dir, "/sys/fs/bpf/ruleplane");
}

TEST(SnatConfigTest, EverythingFromTheConfig) {
  v1::AgentConfig c = Config("bpf");
  c.add_snat_egress_ips("198.51.100.1");
  c.add_snat_egress_ips("198.51.100.2");
  c.add_snat_exclude("10.0.0.0/8");
  c.add_snat_exclude("fd00::/8");
  c.set_snat_port_range("40000-40999");
  c.set_snat_fully_random(false);
  c.set_bpf_pin_dir("/sys/fs/bpf/x");
  c.set_snat_bpf_max_retries(8);
  c.set_snat_bpf_max_flows(262144);
  c.set_snat_bpf_attach("clsact");
  auto s = SnatSettingsFromConfig(c, FakeLookup);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->mode, core::SnatMode::kBpf);
  EXPECT_EQ(s->egress_ipv4, (std::vector<core::IpAddress>{Ip("198.51.100.1"), Ip("198.51.100.2")}));
  EXPECT_EQ(s->exclude_ipv4.size(), 1u);
  EXPECT_EQ(s->exclude_ipv6.size(), 1u);
  EXPECT_EQ(s->ports, (core::PortRange{40000, 40999}));
  EXPECT_FALSE(s->fully_random);
  EXPECT_EQ(s->bpf_pin_dir, "/sys/fs/bpf/x");
  EXPECT_EQ(s->bpf_max_retries, 8u);
  EXPECT_EQ(s->bpf_max_flows, 262144u);
  EXPECT_EQ(s->bpf_attach, core::BpfAttach::kClsact);
  c.set_snat_bpf_attach("tcx");
  EXPECT_EQ(SnatSettingsFromConfig(c, FakeLookup)->bpf_attach, core::BpfAttach::kTcx);
  c.clear_snat_bpf_attach();
  EXPECT_EQ(SnatSettingsFromConfig(c, FakeLookup)->bpf_attach, core::BpfAttach::kAuto);
}

TEST(SnatConfigTest, Ipv6DefaultsToAGlobalAddress) {
  v1::AgentConfig c = Config("nftables");
  c.set_snat_ipv6(true);
  auto s = SnatSettingsFromConfig(c, FakeLookup);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->egress_ipv6, std::vector<core::IpAddress>{Ip("2001:db8::10")});
}

// An egress interface without its address yet (or not there yet) does not
// fail the start: the mode waits and says why.
TEST(SnatConfigTest, MissingDefaultAddressWaitsInsteadOfFailing) {
  for (const auto& [ifname, why] : std::vector<std::pair<std::string, std::string>>{
           {"missing0", "snat_mode bpf waits: interface missing0 does not exist"},
           {"bare", "snat_mode bpf waits: interface bare has no IPv4 address"}}) {
    v1::AgentConfig c = Config("bpf");
    c.clear_snat_egress_interfaces();
    c.add_snat_egress_interfaces(ifname);
    auto s = SnatSettingsFromConfig(c, FakeLookup);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->mode, core::SnatMode::kOff);
    EXPECT_EQ(s->waiting_mode, core::SnatMode::kBpf);
    EXPECT_TRUE(s->egress_ipv4.empty());
    EXPECT_EQ(s->egress_waiting, why);
    EXPECT_EQ(core::DescribeSnat(*s), "mode=off (bpf waits) waiting=\"" + why + "\"");
  }
  // Explicit addresses need nothing from the interface.
  v1::AgentConfig c = Config("nftables");
  c.clear_snat_egress_interfaces();
  c.add_snat_egress_interfaces("missing0");
  c.add_snat_egress_ips("198.51.100.1");
  auto s = SnatSettingsFromConfig(c, FakeLookup);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->mode, core::SnatMode::kNftables);
  EXPECT_TRUE(s->egress_waiting.empty());
}

// IPv6 waiting for its global address leaves IPv4 SNAT running.
TEST(SnatConfigTest, MissingIpv6DefaultOnlyHoldsBackIpv6) {
  v1::AgentConfig c = Config("nftables");
  c.clear_snat_egress_interfaces();
  c.add_snat_egress_interfaces("v4only");
  c.set_snat_ipv6(true);
  auto s = SnatSettingsFromConfig(c, FakeLookup);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->mode, core::SnatMode::kNftables);
  EXPECT_EQ(s->egress_ipv4, std::vector<core::IpAddress>{Ip("192.0.2.20")});
  EXPECT_FALSE(s->ipv6);
  EXPECT_TRUE(s->waiting_ipv6);
  EXPECT_EQ(s->egress_waiting, "snat_ipv6 waits: interface v4only has no global IPv6 address");
}

// Valid configs that likely do not do what was meant are warned about.
TEST(SnatConfigTest, WarnsAboutTheDefaultAddressWithSeveralInterfacesAndUselessKeepPort) {
  v1::AgentConfig c = Config("nftables");
  EXPECT_TRUE(SnatConfigWarnings(c, *SnatSettingsFromConfig(c, FakeLookup)).empty());
  c.add_snat_egress_interfaces("v4only");
  std::vector<std::string> w = SnatConfigWarnings(c, *SnatSettingsFromConfig(c, FakeLookup));
  ASSERT_EQ(w.size(), 1u);
  EXPECT_THAT(w[0], ::testing::HasSubstr("(eth0,v4only) are translated to the primary address of eth0"));
  c.add_snat_egress_ips("198.51.100.1");
  EXPECT_TRUE(SnatConfigWarnings(c, *SnatSettingsFromConfig(c, FakeLookup)).empty()) << "an explicit pool";
  c.set_snat_mode("bpf");
  c.set_snat_fully_random(false);
  w = SnatConfigWarnings(c, *SnatSettingsFromConfig(c, FakeLookup));
  ASSERT_EQ(w.size(), 1u);
  EXPECT_THAT(w[0], StartsWith("snat_fully_random false keeps a pod's source port only inside"));
}

TEST(SnatConfigTest, ErrorsNameTheField) {
  struct Case {
    std::function<void(v1::AgentConfig&)> mutate;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](v1::AgentConfig& c) { c.set_snat_mode("masquerade"); }, "snat_mode: "},
      {[](v1::AgentConfig& c) { c.set_snat_bpf_attach("xdp"); }, "snat_bpf_attach: "},
      {[](v1::AgentConfig& c) { c.add_snat_egress_ips("not-an-ip"); }, "snat_egress_ips: "},
      {[](v1::AgentConfig& c) { c.add_snat_exclude("10.0.0.1/8"); }, "snat_exclude: "},
      {[](v1::AgentConfig& c) { c.set_snat_port_range("9-1"); }, "snat_port_range: "},
      {[](v1::AgentConfig& c) { c.set_snat_stats_interval_ms(5); }, "snat_stats_interval_ms: "},
      {[](v1::AgentConfig& c) { c.set_snat_stats_top_k(0); }, "snat_stats_top_k: "},
      {[](v1::AgentConfig& c) { c.clear_snat_egress_interfaces(); }, "snat_egress_interfaces: "},
      {[](v1::AgentConfig& c) {
         // Checked while the default address waits, too.
         c.clear_snat_egress_interfaces();
         c.add_snat_egress_interfaces("bare");
         c.set_snat_port_range("9-1");
       },
       "snat_port_range: "},
      {[](v1::AgentConfig& c) { c.set_bpf_pin_dir("sys/fs/bpf"); }, "bpf_pin_dir: "},
  };
  for (const Case& k : cases) {
    v1::AgentConfig c = Config("nftables");
    k.mutate(c);
    auto s = SnatSettingsFromConfig(c, FakeLookup);
    ASSERT_FALSE(s.ok()) << k.field;
    EXPECT_TRUE(absl::IsInvalidArgument(s.status())) << s.status();
    EXPECT_THAT(std::string(s.status().message()), StartsWith(k.field));
  }
}

}  // namespace
}  // namespace ruleplane::config
