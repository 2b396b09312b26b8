// core/snat: parsing and validation of SNAT settings. Pure.
#include "agent/core/snat.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test/unit/test_util.h"

namespace ruleplane::core {
namespace {

using ::ruleplane::testing::Ip;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(SnatModeTest, ParsesEveryNameAndRejectsOthers) {
  EXPECT_EQ(*ParseSnatMode("off"), SnatMode::kOff);
  EXPECT_EQ(*ParseSnatMode(""), SnatMode::kOff);
  EXPECT_EQ(*ParseSnatMode("nftables"), SnatMode::kNftables);
  EXPECT_EQ(*ParseSnatMode("nft"), SnatMode::kNftables);
  EXPECT_EQ(*ParseSnatMode("bpf"), SnatMode::kBpf);
  EXPECT_FALSE(ParseSnatMode("iptables").ok());
  EXPECT_EQ(SnatModeName(SnatMode::kBpf), "bpf");
}

TEST(IpPrefixTest, ParsesAndRefusesHostBits) {
  auto p = IpPrefix::Parse("10.0.0.0/8");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->ToString(), "10.0.0.0/8");
  EXPECT_EQ(IpPrefix::Parse("192.0.2.7")->len, 32);
  EXPECT_EQ(IpPrefix::Parse("fd00::/8")->ToString(), "fd00::/8");
  EXPECT_THAT(std::string(IpPrefix::Parse("10.1.0.0/8").status().message()), HasSubstr("host bits"));
  EXPECT_FALSE(IpPrefix::Parse("10.0.0.0/33").ok());
  EXPECT_FALSE(IpPrefix::Parse("nope/8").ok());
}

TEST(IpPrefixTest, EndExclusiveAndContains) {
  EXPECT_EQ(IpPrefix::Parse("10.0.0.0/8")->EndExclusive(), Ip("11.0.0.0").bytes());
  EXPECT_EQ(IpPrefix::Parse("10.255.255.255/32")->EndExclusive(), Ip("11.0.0.0").bytes());
  EXPECT_EQ(IpPrefix::Parse("192.168.1.128/25")->EndExclusive(), Ip("192.168.2.0").bytes());
  EXPECT_TRUE(IpPrefix::Parse("255.0.0.0/8")->EndExclusive().empty()) << "wraps: open-ended";
  EXPECT_TRUE(IpPrefix::Parse("0.0.0.0/0")->EndExclusive().empty());
  EXPECT_EQ(IpPrefix::Parse("fd00::/8")->EndExclusive(), Ip("fe00::").bytes());
  EXPECT_TRUE(IpPrefix::Parse("10.0.0.0/8")->Contains(Ip("10.9.8.7")));
  EXPECT_FALSE(IpPrefix::Parse("10.0.0.0/8")->Contains(Ip("11.0.0.0")));
  EXPECT_FALSE(IpPrefix::Parse("10.0.0.0/8")->Contains(Ip("fd00::1")));
}

TEST(PortRangeTest, Parses) {
  EXPECT_EQ(*PortRange::Parse("61000-65535"), (PortRange{61000, 65535}));
  EXPECT_EQ(*PortRange::Parse("4000"), (PortRange{4000, 4000}));
  EXPECT_EQ(PortRange::Parse("61000-61001")->size(), 2u);
  EXPECT_FALSE(PortRange::Parse("0-10").ok());
  EXPECT_FALSE(PortRange::Parse("20-10").ok());
  EXPECT_FALSE(PortRange::Parse("1-65536").ok());
  EXPECT_FALSE(PortRange::Parse("a-b").ok());
}

TEST(SharedEphemeralPortsTest, TheBpfDefaultIsClearOfLinuxsDefault) {
  absl::StatusOr<EphemeralPortOverlap> o = SharedEphemeralPorts(kBpfDefaultPorts, "32768\t60999\n", "\n");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->ports, 0u);
  EXPECT_EQ(o->node, (PortRange{32768, 60999}));
  EXPECT_TRUE(o->first.unset());
}

TEST(SharedEphemeralPortsTest, CountsTheOverlapMinusReservedPorts) {
  absl::StatusOr<EphemeralPortOverlap> o = SharedEphemeralPorts(PortRange{30000, 65535}, "32768 60999", "");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->ports, 60999u - 32768 + 1);
  EXPECT_EQ(o->first, (PortRange{32768, 60999}));
  // Reserved ports are never given out as ephemeral ones; the first shared
  // run ends where the first reservation starts.
  o = SharedEphemeralPorts(PortRange{30000, 65535}, "32768 60999", "40000-40099,50000, 70-80\n");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->ports, 60999u - 32768 + 1 - 100 - 1);
  EXPECT_EQ(o->first, (PortRange{32768, 39999}));
  o = SharedEphemeralPorts(PortRange{61000, 65535}, "1024 65535", "61000-62000");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->ports, 65535u - 62001 + 1);
  EXPECT_EQ(o->first, (PortRange{62001, 65535}));
  o = SharedEphemeralPorts(PortRange{61000, 65535}, "1024 65535", "1-65535");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->ports, 0u);
}

TEST(SharedEphemeralPortsTest, UnreadableSysctlTextIsNamed) {
  absl::StatusOr<EphemeralPortOverlap> o = SharedEphemeralPorts(kBpfDefaultPorts, "32768", "");
  ASSERT_FALSE(o.ok());
  EXPECT_THAT(std::string(o.status().message()), HasSubstr("ip_local_port_range"));
  EXPECT_FALSE(SharedEphemeralPorts(kBpfDefaultPorts, "60999 32768", "").ok());
  EXPECT_FALSE(SharedEphemeralPorts(kBpfDefaultPorts, "0 100", "").ok());
  o = SharedEphemeralPorts(kBpfDefaultPorts, "32768 60999", "8000-x");
  ASSERT_FALSE(o.ok());
  EXPECT_THAT(std::string(o.status().message()), HasSubstr("ip_local_reserved_ports"));
}

SnatSettings Valid(SnatMode mode) {
  SnatSettings s;
  s.mode = mode;
  s.egress_interfaces = {"eth0"};
  s.egress_ipv4 = {Ip("192.0.2.1")};
  return s;
}

TEST(ValidateSnatSettingsTest, AcceptsTheUsualConfigs) {
  EXPECT_TRUE(ValidateSnatSettings(SnatSettings{}).ok()) << "off needs nothing";
  EXPECT_TRUE(ValidateSnatSettings(Valid(SnatMode::kNftables)).ok());
  EXPECT_TRUE(ValidateSnatSettings(Valid(SnatMode::kBpf)).ok());
}

TEST(ValidateSnatSettingsTest, ErrorsNameTheField) {
  struct Case {
    std::function<void(SnatSettings&)> mutate;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](SnatSettings& s) { s.egress_interfaces.clear(); }, "snat_egress_interfaces: "},
      {[](SnatSettings& s) { s.egress_interfaces = {"eth0", "eth0"}; }, "snat_egress_interfaces: "},
      {[](SnatSettings& s) { s.egress_interfaces = {"a/b"}; }, "snat_egress_interfaces: "},
      {[](SnatSettings& s) { s.egress_ipv4.clear(); }, "snat_egress_ips: "},
      {[](SnatSettings& s) { s.egress_ipv4 = {Ip("fd00::1")}; }, "snat_egress_ips: "},
      {[](SnatSettings& s) { s.egress_ipv4 = {Ip("192.0.2.1"), Ip("192.0.2.1")}; }, "snat_egress_ips: "},
      {[](SnatSettings& s) { s.egress_ipv4.assign(9, Ip("192.0.2.1")); }, "snat_egress_ips: "},
      {[](SnatSettings& s) { s.exclude_ipv4 = {*IpPrefix::Parse("fd00::/8")}; }, "snat_exclude: "},
      {[](SnatSettings& s) { s.ports = PortRange{10, 5}; }, "snat_port_range: "},
      {[](SnatSettings& s) { s.bpf_max_retries = 0; }, "snat_bpf_max_retries: "},
      {[](SnatSettings& s) { s.bpf_max_flows = 1023; }, "snat_bpf_max_flows: "},
      {[](SnatSettings& s) { s.bpf_max_flows = (1u << 24) + 1; }, "snat_bpf_max_flows: "},
      {[](SnatSettings& s) { s.failover_headroom_percent = 90; }, "snat_failover_headroom_percent: "},
      {[](SnatSettings& s) { s.bpf_pin_dir = "relative"; }, "bpf_pin_dir: "},
      {[](SnatSettings& s) { s.ipv6 = true; }, "snat_egress_ipv6_ips: "},
      {[](SnatSettings& s) {
         s.mode = SnatMode::kBpf;
         s.ipv6 = true;
         s.egress_ipv6 = {Ip("fd00::1")};
       },
       "snat_ipv6: "},
  };
  for (const Case& c : cases) {
    SnatSettings s = Valid(SnatMode::kNftables);
    c.mutate(s);
    absl::Status st = ValidateSnatSettings(s);
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << c.field << " " << st;
    EXPECT_THAT(std::string(st.message()), StartsWith(c.field));
  }
}

TEST(SnatSettingsTest, EffectivePortsPerBackend) {
  EXPECT_EQ(Valid(SnatMode::kBpf).EffectivePorts(), kBpfDefaultPorts);
  EXPECT_EQ(Valid(SnatMode::kNftables).EffectivePorts(), kNftDefaultPorts);
  SnatSettings s = Valid(SnatMode::kBpf);
  s.ports = {40000, 40001};
  EXPECT_EQ(s.EffectivePorts().size(), 2u);
  EXPECT_EQ(DescribeSnat(s),
            "mode=bpf ifaces=eth0 egress=192.0.2.1 exclude= ports=40000-40001 fully_random=true "
            "pin_dir=/sys/fs/bpf/ruleplane attach=auto");
}

// bpf keep-port with a range that cannot hold the pods' default ports: said.
TEST(KeepPortNoteTest, OnlyWhenTheRangeMissesThePodsDefaultPorts) {
  SnatSettings s = Valid(SnatMode::kBpf);  // 61000-65535 by default
  EXPECT_EQ(KeepPortNote(s), "") << "fully random: nothing to keep";
  s.fully_random = false;
  EXPECT_THAT(KeepPortNote(s), HasSubstr("inside snat_port_range 61000-65535, which misses the pods' default "
                                         "ephemeral ports 32768-60999"));
  s.ports = {1024, 65535};
  EXPECT_EQ(KeepPortNote(s), "");
  s.ports = {60999, 65535};
  EXPECT_EQ(KeepPortNote(s), "") << "one shared port is enough to keep some";
  s.ports = {1024, 32767};
  EXPECT_NE(KeepPortNote(s), "");
  s.mode = SnatMode::kNftables;
  EXPECT_EQ(KeepPortNote(s), "") << "nftables: conntrack keeps any free port in its range";
}

// A default address that vanishes while its mode runs is kept (no churn on
// a flap; flows through it work again when it returns); a new one, or one
// that appears while the mode waits, is taken.
TEST(FollowEgressAddressesTest, KeepsAVanishedAddressAndTakesANewOne) {
  SnatSettings running = Valid(SnatMode::kBpf);  // egress 192.0.2.1
  SnatSettings gone = running;
  gone.mode = SnatMode::kOff;
  gone.waiting_mode = SnatMode::kBpf;
  gone.egress_ipv4.clear();
  gone.egress_waiting = "snat_mode bpf waits: interface eth0 has no IPv4 address";
  SnatSettings kept = FollowEgressAddresses(running, gone);
  EXPECT_EQ(kept.mode, SnatMode::kBpf);
  EXPECT_EQ(kept.waiting_mode, SnatMode::kOff);
  EXPECT_EQ(kept.egress_ipv4, running.egress_ipv4);
  EXPECT_EQ(kept.egress_waiting,
            "snat_mode bpf waits: interface eth0 has no IPv4 address; new flows keep using 192.0.2.1 until it has "
            "one");
  EXPECT_TRUE(ValidateSnatSettings(kept).ok());

  // Nothing to keep when the agent started without it, or runs another mode.
  EXPECT_EQ(FollowEgressAddresses(gone, gone), gone);
  SnatSettings nft = running;
  nft.mode = SnatMode::kNftables;
  EXPECT_EQ(FollowEgressAddresses(nft, gone), gone);

  // A successor address is simply taken.
  SnatSettings moved = running;
  moved.egress_ipv4 = {Ip("192.0.2.9")};
  EXPECT_EQ(FollowEgressAddresses(kept, moved), moved);

  // IPv6 alone.
  SnatSettings v6 = Valid(SnatMode::kNftables);
  v6.ipv6 = true;
  v6.egress_ipv6 = {Ip("2001:db8::1")};
  SnatSettings v6gone = v6;
  v6gone.ipv6 = false;
  v6gone.waiting_ipv6 = true;
  v6gone.egress_ipv6.clear();
  v6gone.egress_waiting = "snat_ipv6 waits: interface eth0 has no global IPv6 address";
  SnatSettings v6kept = FollowEgressAddresses(v6, v6gone);
  EXPECT_TRUE(v6kept.ipv6);
  EXPECT_FALSE(v6kept.waiting_ipv6);
  EXPECT_EQ(v6kept.egress_ipv6, v6.egress_ipv6);
  EXPECT_THAT(v6kept.egress_waiting, HasSubstr("keep using 2001:db8::1 until"));
}

}  // namespace
}  // namespace ruleplane::core
