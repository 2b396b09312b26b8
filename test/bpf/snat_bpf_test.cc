// bpf tier: the real snat skeleton, loaded through SnatProgram, driven with
// BPF_PROG_TEST_RUN. Needs CAP_BPF + CAP_NET_ADMIN (root); the pinning and tc
// suites also need CAP_SYS_ADMIN (private bpffs mount, private netns).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "agent/kernel/bpf/snat_program.h"
#include "agent/kernel/bpf/snat_reader.h"
#include "gtest/gtest.h"
#include "test/bpf/harness.h"
#include "test/bpf/packet.h"

#define RP_TEST_CONCAT_INNER_(a, b) a##b
#define RP_TEST_CONCAT_(a, b) RP_TEST_CONCAT_INNER_(a, b)
#define ASSERT_OK(expr)                            \
  do {                                             \
    const absl::Status rp_status_ = (expr);        \
    ASSERT_TRUE(rp_status_.ok()) << rp_status_;    \
  } while (false)
#define EXPECT_OK(expr)                            \
  do {                                             \
    const absl::Status rp_status_ = (expr);        \
    EXPECT_TRUE(rp_status_.ok()) << rp_status_;    \
  } while (false)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  RP_TEST_AOA_IMPL_(RP_TEST_CONCAT_(rp_statusor_, __LINE__), lhs, expr)
#define RP_TEST_AOA_IMPL_(var, lhs, expr)        \
  auto var = (expr);                             \
  ASSERT_TRUE(var.ok()) << var.status();         \
  lhs = std::move(var).value()

namespace ruleplane::testing {
namespace {

using kernel::bpf::EgressAddress;
using kernel::bpf::EgressUsage;
using kernel::bpf::Ipv4Prefix;
using kernel::bpf::kRuleplaneTcFilter;
using kernel::bpf::ReadPinnedSnatMaps;
using kernel::bpf::ReasonCounters;
using kernel::bpf::SnatConfig;
using kernel::bpf::SnatMapsSnapshot;
using kernel::bpf::SnatProgram;
using kernel::bpf::SnatProgramOptions;
using kernel::bpf::TcAttach;
using kernel::bpf::TcDirection;
using kernel::bpf::TcHook;

constexpr Ipv4Addr kPod = Ipv4Addr::FromOctets(10, 244, 1, 5);
constexpr Ipv4Addr kPod2 = Ipv4Addr::FromOctets(10, 244, 1, 6);
constexpr Ipv4Addr kStranger = Ipv4Addr::FromOctets(10, 244, 9, 9);  // not in ruleplane_pods
constexpr Ipv4Addr kRemote = Ipv4Addr::FromOctets(203, 0, 113, 7);
constexpr Ipv4Addr kRemote2 = Ipv4Addr::FromOctets(203, 0, 113, 8);
constexpr Ipv4Addr kEgress1 = Ipv4Addr::FromOctets(192, 0, 2, 10);
constexpr Ipv4Addr kEgress2 = Ipv4Addr::FromOctets(192, 0, 2, 11);
constexpr Ipv4Addr kServiceIp = Ipv4Addr::FromOctets(10, 96, 0, 10);  // inside the excluded 10.96.0.0/12
constexpr Ipv4Addr kRouter = Ipv4Addr::FromOctets(198, 51, 100, 1);

// Frame offsets (Ethernet + 20-byte IPv4 header).
constexpr size_t kIpCsumOff = 14 + 10;
constexpr size_t kSaddrOff = 14 + 12;
constexpr size_t kDaddrOff = 14 + 16;
constexpr size_t kL4Off = 14 + 20;

rp_nat_key NatKey(Ipv4Addr pod, uint16_t pod_port, Ipv4Addr remote, uint16_t remote_port, uint8_t proto) {
  rp_nat_key k{};
  k.saddr = pod.network_order();
  k.daddr = remote.network_order();
  k.sport = htons(pod_port);
  k.dport = htons(remote_port);
  k.proto = proto;
  return k;
}

rp_rnat_key ReverseKey(Ipv4Addr egress, uint16_t egress_port, Ipv4Addr remote, uint16_t remote_port, uint8_t proto) {
  rp_rnat_key k{};
  k.egress_addr = egress.network_order();
  k.remote_addr = remote.network_order();
  k.egress_port = htons(egress_port);
  k.remote_port = htons(remote_port);
  k.proto = proto;
  return k;
}

// Byte offsets where `a` and `b` differ (same length expected).
std::set<size_t> Diff(const Bytes& a, const Bytes& b) {
  std::set<size_t> out;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (a[i] != b[i]) out.insert(i);
  }
  return out;
}

// Offsets [from, from + n).
std::set<size_t> Range(size_t from, size_t n) {
  std::set<size_t> s;
  for (size_t i = 0; i < n; ++i) s.insert(from + i);
  return s;
}

std::set<size_t> Union(std::initializer_list<std::set<size_t>> sets) {
  std::set<size_t> out;
  for (const auto& s : sets) out.insert(s.begin(), s.end());
  return out;
}

bool IsSubset(const std::set<size_t>& sub, const std::set<size_t>& super) {
  return std::includes(super.begin(), super.end(), sub.begin(), sub.end());
}

// `first`, then 198.51.100.1/32, .2/32, ... until one prefix more than an
// exclusion bank holds: the LPM trie answers alone.
std::vector<Ipv4Prefix> MoreThanABank(std::vector<Ipv4Prefix> first) {
  for (uint8_t i = 1; first.size() <= RP_SNAT_FAST_EXCLUSIONS; ++i) {
    first.push_back(Ipv4Prefix{Ipv4Addr::FromOctets(198, 51, 100, i), 32});
  }
  return first;
}

class PrivilegedBpfSnatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = MissingBpfPrivileges(); !why.empty()) GTEST_SKIP() << why;
    Load(SnatConfig{}, {kEgress1});
  }

  // A fresh, unpinned program: pods kPod and kPod2, exclusion 10.96.0.0/12,
  // the given egress addresses.
  void Load(const SnatConfig& config, const std::vector<Ipv4Addr>& egress, bool clock_jiffies = true) {
    prog_.reset();
    SnatProgramOptions options;
    options.config = config;
    options.pin_dir = "";
    options.clock_jiffies = clock_jiffies;
    ASSERT_OK_AND_ASSIGN(prog_, SnatProgram::Create(options));
    ASSERT_OK(prog_->ReplacePodAddresses({kPod, kPod2}));
    ASSERT_OK(prog_->ReplaceExclusions({*Ipv4Prefix::Parse("10.96.0.0/12")}));
    std::vector<EgressAddress> addrs;
    for (Ipv4Addr a : egress) addrs.push_back(EgressAddress{a, false});
    ASSERT_OK(prog_->SetEgressAddresses(addrs));
  }

  TcRun Egress(const Bytes& frame) { return Run(prog_->egress_prog_fd(), frame); }
  TcRun Ingress(const Bytes& frame) { return Run(prog_->ingress_prog_fd(), frame); }

  uint64_t Count(rp_reason reason) {
    auto counters = prog_->ReadReasonCounters();
    EXPECT_TRUE(counters.ok()) << counters.status();
    return counters.ok() ? (*counters)[reason] : ~uint64_t{0};
  }

  std::unique_ptr<SnatProgram> prog_;

 private:
  static TcRun Run(int fd, const Bytes& frame) {
    auto run = RunTc(fd, frame);
    EXPECT_TRUE(run.ok()) << run.status();
    return run.ok() ? *run : TcRun{-1000, {}};
  }
};

// A pod's TCP SYN leaves with the egress address and a port from the range,
// only the source fields and checksums change, and both checksums are valid.
TEST_F(PrivilegedBpfSnatTest, EgressTcpRewritesSourceToEgressAddressAndPort) {
  const Bytes in = BuildTcp(kPod, 40000, kRemote, 443, Text("hello"));
  const TcRun run = Egress(in);
  ASSERT_EQ(run.verdict, TC_ACT_OK);
  ASSERT_EQ(run.out.size(), in.size());
  ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(run.out));
  EXPECT_EQ(p.src, kEgress1);
  EXPECT_EQ(p.dst, kRemote);
  EXPECT_GE(p.sport, 61000);
  EXPECT_LE(p.sport, 65535);
  EXPECT_EQ(p.dport, 443);
  EXPECT_TRUE(p.ip_checksum_ok);
  EXPECT_TRUE(p.l4_checksum_ok);
  EXPECT_EQ(p.l4_payload, Text("hello"));
  EXPECT_TRUE(IsSubset(Diff(in, run.out),
                       Union({Range(kIpCsumOff, 2), Range(kSaddrOff, 4), Range(kL4Off, 2), Range(kL4Off + 16, 2)})));

  ASSERT_OK_AND_ASSIGN(const auto fwd, prog_->LookupNat(NatKey(kPod, 40000, kRemote, 443, kProtoTcp)));
  ASSERT_TRUE(fwd.has_value());
  EXPECT_EQ(fwd->egress_addr, kEgress1.network_order());
  EXPECT_EQ(ntohs(fwd->egress_port), p.sport);
  EXPECT_EQ(fwd->egress_idx, 0);
  ASSERT_OK_AND_ASSIGN(const auto rev, prog_->LookupReverseNat(ReverseKey(kEgress1, p.sport, kRemote, 443, kProtoTcp)));
  ASSERT_TRUE(rev.has_value());
  EXPECT_EQ(rev->pod_addr, kPod.network_order());
  EXPECT_EQ(ntohs(rev->pod_port), 40000);
  EXPECT_EQ(Count(RP_XLATE_EGRESS), 1u);
  EXPECT_EQ(Count(RP_NAT_NEW), 1u);
}

// The remote's reply to (egress address, port) is delivered back to the pod's
// address and port with valid checksums.
TEST_F(PrivilegedBpfSnatTest, IngressReplyRestoresPodAddressAndPort) {
  const TcRun out = Egress(BuildTcp(kPod, 40000, kRemote, 443));
  ASSERT_EQ(out.verdict, TC_ACT_OK);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket sent, ParseFrame(out.out));

  const Bytes reply = BuildTcp(kRemote, 443, kEgress1, sent.sport, Text("world"), kTcpSyn | kTcpAck);
  const TcRun in = Ingress(reply);
  ASSERT_EQ(in.verdict, TC_ACT_OK);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(in.out));
  EXPECT_EQ(p.src, kRemote);
  EXPECT_EQ(p.dst, kPod);
  EXPECT_EQ(p.sport, 443);
  EXPECT_EQ(p.dport, 40000);
  EXPECT_TRUE(p.ip_checksum_ok);
  EXPECT_TRUE(p.l4_checksum_ok);
  EXPECT_EQ(p.l4_payload, Text("world"));
  EXPECT_TRUE(IsSubset(Diff(reply, in.out), Union({Range(kIpCsumOff, 2), Range(kDaddrOff, 4), Range(kL4Off + 2, 2),
                                                   Range(kL4Off + 16, 2)})));
  EXPECT_EQ(Count(RP_XLATE_INGRESS), 1u);
}

// UDP is translated both ways with valid checksums.
TEST_F(PrivilegedBpfSnatTest, UdpIsTranslatedBothWays) {
  const TcRun out = Egress(BuildUdp(kPod, 5353, kRemote, 53, Text("query")));
  ASSERT_EQ(out.verdict, TC_ACT_OK);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket sent, ParseFrame(out.out));
  EXPECT_EQ(sent.src, kEgress1);
  EXPECT_NE(sent.l4_checksum, 0);
  EXPECT_TRUE(sent.ip_checksum_ok);
  EXPECT_TRUE(sent.l4_checksum_ok);

  const TcRun in = Ingress(BuildUdp(kRemote, 53, kEgress1, sent.sport, Text("answer")));
  ASSERT_EQ(in.verdict, TC_ACT_OK);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(in.out));
  EXPECT_EQ(p.dst, kPod);
  EXPECT_EQ(p.dport, 5353);
  EXPECT_TRUE(p.ip_checksum_ok);
  EXPECT_TRUE(p.l4_checksum_ok);
  EXPECT_EQ(p.l4_payload, Text("answer"));
}

// Checksums stay valid across addresses and ports whose one's complement
// sums carry and wrap (the IPv4 checksum is updated in the program, the L4
// one by the kernel's helper): TCP and UDP, both directions, egress addresses
// from both ends of the address space, random pod ports and remotes.
TEST_F(PrivilegedBpfSnatTest, ChecksumsStayValidForManyAddressesAndPorts) {
  std::mt19937 rng(20261122);
  const Ipv4Addr egress_addrs[] = {kEgress1, Ipv4Addr::FromOctets(223, 255, 255, 254), Ipv4Addr::FromOctets(1, 0, 0, 1)};
  int checked = 0;
  for (const Ipv4Addr egress : egress_addrs) {
    Load(SnatConfig{}, {egress});
    for (int i = 0; i < 300; ++i) {
      const uint16_t pod_port = static_cast<uint16_t>(1 + rng() % 65535);
      const uint16_t remote_port = static_cast<uint16_t>(1 + rng() % 65535);
      // 11.0.0.0 - 200.255.255.255: outside the excluded 10.96.0.0/12.
      const Ipv4Addr remote = Ipv4Addr::FromOctets(static_cast<uint8_t>(11 + rng() % 190), static_cast<uint8_t>(rng()),
                                                   static_cast<uint8_t>(rng()), static_cast<uint8_t>(rng()));
      const Ipv4Addr pod = (i % 2) ? kPod : kPod2;
      const bool tcp = (i % 3) != 0;
      const Bytes payload = Text(absl::StrCat("payload-", i));
      const Bytes out_frame = tcp ? BuildTcp(pod, pod_port, remote, remote_port, payload, kTcpAck)
                                  : BuildUdp(pod, pod_port, remote, remote_port, payload);
      const TcRun out = Egress(out_frame);
      ASSERT_EQ(out.verdict, TC_ACT_OK) << "flow " << i;
      ASSERT_OK_AND_ASSIGN(const ParsedPacket sent, ParseFrame(out.out));
      ASSERT_EQ(sent.src, egress);
      ASSERT_TRUE(sent.ip_checksum_ok) << "egress flow " << i << " via " << egress.ToString();
      ASSERT_TRUE(sent.l4_checksum_ok) << "egress flow " << i << " via " << egress.ToString();
      ASSERT_EQ(sent.l4_payload, payload);

      const Bytes reply = tcp ? BuildTcp(remote, remote_port, egress, sent.sport, payload, kTcpAck)
                              : BuildUdp(remote, remote_port, egress, sent.sport, payload);
      const TcRun in = Ingress(reply);
      ASSERT_EQ(in.verdict, TC_ACT_OK) << "flow " << i;
      ASSERT_OK_AND_ASSIGN(const ParsedPacket back, ParseFrame(in.out));
      ASSERT_EQ(back.dst, pod);
      ASSERT_EQ(back.dport, pod_port);
      ASSERT_TRUE(back.ip_checksum_ok) << "ingress flow " << i << " via " << egress.ToString();
      ASSERT_TRUE(back.l4_checksum_ok) << "ingress flow " << i << " via " << egress.ToString();
      ++checked;
    }
  }
  EXPECT_EQ(checked, 900);
}

// A UDP datagram sent without checksum (0) keeps "no checksum" both ways
// instead of getting a bogus incremental update.
TEST_F(PrivilegedBpfSnatTest, UdpZeroChecksumStaysZero) {
  const TcRun out = Egress(BuildUdp(kPod, 5353, kRemote, 53, Text("query"), /*zero_checksum=*/true));
  ASSERT_EQ(out.verdict, TC_ACT_OK);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket sent, ParseFrame(out.out));
  EXPECT_EQ(sent.src, kEgress1);
  EXPECT_EQ(sent.l4_checksum, 0);
  EXPECT_TRUE(sent.ip_checksum_ok);

  const TcRun in = Ingress(BuildUdp(kRemote, 53, kEgress1, sent.sport, Text("answer"), /*zero_checksum=*/true));
  ASSERT_EQ(in.verdict, TC_ACT_OK);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(in.out));
  EXPECT_EQ(p.dst, kPod);
  EXPECT_EQ(p.dport, 5353);
  EXPECT_EQ(p.l4_checksum, 0);
  EXPECT_TRUE(p.ip_checksum_ok);
}

// ICMP echo uses the identifier as the port: the request leaves with a
// translated id and the reply comes back with the pod's id.
TEST_F(PrivilegedBpfSnatTest, IcmpEchoTranslatesIdentifier) {
  const TcRun out = Egress(BuildIcmpEcho(kPod, kRemote, kIcmpEchoRequest, 0x4242, 1, Text("ping")));
  ASSERT_EQ(out.verdict, TC_ACT_OK);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket sent, ParseFrame(out.out));
  EXPECT_EQ(sent.src, kEgress1);
  EXPECT_EQ(sent.icmp_type, kIcmpEchoRequest);
  EXPECT_GE(sent.icmp_id, 61000);
  EXPECT_TRUE(sent.ip_checksum_ok);
  EXPECT_TRUE(sent.l4_checksum_ok);
  EXPECT_EQ(sent.l4_payload, Text("ping"));

  const TcRun in = Ingress(BuildIcmpEcho(kRemote, kEgress1, kIcmpEchoReply, sent.icmp_id, 1, Text("ping")));
  ASSERT_EQ(in.verdict, TC_ACT_OK);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(in.out));
  EXPECT_EQ(p.dst, kPod);
  EXPECT_EQ(p.icmp_id, 0x4242);
  EXPECT_TRUE(p.ip_checksum_ok);
  EXPECT_TRUE(p.l4_checksum_ok);
}

// Traffic to an excluded CIDR, or to one of our own egress addresses, keeps
// the pod source and is handed on untouched.
TEST_F(PrivilegedBpfSnatTest, ExcludedDestinationIsUntouched) {
  const Bytes to_service = BuildTcp(kPod, 40000, kServiceIp, 80);
  const TcRun run = Egress(to_service);
  EXPECT_EQ(run.verdict, TC_ACT_UNSPEC);
  EXPECT_EQ(run.out, to_service);

  const Bytes to_node = BuildTcp(kPod, 40000, kEgress1, 10250);
  const TcRun run2 = Egress(to_node);
  EXPECT_EQ(run2.verdict, TC_ACT_UNSPEC);
  EXPECT_EQ(run2.out, to_node);
  EXPECT_EQ(Count(RP_PASS_EXCLUDED), 2u);
  EXPECT_EQ(Count(RP_NAT_NEW), 0u);
}

// The L4 checksum written by the program itself (it reads skb->ip_summed;
// BPF_PROG_TEST_RUN packets are CHECKSUM_NONE, so the full-checksum update)
// and through bpf_l4_csum_replace (kept for CHECKSUM_COMPLETE and kernels
// without bpf_cast_to_kern_ctx) give the same bytes, valid checksums, for
// TCP, UDP (with and without a checksum) and ICMP echo, both directions.
// The CHECKSUM_PARTIAL case only happens with real traffic: see the e2e
// test_bpf_checksums_hold_when_the_kernel_finishes_them.
TEST_F(PrivilegedBpfSnatTest, DirectAndHelperChecksumsAgree) {
  std::unique_ptr<SnatProgram> progs[2];
  for (const bool direct : {true, false}) {
    SnatProgramOptions options;
    options.pin_dir = "";
    options.csum_direct = direct;
    options.config.port_min = 61000;
    options.config.port_max = 61000;  // one port: both programs pick it
    ASSERT_OK_AND_ASSIGN(progs[direct ? 0 : 1], SnatProgram::Create(options));
    SnatProgram& p = *progs[direct ? 0 : 1];
    ASSERT_OK(p.ReplacePodAddresses({kPod}));
    ASSERT_OK(p.SetEgressAddresses({{kEgress1, false}}));
  }
  if (!progs[0]->csum_direct()) GTEST_SKIP() << "kernel without bpf_cast_to_kern_ctx (< 6.2): helper only";
  EXPECT_FALSE(progs[1]->csum_direct());

  // Every flow to its own remote, so the one port serves all of them.
  auto remote = [](uint8_t i) { return Ipv4Addr::FromOctets(203, 0, 113, i); };
  const std::vector<std::pair<Bytes, Bytes>> cases = {
      {BuildTcp(kPod, 40000, remote(1), 443),
       BuildTcp(remote(1), 443, kEgress1, 61000, {}, kTcpSyn | kTcpAck)},
      {BuildTcp(kPod, 40001, remote(2), 80, Text("GET / HTTP/1.1\r\n\r\n"), kTcpAck),
       BuildTcp(remote(2), 80, kEgress1, 61000, Text("HTTP/1.1 200 OK\r\n"), kTcpAck)},
      {BuildUdp(kPod, 5353, remote(3), 53, Text("query")), BuildUdp(remote(3), 53, kEgress1, 61000, Text("answer"))},
      {BuildUdp(kPod, 5354, remote(4), 53, Text("query"), /*zero_checksum=*/true),
       BuildUdp(remote(4), 53, kEgress1, 61000, Text("answer"), /*zero_checksum=*/true)},
      {BuildIcmpEcho(kPod, remote(5), kIcmpEchoRequest, 0x4242, 1, Text("ping")),
       BuildIcmpEcho(remote(5), kEgress1, kIcmpEchoReply, 61000, 1, Text("ping"))},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("case ", i));
    const auto& [out, back] = cases[i];
    for (const auto& [frame, egress] : {std::pair{&out, true}, std::pair{&back, false}}) {
      TcRun runs[2];
      for (int k = 0; k < 2; ++k) {
        ASSERT_OK_AND_ASSIGN(runs[k], RunTc(egress ? progs[k]->egress_prog_fd() : progs[k]->ingress_prog_fd(), *frame));
      }
      ASSERT_EQ(runs[0].verdict, TC_ACT_OK) << (egress ? "egress" : "ingress");
      ASSERT_EQ(runs[1].verdict, TC_ACT_OK) << (egress ? "egress" : "ingress");
      EXPECT_EQ(runs[0].out, runs[1].out) << (egress ? "egress" : "ingress");
      EXPECT_NE(runs[0].out, *frame);
      ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(runs[0].out));
      EXPECT_TRUE(p.ip_checksum_ok);
      EXPECT_TRUE(p.l4_checksum_ok);
      if (i == 3) {
        EXPECT_EQ(p.l4_checksum, 0) << "UDP without a checksum keeps none";
      }
      if (egress) {
        EXPECT_EQ(p.src, kEgress1);
      } else {
        EXPECT_EQ(p.dst, kPod);
      }
    }
  }
}

// Exclusions: a few prefixes are scanned from a bank of ruleplane_exclf,
// more than a bank holds go to the trie alone; replacing the set switches
// banks, and a translated flow's exclusion state follows each switch.
TEST_F(PrivilegedBpfSnatTest, ExclusionBanksAndTrieAgree) {
  const Ipv4Addr in_vpc = Ipv4Addr::FromOctets(172, 20, 1, 1);
  auto excluded = [&](Ipv4Addr dst) {
    return Egress(BuildTcp(kPod, 40000, dst, 80)).verdict == TC_ACT_UNSPEC;
  };
  auto cfg_bank = [&]() {
    auto fd = MapFdByName(prog_->egress_prog_fd(), "ruleplane_cfg");
    EXPECT_TRUE(fd.ok()) << fd.status();
    rp_snat_cfg c{};
    const uint32_t zero = 0;
    EXPECT_EQ(bpf_map_lookup_elem(fd->get(), &zero, &c), 0);
    return c.excl_bank;
  };

  // Loaded with 10.96.0.0/12: in a bank.
  const uint32_t first = cfg_bank();
  EXPECT_TRUE(first == RP_EXCL_BANK_0 || first == RP_EXCL_BANK_1) << first;
  EXPECT_TRUE(excluded(kServiceIp));
  EXPECT_FALSE(excluded(in_vpc));

  // Two prefixes, one of them not canonical on input: the other bank.
  ASSERT_OK(prog_->ReplaceExclusions({Ipv4Prefix{kServiceIp, 12}, *Ipv4Prefix::Parse("172.16.0.0/12")}));
  EXPECT_NE(cfg_bank(), first);
  ASSERT_OK_AND_ASSIGN(auto bank, prog_->ReadExclusionBank());
  ASSERT_TRUE(bank.has_value());
  EXPECT_EQ(*bank, (std::vector<Ipv4Prefix>{*Ipv4Prefix::Parse("10.96.0.0/12"), *Ipv4Prefix::Parse("172.16.0.0/12")}));
  EXPECT_TRUE(excluded(kServiceIp));
  EXPECT_TRUE(excluded(in_vpc));
  EXPECT_FALSE(excluded(kRemote));

  // The bank answers, not the trie: take 172.16.0.0/12 out of the trie
  // behind the agent's back, and it stays excluded until egress is told to
  // use the trie (what maps of an agent without banks say).
  ASSERT_OK_AND_ASSIGN(const UniqueFd trie, MapFdByName(prog_->egress_prog_fd(), "ruleplane_excl"));
  const rp_lpm4_key vpc_key{12, Ipv4Addr::FromOctets(172, 16, 0, 0).network_order()};
  ASSERT_EQ(bpf_map_delete_elem(trie.get(), &vpc_key), 0);
  EXPECT_TRUE(excluded(in_vpc));
  {
    ASSERT_OK_AND_ASSIGN(const UniqueFd cfg, MapFdByName(prog_->egress_prog_fd(), "ruleplane_cfg"));
    const uint32_t zero = 0;
    rp_snat_cfg c{};
    ASSERT_EQ(bpf_map_lookup_elem(cfg.get(), &zero, &c), 0);
    c.excl_bank = RP_EXCL_BANK_TRIE;
    ASSERT_EQ(bpf_map_update_elem(cfg.get(), &zero, &c, BPF_ANY), 0);
  }
  EXPECT_FALSE(excluded(in_vpc)) << "the trie answers once excl_bank is 0";
  EXPECT_TRUE(excluded(kServiceIp));

  // More prefixes than a bank holds: the trie alone, and it is complete.
  const std::vector<Ipv4Prefix> many =
      MoreThanABank({*Ipv4Prefix::Parse("10.96.0.0/12"), *Ipv4Prefix::Parse("172.16.0.0/12")});
  ASSERT_OK(prog_->ReplaceExclusions(many));
  EXPECT_EQ(cfg_bank(), RP_EXCL_BANK_TRIE);
  ASSERT_OK_AND_ASSIGN(bank, prog_->ReadExclusionBank());
  EXPECT_FALSE(bank.has_value());
  EXPECT_TRUE(excluded(in_vpc));
  EXPECT_TRUE(excluded(Ipv4Addr::FromOctets(198, 51, 100, 15)));
  EXPECT_FALSE(excluded(Ipv4Addr::FromOctets(198, 51, 100, 200)));

  // Back to a few, and a change of egress addresses keeps the bank.
  ASSERT_OK(prog_->ReplaceExclusions({*Ipv4Prefix::Parse("0.0.0.0/0")}));
  const uint32_t now = cfg_bank();
  EXPECT_NE(now, RP_EXCL_BANK_TRIE);
  ASSERT_OK(prog_->SetEgressAddresses({{kEgress2, false}}));
  EXPECT_EQ(cfg_bank(), now);
  EXPECT_TRUE(excluded(kRemote)) << "/0 excludes everything";
  ASSERT_OK(prog_->ReplaceExclusions({}));
  EXPECT_FALSE(excluded(kServiceIp)) << "an empty bank excludes nothing";
}

// A source that is not a known pod address (the node itself, hostNetwork
// pods) is handed on untouched.
TEST_F(PrivilegedBpfSnatTest, NonPodSourceIsUntouched) {
  const Bytes in = BuildTcp(kStranger, 40000, kRemote, 443);
  const TcRun run = Egress(in);
  EXPECT_EQ(run.verdict, TC_ACT_UNSPEC);
  EXPECT_EQ(run.out, in);
  EXPECT_EQ(Count(RP_PASS_NOT_POD), 1u);
  EXPECT_EQ(Count(RP_XLATE_EGRESS), 0u);
}

// IPv6 is not ours on either hook.
TEST_F(PrivilegedBpfSnatTest, Ipv6PassesUntouched) {
  const Bytes in = BuildIpv6Udp(5353, 53);
  const TcRun out = Egress(in);
  EXPECT_EQ(out.verdict, TC_ACT_UNSPEC);
  EXPECT_EQ(out.out, in);
  const TcRun back = Ingress(in);
  EXPECT_EQ(back.verdict, TC_ACT_UNSPEC);
  EXPECT_EQ(back.out, in);
  ASSERT_OK_AND_ASSIGN(const ReasonCounters counters, prog_->ReadReasonCounters());
  for (uint64_t c : counters) EXPECT_EQ(c, 0u);
}

// Ingress traffic to the egress address without NAT state (the host's own
// connections) is handed to the host untouched.
TEST_F(PrivilegedBpfSnatTest, IngressWithoutStateIsUntouched) {
  const Bytes in = BuildTcp(kRemote, 443, kEgress1, 61000, {}, kTcpAck);
  const TcRun run = Ingress(in);
  EXPECT_EQ(run.verdict, TC_ACT_UNSPEC);
  EXPECT_EQ(run.out, in);
  EXPECT_EQ(Count(RP_PASS_NO_STATE), 1u);
}

// Packets of one flow keep their translation; another flow to the same remote
// endpoint needs, and gets, another port.
TEST_F(PrivilegedBpfSnatTest, SameFlowReusesTranslation) {
  const Bytes syn = BuildTcp(kPod, 40000, kRemote, 443);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket first, ParseFrame(Egress(syn).out));
  ASSERT_OK_AND_ASSIGN(const ParsedPacket again, ParseFrame(Egress(BuildTcp(kPod, 40000, kRemote, 443, Text("data"),
                                                                              kTcpAck)).out));
  EXPECT_EQ(again.src, first.src);
  EXPECT_EQ(again.sport, first.sport);
  EXPECT_EQ(Count(RP_NAT_NEW), 1u);
  EXPECT_EQ(Count(RP_XLATE_EGRESS), 2u);

  ASSERT_OK_AND_ASSIGN(const ParsedPacket other, ParseFrame(Egress(BuildTcp(kPod2, 40000, kRemote, 443)).out));
  EXPECT_EQ(other.src, kEgress1);
  EXPECT_NE(other.sport, first.sport);
  EXPECT_EQ(Count(RP_NAT_NEW), 2u);
}

// snat_fully_random off (keep_port): a new flow keeps the pod's port when it
// is in the range and free; a second pod with the same port to the same
// remote gets another one; a port outside the range is drawn as usual. On
// (the default), ports are drawn at random whatever the pod's port.
TEST_F(PrivilegedBpfSnatTest, KeepPortTriesThePodsOwnPortFirst) {
  SnatConfig config;
  config.port_min = 1024;
  config.port_max = 65535;
  config.keep_port = true;
  Load(config, {kEgress1});
  for (uint16_t sport : {40000, 40001, 55555}) {
    ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(Egress(BuildTcp(kPod, sport, kRemote, 443)).out));
    EXPECT_EQ(p.src, kEgress1);
    EXPECT_EQ(p.sport, sport) << "free and in range: kept";
    EXPECT_TRUE(p.l4_checksum_ok);
  }
  ASSERT_OK_AND_ASSIGN(const ParsedPacket taken, ParseFrame(Egress(BuildTcp(kPod2, 40000, kRemote, 443)).out));
  EXPECT_EQ(taken.src, kEgress1);
  EXPECT_NE(taken.sport, 40000) << "kPod's flow holds 40000 towards kRemote:443";
  ASSERT_OK_AND_ASSIGN(const ParsedPacket elsewhere, ParseFrame(Egress(BuildTcp(kPod2, 40000, kRemote2, 443)).out));
  EXPECT_EQ(elsewhere.sport, 40000) << "another remote: the port is free there";
  // The reply of the kept-port flow reaches its pod.
  ASSERT_OK_AND_ASSIGN(const ParsedPacket back,
                       ParseFrame(Ingress(BuildTcp(kRemote, 443, kEgress1, 40001, {}, kTcpSyn | kTcpAck)).out));
  EXPECT_EQ(back.dst, kPod);
  EXPECT_EQ(back.dport, 40001);

  config.port_min = 61000;
  Load(config, {kEgress1});
  ASSERT_OK_AND_ASSIGN(const ParsedPacket outside, ParseFrame(Egress(BuildTcp(kPod, 40000, kRemote, 443)).out));
  EXPECT_GE(outside.sport, 61000) << "not in range: drawn from the range";

  // fully random: each flow keeps its port by a 1 in 64512 chance.
  config.port_min = 1024;
  config.keep_port = false;
  Load(config, {kEgress1});
  int kept = 0;
  for (uint16_t sport = 42000; sport < 42020; ++sport) {
    ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(Egress(BuildTcp(kPod, sport, kRemote, 443)).out));
    kept += p.sport == sport;
  }
  EXPECT_LE(kept, 1);
}

// With a 2-port range and two egress addresses, flows 3 and 4 to the same
// remote endpoint fail over to the second address (counted), flow 5 is
// dropped with RP_DROP_NO_PORT, and a flow to another remote still fits on
// the first address (the mapping is endpoint-dependent).
TEST_F(PrivilegedBpfSnatTest, ExhaustionFailsOverThenDrops) {
  SnatConfig config;
  config.port_min = 40000;
  config.port_max = 40001;
  Load(config, {kEgress1, kEgress2});

  std::vector<ParsedPacket> sent;
  for (uint16_t sport = 1001; sport <= 1004; ++sport) {
    const TcRun run = Egress(BuildTcp(kPod, sport, kRemote, 443));
    ASSERT_EQ(run.verdict, TC_ACT_OK) << "flow from port " << sport;
    ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(run.out));
    EXPECT_TRUE(p.ip_checksum_ok);
    EXPECT_TRUE(p.l4_checksum_ok);
    sent.push_back(p);
  }
  EXPECT_EQ(sent[0].src, kEgress1);
  EXPECT_EQ(sent[1].src, kEgress1);
  EXPECT_EQ(sent[2].src, kEgress2);
  EXPECT_EQ(sent[3].src, kEgress2);
  const std::set<uint16_t> range = {40000, 40001};
  EXPECT_EQ((std::set<uint16_t>{sent[0].sport, sent[1].sport}), range);
  EXPECT_EQ((std::set<uint16_t>{sent[2].sport, sent[3].sport}), range);
  EXPECT_EQ(Count(RP_FAILOVER), 2u);
  EXPECT_EQ(Count(RP_DROP_NO_PORT), 0u);

  const TcRun fifth = Egress(BuildTcp(kPod, 1005, kRemote, 443));
  EXPECT_EQ(fifth.verdict, TC_ACT_SHOT);
  EXPECT_EQ(Count(RP_DROP_NO_PORT), 1u);
  EXPECT_EQ(Count(RP_FAILOVER), 2u);

  ASSERT_OK_AND_ASSIGN(const ParsedPacket elsewhere, ParseFrame(Egress(BuildTcp(kPod, 1005, kRemote2, 443)).out));
  EXPECT_EQ(elsewhere.src, kEgress1);

  ASSERT_OK_AND_ASSIGN(const std::vector<EgressUsage> usage, prog_->ReadEgressUsage());
  ASSERT_GE(usage.size(), 2u);
  EXPECT_TRUE(usage[0].live);
  EXPECT_EQ(usage[0].address.addr, kEgress1);
  EXPECT_EQ(usage[0].allocs, 3u);     // flows 1, 2 and the one to kRemote2
  EXPECT_EQ(usage[0].exhausted, 3u);  // flows 3, 4, 5
  // A 2-port range is probed fully (2 ports), not max_retries times.
  EXPECT_GE(usage[0].collisions, 6u);
  EXPECT_LE(usage[0].collisions, 8u);
  EXPECT_EQ(usage[1].address.addr, kEgress2);
  EXPECT_EQ(usage[1].allocs, 2u);
  EXPECT_EQ(usage[1].exhausted, 1u);
  EXPECT_FALSE(usage[2].live);
}

// A pod flow with no egress address configured is dropped, not leaked.
TEST_F(PrivilegedBpfSnatTest, NoEgressAddressDrops) {
  ASSERT_OK(prog_->SetEgressAddresses({}));
  const TcRun run = Egress(BuildTcp(kPod, 40000, kRemote, 443));
  EXPECT_EQ(run.verdict, TC_ACT_SHOT);
  EXPECT_EQ(Count(RP_DROP_NO_EGRESS_ADDR), 1u);
}

// A draining egress address gets no new flows but keeps its existing ones.
TEST_F(PrivilegedBpfSnatTest, DrainingAddressKeepsFlowsButTakesNoNewOnes) {
  ASSERT_OK(prog_->SetEgressAddresses({{kEgress1, false}, {kEgress2, false}}));
  ASSERT_OK_AND_ASSIGN(const ParsedPacket before, ParseFrame(Egress(BuildTcp(kPod, 40000, kRemote, 443)).out));
  ASSERT_EQ(before.src, kEgress1);
  ASSERT_OK(prog_->SetEgressAddresses({{kEgress1, true}, {kEgress2, false}}));

  ASSERT_OK_AND_ASSIGN(const ParsedPacket old_flow, ParseFrame(Egress(BuildTcp(kPod, 40000, kRemote, 443)).out));
  EXPECT_EQ(old_flow.src, kEgress1);
  EXPECT_EQ(old_flow.sport, before.sport);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket new_flow, ParseFrame(Egress(BuildTcp(kPod, 40001, kRemote, 443)).out));
  EXPECT_EQ(new_flow.src, kEgress2);
  EXPECT_EQ(Count(RP_FAILOVER), 0u);  // draining is not exhaustion
}

// Protocols we cannot translate, and ICMP that is not an echo request, are
// dropped rather than leaving with the pod address.
TEST_F(PrivilegedBpfSnatTest, UntranslatableTrafficFromPodIsDropped) {
  EXPECT_EQ(Egress(BuildIpv4(kPod, kRemote, kProtoGre, Text("0123456789abcdef"))).verdict, TC_ACT_SHOT);
  EXPECT_EQ(Egress(BuildIcmpEcho(kPod, kRemote, kIcmpEchoReply, 7, 1)).verdict, TC_ACT_SHOT);
  EXPECT_EQ(Count(RP_DROP_UNSUPPORTED_PROTO), 2u);
}

// A "fragmentation needed" error about a translated UDP flow reaches the pod:
// outer destination, quoted source address and port are restored and the
// outer IPv4, quoted IPv4 and ICMP checksums are all valid.
TEST_F(PrivilegedBpfSnatTest, IcmpErrorForTranslatedFlowReachesPod) {
  const TcRun out = Egress(BuildUdp(kPod, 5353, kRemote, 53, Text("a large query")));
  ASSERT_EQ(out.verdict, TC_ACT_OK);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket sent, ParseFrame(out.out));

  const Bytes error = BuildIcmpError(kRouter, kEgress1, kIcmpDestUnreach, kIcmpFragNeeded, 1280, out.out);
  const TcRun in = Ingress(error);
  ASSERT_EQ(in.verdict, TC_ACT_OK);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(in.out));
  EXPECT_EQ(p.src, kRouter);
  EXPECT_EQ(p.dst, kPod);
  EXPECT_EQ(p.icmp_type, kIcmpDestUnreach);
  EXPECT_TRUE(p.ip_checksum_ok);
  EXPECT_TRUE(p.l4_checksum_ok);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket inner, ParseIpv4(p.l4_payload, /*verify_l4=*/false));
  EXPECT_EQ(inner.src, kPod);
  EXPECT_EQ(inner.dst, kRemote);
  EXPECT_EQ(inner.sport, 5353);
  EXPECT_EQ(inner.dport, 53);
  EXPECT_TRUE(inner.ip_checksum_ok);
  EXPECT_EQ(Count(RP_XLATE_INGRESS), 1u);

  // The same error about a flow we never translated is the host's business.
  const Bytes stray = BuildIcmpError(kRouter, kEgress1, kIcmpDestUnreach, kIcmpFragNeeded, 1280,
                                     BuildUdp(kEgress1, 33333, kRemote, 53));
  const TcRun in2 = Ingress(stray);
  EXPECT_EQ(in2.verdict, TC_ACT_UNSPEC);
  EXPECT_EQ(in2.out, stray);
  (void)sent;
}

// The fragments of a pod's UDP datagram leave with the same translated source
// as their first fragment, so the far side can reassemble them, and the
// reassembled datagram's checksum is valid; a stray non-first fragment is
// dropped instead of leaking the pod address.
TEST_F(PrivilegedBpfSnatTest, FragmentsFollowTheirFirstFragment) {
  const Bytes datagram = BuildUdp(kPod, 5353, kRemote, 53, Text("0123456789abcdef0123456789abcdef0123456789"));
  auto [first, second] = Fragment(datagram, 24);  // UDP header + 16 bytes

  const TcRun out1 = Egress(first);
  ASSERT_EQ(out1.verdict, TC_ACT_OK);
  const TcRun out2 = Egress(second);
  ASSERT_EQ(out2.verdict, TC_ACT_OK);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket f2, ParseFrame(out2.out));
  EXPECT_EQ(f2.src, kEgress1);
  EXPECT_TRUE(f2.ip_checksum_ok);

  ASSERT_OK_AND_ASSIGN(const Bytes whole, Reassemble(out1.out, out2.out));
  ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(whole));
  EXPECT_EQ(p.src, kEgress1);
  EXPECT_GE(p.sport, 61000);
  EXPECT_TRUE(p.l4_checksum_ok);

  Bytes stray = second;
  stray[14 + 4] ^= 0xff;  // another IP id: no first fragment seen
  stray[kIpCsumOff] = 0;
  stray[kIpCsumOff + 1] = 0;
  const uint16_t csum = InternetChecksum(absl::MakeConstSpan(stray).subspan(14, 20));
  stray[kIpCsumOff] = static_cast<uint8_t>(csum >> 8);
  stray[kIpCsumOff + 1] = static_cast<uint8_t>(csum);
  EXPECT_EQ(Egress(stray).verdict, TC_ACT_SHOT);
  EXPECT_EQ(Count(RP_DROP_FRAGMENT), 1u);
}

// Two CPUs translate the first packet of the same new flow at once: each
// allocates a port, one insert of the forward entry wins, and the other CPU
// gives its port back (RP_NAT_RACE) and sends its packet with the winner's
// mapping. Every flow ends with one mapping and one claimed port, whatever
// the interleaving.
TEST_F(PrivilegedBpfSnatTest, ConcurrentFirstPacketsAgreeOnOneMapping) {
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE && cpus.size() < 2; ++c) {
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  }
  if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs";

  // Each flow goes to its own destination port, so the port range never
  // runs out; the threads meet at every flow and send its first packet.
  constexpr int kMaxFlows = 20000;
  constexpr int kEnoughRaces = 20;
  struct Seen {
    int verdict = 0;
    Ipv4Addr src;
    uint16_t sport = 0;
  };
  std::vector<std::array<Seen, 2>> seen(kMaxFlows);
  std::atomic<int> arrived[2] = {0, 0};
  std::atomic<bool> stop{false};
  std::atomic<int> done[2] = {0, 0};
  const int egress_fd = prog_->egress_prog_fd();
  auto worker = [&](int me) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpus[me], &one);
    if (sched_setaffinity(0, sizeof(one), &one) != 0) stop = true;
    for (int i = 0; i < kMaxFlows && !stop.load(std::memory_order_relaxed); ++i) {
      arrived[me].store(i + 1, std::memory_order_release);
      while (arrived[1 - me].load(std::memory_order_acquire) < i + 1 && !stop.load(std::memory_order_relaxed)) {
      }
      if (arrived[1 - me].load(std::memory_order_acquire) < i + 1) break;  // the other thread stopped
      absl::StatusOr<TcRun> run =
          RunTc(egress_fd, BuildUdp(kPod, 40000, kRemote, static_cast<uint16_t>(10000 + i), Text("x")));
      Seen& mine = seen[i][me];
      mine.verdict = run.ok() ? run->verdict : -1000;
      if (absl::StatusOr<ParsedPacket> p = run.ok() ? ParseFrame(run->out) : run.status(); p.ok()) {
        mine.src = p->src;
        mine.sport = p->sport;
      }
      done[me] = i + 1;
      if (me == 0) {
        // Enough races seen (counted every 500 flows): stop early.
        if ((i + 1) % 500 == 0) {
          absl::StatusOr<ReasonCounters> c = prog_->ReadReasonCounters();
          if (c.ok() && (*c)[RP_NAT_RACE] >= kEnoughRaces) stop = true;
        }
      }
    }
    stop = true;
  };
  std::thread t0(worker, 0), t1(worker, 1);
  t0.join();
  t1.join();
  // Flows both threads sent: the same mapping for both packets (the last
  // flow may have been sent by one thread only).
  const int n = std::max(done[0].load(), done[1].load());
  const int both = std::min(done[0].load(), done[1].load());
  ASSERT_GT(both, 0);
  EXPECT_GE(both, n - 1);
  for (int i = 0; i < both; ++i) {
    ASSERT_EQ(seen[i][0].verdict, TC_ACT_OK) << "flow " << i;
    ASSERT_EQ(seen[i][1].verdict, TC_ACT_OK) << "flow " << i;
    ASSERT_EQ(seen[i][0].src, kEgress1) << "flow " << i;
    ASSERT_EQ(seen[i][0].src, seen[i][1].src) << "flow " << i;
    ASSERT_EQ(seen[i][0].sport, seen[i][1].sport) << "flow " << i << ": two mappings for one flow";
  }
  const uint64_t races = Count(RP_NAT_RACE);
  // One mapping per flow, and the loser's port back in the pool: exactly
  // one reverse entry per flow.
  EXPECT_EQ(Count(RP_NAT_NEW), static_cast<uint64_t>(n));
  ASSERT_OK_AND_ASSIGN(const UniqueFd rnat, MapFdByName(egress_fd, "ruleplane_rnat"));
  uint64_t reverse = 0;
  rp_rnat_key key{}, next{};
  for (const void* prev = nullptr; bpf_map_get_next_key(rnat.get(), prev, &next) == 0; prev = &key) {
    key = next;
    ++reverse;
  }
  EXPECT_EQ(reverse, static_cast<uint64_t>(n)) << races << " races";
  // Without a race the test proved nothing about the path it is for.
  EXPECT_GT(races, 0u) << "no two first packets met in " << n << " flows";
  RecordProperty("flows", n);
  RecordProperty("races", static_cast<int>(races));
}

// If the LRU evicted only the reverse half of a mapping, the next packet
// re-claims the same port, so the flow's tuple does not change.
TEST_F(PrivilegedBpfSnatTest, LostReverseHalfIsReclaimed) {
  ASSERT_OK_AND_ASSIGN(const ParsedPacket first, ParseFrame(Egress(BuildTcp(kPod, 40000, kRemote, 443)).out));
  ASSERT_OK_AND_ASSIGN(const UniqueFd rnat, MapFdByName(prog_->egress_prog_fd(), "ruleplane_rnat"));
  const rp_rnat_key rk = ReverseKey(kEgress1, first.sport, kRemote, 443, kProtoTcp);
  ASSERT_EQ(bpf_map_delete_elem(rnat.get(), &rk), 0);

  ASSERT_OK_AND_ASSIGN(const ParsedPacket again, ParseFrame(Egress(BuildTcp(kPod, 40000, kRemote, 443)).out));
  EXPECT_EQ(again.sport, first.sport);
  ASSERT_OK_AND_ASSIGN(const auto rev, prog_->LookupReverseNat(rk));
  ASSERT_TRUE(rev.has_value());
  EXPECT_EQ(rev->pod_addr, kPod.network_order());
  EXPECT_EQ(Count(RP_NAT_STALE), 0u);
  EXPECT_EQ(Count(RP_NAT_RESTORED), 1u);
}

// If another flow took the port after the reverse half was evicted, the old
// forward entry is stale: the flow gets a new mapping and it is counted.
TEST_F(PrivilegedBpfSnatTest, ReclaimedPortGivesFlowNewMapping) {
  ASSERT_OK_AND_ASSIGN(const ParsedPacket first, ParseFrame(Egress(BuildTcp(kPod, 40000, kRemote, 443)).out));
  ASSERT_OK_AND_ASSIGN(const UniqueFd rnat, MapFdByName(prog_->egress_prog_fd(), "ruleplane_rnat"));
  const rp_rnat_key rk = ReverseKey(kEgress1, first.sport, kRemote, 443, kProtoTcp);
  rp_rnat_val thief{};
  thief.pod_addr = kPod2.network_order();
  thief.pod_port = htons(50000);
  ASSERT_EQ(bpf_map_update_elem(rnat.get(), &rk, &thief, BPF_ANY), 0);

  ASSERT_OK_AND_ASSIGN(const ParsedPacket again, ParseFrame(Egress(BuildTcp(kPod, 40000, kRemote, 443)).out));
  EXPECT_NE(again.sport, first.sport);
  EXPECT_EQ(Count(RP_NAT_STALE), 1u);
  EXPECT_EQ(Count(RP_NAT_NEW), 2u);
  ASSERT_OK_AND_ASSIGN(const auto rev, prog_->LookupReverseNat(rk));
  ASSERT_TRUE(rev.has_value());
  EXPECT_EQ(rev->pod_addr, kPod2.network_order());  // the other flow keeps its claim
}

// --- idle claims (rp_rnat_val.stamp) ---

// The datapath's clock for stamps: coarse monotonic seconds mod 32768.
uint16_t NowStamp() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  const uint16_t c = static_cast<uint16_t>(ts.tv_sec & RP_STAMP_CLOCK_MASK);
  return c ? c : 1;
}
uint16_t SecondsAgo(uint16_t seconds) {
  return static_cast<uint16_t>((NowStamp() - seconds) & RP_STAMP_CLOCK_MASK);
}

class PrivilegedBpfSnatReclaimTest : public PrivilegedBpfSnatTest {
 protected:
  void SetUp() override {
    PrivilegedBpfSnatTest::SetUp();
    if (IsSkipped()) return;
    SnatConfig one_port;
    one_port.port_min = 61000;
    one_port.port_max = 61000;
    Load(one_port, {kEgress1});
  }
  // Claims the only port for kPod:1000 -> kRemote:port and returns its key.
  rp_rnat_key ClaimOnlyPort(uint8_t proto, uint16_t port) {
    const Bytes first = proto == kProtoTcp ? BuildTcp(kPod, 1000, kRemote, port) : BuildUdp(kPod, 1000, kRemote, port);
    EXPECT_EQ(Egress(first).verdict, TC_ACT_OK);
    return ReverseKey(kEgress1, 61000, kRemote, port, proto);
  }
  void SetStamp(const rp_rnat_key& rk, uint16_t stamp) {
    auto fd = MapFdByName(prog_->egress_prog_fd(), "ruleplane_rnat");
    ASSERT_TRUE(fd.ok()) << fd.status();
    rp_rnat_val v{};
    ASSERT_EQ(bpf_map_lookup_elem(fd->get(), &rk, &v), 0);
    v.stamp = stamp;
    ASSERT_EQ(bpf_map_update_elem(fd->get(), &rk, &v, BPF_EXIST), 0);
  }
  uint16_t Stamp(const rp_rnat_key& rk) {
    auto v = prog_->LookupReverseNat(rk);
    EXPECT_TRUE(v.ok() && v->has_value());
    return v.ok() && v->has_value() ? (*v)->stamp : 0;
  }
  // A second pod's flow to the same destination: does it get the port?
  int SecondFlow(uint8_t proto, uint16_t port) {
    return Egress(proto == kProtoTcp ? BuildTcp(kPod2, 2000, kRemote, port) : BuildUdp(kPod2, 2000, kRemote, port))
        .verdict;
  }
};

// A UDP claim idle past its timeout (30 s) goes to the next flow that needs
// the port; the old flow, if it wakes up, finds its port taken.
TEST_F(PrivilegedBpfSnatReclaimTest, IdleUdpClaimIsReclaimed) {
  const rp_rnat_key rk = ClaimOnlyPort(kProtoUdp, 53);
  SetStamp(rk, SecondsAgo(RP_TIMEOUT_UDP + 10));
  EXPECT_EQ(SecondFlow(kProtoUdp, 53), TC_ACT_OK);
  EXPECT_EQ(Count(RP_NAT_RECLAIM), 1u);
  ASSERT_OK_AND_ASSIGN(const auto rev, prog_->LookupReverseNat(rk));
  ASSERT_TRUE(rev.has_value());
  EXPECT_EQ(rev->pod_addr, kPod2.network_order());
  EXPECT_EQ(ntohs(rev->pod_port), 2000);
  // The first flow's next datagram: stale mapping, no free port, dropped.
  EXPECT_EQ(Egress(BuildUdp(kPod, 1000, kRemote, 53)).verdict, TC_ACT_SHOT);
  EXPECT_EQ(Count(RP_NAT_STALE), 1u);
  EXPECT_EQ(Count(RP_DROP_NO_PORT), 1u);
}

// A claim in use is never taken: the new flow is dropped and counted.
TEST_F(PrivilegedBpfSnatReclaimTest, ActiveClaimIsNotReclaimed) {
  const rp_rnat_key rk = ClaimOnlyPort(kProtoUdp, 53);
  SetStamp(rk, SecondsAgo(RP_TIMEOUT_UDP - 10));
  EXPECT_EQ(SecondFlow(kProtoUdp, 53), TC_ACT_SHOT);
  EXPECT_EQ(Count(RP_NAT_RECLAIM), 0u);
  EXPECT_EQ(Count(RP_DROP_NO_PORT), 1u);
}

// TCP: an established flow keeps its port for 2 h 4 min of silence; after a
// FIN or RST the claim may go 60 s later.
TEST_F(PrivilegedBpfSnatReclaimTest, TcpClosingShortensTheTimeout) {
  const rp_rnat_key rk = ClaimOnlyPort(kProtoTcp, 443);
  EXPECT_EQ(Stamp(rk) & RP_STAMP_CLOSING, 0);
  SetStamp(rk, SecondsAgo(RP_TIMEOUT_TCP_CLOSING + 10));
  EXPECT_EQ(SecondFlow(kProtoTcp, 443), TC_ACT_SHOT) << "open TCP flows are kept";

  // The pod closes: FIN marks the claim closing (and refreshes it).
  constexpr uint8_t kFin = 0x01;
  EXPECT_EQ(Egress(BuildTcp(kPod, 1000, kRemote, 443, {}, kFin | kTcpAck)).verdict, TC_ACT_OK);
  EXPECT_NE(Stamp(rk) & RP_STAMP_CLOSING, 0);
  EXPECT_EQ(SecondFlow(kProtoTcp, 443), TC_ACT_SHOT) << "too soon after the FIN";
  SetStamp(rk, static_cast<uint16_t>(SecondsAgo(RP_TIMEOUT_TCP_CLOSING + 10) | RP_STAMP_CLOSING));
  EXPECT_EQ(SecondFlow(kProtoTcp, 443), TC_ACT_OK);
  EXPECT_EQ(Count(RP_NAT_RECLAIM), 1u);
  EXPECT_EQ(Stamp(rk) & RP_STAMP_CLOSING, 0) << "the new flow starts open";
}

// Claims written before the stamp existed (stamp 0, was padding) are only
// ever recycled by the LRU.
TEST_F(PrivilegedBpfSnatReclaimTest, UnknownAgeIsNeverReclaimed) {
  const rp_rnat_key rk = ClaimOnlyPort(kProtoUdp, 53);
  SetStamp(rk, 0);
  EXPECT_EQ(SecondFlow(kProtoUdp, 53), TC_ACT_SHOT);
  EXPECT_EQ(Count(RP_NAT_RECLAIM), 0u);
}

// Both stamp clocks (jiffies, inlined; the coarse monotonic helper) write
// CLOCK_MONOTONIC seconds, the clock pinned claims of earlier agents carry.
TEST_F(PrivilegedBpfSnatReclaimTest, StampsReadAsMonotonicSeconds) {
  for (const bool jiffies : {true, false}) {
    SCOPED_TRACE(jiffies ? "jiffies" : "helper");
    SnatConfig one_port;
    one_port.port_min = 61000;
    one_port.port_max = 61000;
    Load(one_port, {kEgress1}, jiffies);
    for (int i = 0; i < 3; ++i) {
      const uint16_t before = NowStamp();
      const rp_rnat_key rk = ClaimOnlyPort(kProtoUdp, 53);
      const uint16_t after = NowStamp();
      const uint16_t got = Stamp(rk) & RP_STAMP_CLOCK_MASK;
      // Within a second of the clock read around it (the two clocks' second
      // boundaries may sit a tick apart).
      EXPECT_LE((got - before + 1) & RP_STAMP_CLOCK_MASK, ((after - before) & RP_STAMP_CLOCK_MASK) + 2)
          << "stamp " << got << ", clock " << before << ".." << after;
      SetStamp(rk, SecondsAgo(100));
      EXPECT_EQ(Egress(BuildUdp(kPod, 1000, kRemote, 53)).verdict, TC_ACT_OK);
      EXPECT_LE((NowStamp() - (Stamp(rk) & RP_STAMP_CLOCK_MASK) + 1) & RP_STAMP_CLOCK_MASK, 2) << "refreshed to now";
    }
  }
}

// Packets in either direction keep a claim fresh.
TEST_F(PrivilegedBpfSnatReclaimTest, TrafficRefreshesTheClaim) {
  const rp_rnat_key rk = ClaimOnlyPort(kProtoUdp, 53);
  const uint16_t old = SecondsAgo(RP_TIMEOUT_UDP - 5);
  SetStamp(rk, old);
  EXPECT_EQ(Egress(BuildUdp(kPod, 1000, kRemote, 53)).verdict, TC_ACT_OK);
  EXPECT_NE(Stamp(rk), old);
  SetStamp(rk, old);
  EXPECT_EQ(Ingress(BuildUdp(kRemote, 53, kEgress1, 61000)).verdict, TC_ACT_OK);
  EXPECT_NE(Stamp(rk), old);
  // Still fresh, so not reclaimable.
  EXPECT_EQ(SecondFlow(kProtoUdp, 53), TC_ACT_SHOT);
}

// The map writers converge the maps to the given sets, canonicalise prefixes
// and reject what the program cannot represent.
TEST_F(PrivilegedBpfSnatTest, MapWritersConvergeAndValidate) {
  ASSERT_OK(prog_->ReplacePodAddresses({kPod2, kStranger}));
  ASSERT_OK_AND_ASSIGN(const std::vector<Ipv4Addr> pods, prog_->ListPodAddresses());
  EXPECT_EQ(pods, (std::vector<Ipv4Addr>{kPod2, kStranger}));
  EXPECT_OK(prog_->DeletePodAddress(kPod));  // absent: idempotent

  ASSERT_OK(prog_->ReplaceExclusions({Ipv4Prefix{kServiceIp, 12}, *Ipv4Prefix::Parse("192.168.0.0/16")}));
  ASSERT_OK_AND_ASSIGN(const std::vector<Ipv4Prefix> excl, prog_->ListExclusions());
  EXPECT_EQ(excl, (std::vector<Ipv4Prefix>{*Ipv4Prefix::Parse("10.96.0.0/12"), *Ipv4Prefix::Parse("192.168.0.0/16")}));
  EXPECT_FALSE(Ipv4Prefix::Parse("10.96.0.10/12").ok());

  std::vector<EgressAddress> nine;
  for (uint8_t i = 1; i <= 9; ++i) nine.push_back({Ipv4Addr::FromOctets(192, 0, 2, i), false});
  EXPECT_EQ(prog_->SetEgressAddresses(nine).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(prog_->SetEgressAddresses({{kEgress1, false}, {kEgress1, false}}).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_OK(prog_->SetEgressAddresses({{kEgress2, false}, {kEgress1, true}}));
  ASSERT_OK_AND_ASSIGN(const std::vector<EgressAddress> egress, prog_->ListEgressAddresses());
  EXPECT_EQ(egress, (std::vector<EgressAddress>{{kEgress2, false}, {kEgress1, true}}));
  ASSERT_OK(prog_->SetEgressAddresses({{kEgress1, false}}));
  ASSERT_OK_AND_ASSIGN(const std::vector<EgressUsage> usage, prog_->ReadEgressUsage());
  EXPECT_EQ(usage[0].address.addr, kEgress1);
  EXPECT_TRUE(usage[1].address.addr.IsUnspecified());  // tail slots cleared
}

// Bad load-time configuration is refused before anything reaches the kernel.
TEST(PrivilegedBpfSnatConfigTest, InvalidConfigIsRejected) {
  SnatProgramOptions options;
  options.pin_dir = "";
  options.config.port_min = 2000;
  options.config.port_max = 1000;
  EXPECT_EQ(SnatProgram::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.config = SnatConfig{};
  options.config.max_retries = RP_SNAT_MAX_RETRIES + 1;
  EXPECT_EQ(SnatProgram::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.config = SnatConfig{};
  options.config.port_min = 0;
  EXPECT_EQ(SnatProgram::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.config = SnatConfig{};
  options.config.max_flows = RP_SNAT_MAX_FLOWS_MIN - 1;
  EXPECT_EQ(SnatProgram::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

class PrivilegedBpfPinTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = MissingBpfPrivileges(); !why.empty()) GTEST_SKIP() << why;
    if (std::string why = MissingSysAdmin(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_OK_AND_ASSIGN(bpffs_, ScopedBpffs::Mount());
    options_.pin_dir = bpffs_->path() + "/ruleplane";
  }

  // Sends kPod:`pod_port` -> kRemote:443 through `prog`'s egress program and
  // returns the translated source port (0, and a failure, if untranslated).
  static uint16_t EgressPort(const SnatProgram& prog, uint16_t pod_port = 40000) {
    absl::StatusOr<TcRun> run = RunTc(prog.egress_prog_fd(), BuildTcp(kPod, pod_port, kRemote, 443));
    if (!run.ok() || run->verdict != TC_ACT_OK) {
      ADD_FAILURE() << "not translated: " << (run.ok() ? absl::StrCat("verdict ", run->verdict) : run.status().ToString());
      return 0;
    }
    absl::StatusOr<ParsedPacket> p = ParseFrame(run->out);
    if (!p.ok()) {
      ADD_FAILURE() << p.status();
      return 0;
    }
    return p->sport;
  }

  std::unique_ptr<ScopedBpffs> bpffs_;
  SnatProgramOptions options_;
};

// An agent restart adopts the pinned maps: configuration, counters and NAT
// state survive, so an existing flow keeps its port.
TEST_F(PrivilegedBpfPinTest, NatStateSurvivesReload) {
  uint16_t port = 0;
  {
    ASSERT_OK_AND_ASSIGN(auto prog, SnatProgram::Create(options_));
    EXPECT_TRUE(prog->reused_maps().empty());
    ASSERT_OK(prog->ReplacePodAddresses({kPod}));
    ASSERT_OK(prog->SetEgressAddresses({{kEgress1, false}}));
    port = EgressPort(*prog);
    ASSERT_NE(port, 0);
    EXPECT_TRUE(std::filesystem::exists(options_.pin_dir + "/ruleplane_nat"));
  }  // the "old agent" exits; only the pins hold the maps now

  ASSERT_OK_AND_ASSIGN(auto prog, SnatProgram::Create(options_));
  EXPECT_EQ(prog->reused_maps().size(), 10u);  // every ruleplane_* map
  ASSERT_OK_AND_ASSIGN(const std::vector<Ipv4Addr> pods, prog->ListPodAddresses());
  EXPECT_EQ(pods, std::vector<Ipv4Addr>{kPod});
  EXPECT_EQ(EgressPort(*prog), port);
  ASSERT_OK_AND_ASSIGN(const ReasonCounters counters, prog->ReadReasonCounters());
  EXPECT_EQ(counters[RP_NAT_NEW], 1u);
  EXPECT_EQ(counters[RP_XLATE_EGRESS], 2u);

  ASSERT_OK(prog->UnpinMaps());
  EXPECT_FALSE(std::filesystem::exists(options_.pin_dir));
}

// Pins of an agent from before the exclusion banks: no ruleplane_exclf, and
// rp_snat_cfg's second word 0. The new agent adopts the rest, egress keeps
// using the trie until the exclusions are written, then a bank.
TEST_F(PrivilegedBpfPinTest, PinsWithoutExclusionBanksAreAdopted) {
  const Bytes to_service = BuildTcp(kPod, 40000, kServiceIp, 80);
  {
    ASSERT_OK_AND_ASSIGN(auto prog, SnatProgram::Create(options_));
    ASSERT_OK(prog->ReplacePodAddresses({kPod}));
    ASSERT_OK(prog->ReplaceExclusions({*Ipv4Prefix::Parse("10.96.0.0/12")}));
    ASSERT_OK(prog->SetEgressAddresses({{kEgress1, false}}));
    // What the old agent would have left: no bank map, the word 0.
    const UniqueFd cfg(bpf_obj_get((options_.pin_dir + "/ruleplane_cfg").c_str()));
    ASSERT_TRUE(cfg.valid());
    const uint32_t zero = 0;
    const rp_snat_cfg old_cfg{1, 0};
    ASSERT_EQ(bpf_map_update_elem(cfg.get(), &zero, &old_cfg, BPF_ANY), 0);
    ASSERT_EQ(unlink((options_.pin_dir + "/ruleplane_exclf").c_str()), 0);
  }
  ASSERT_OK_AND_ASSIGN(auto prog, SnatProgram::Create(options_));
  EXPECT_EQ(prog->reused_maps().size(), 9u);
  EXPECT_TRUE(std::filesystem::exists(options_.pin_dir + "/ruleplane_exclf"));
  ASSERT_OK_AND_ASSIGN(auto bank, prog->ReadExclusionBank());
  EXPECT_FALSE(bank.has_value());
  ASSERT_OK_AND_ASSIGN(TcRun run, RunTc(prog->egress_prog_fd(), to_service));
  EXPECT_EQ(run.verdict, TC_ACT_UNSPEC) << "the trie still excludes";
  ASSERT_OK(prog->ReplaceExclusions({*Ipv4Prefix::Parse("10.96.0.0/12")}));
  ASSERT_OK_AND_ASSIGN(bank, prog->ReadExclusionBank());
  EXPECT_TRUE(bank.has_value());
  ASSERT_OK_AND_ASSIGN(run, RunTc(prog->egress_prog_fd(), to_service));
  EXPECT_EQ(run.verdict, TC_ACT_UNSPEC) << "the bank excludes";
  EXPECT_NE(EgressPort(*prog), 0);
  ASSERT_OK(prog->UnpinMaps());
}

// The NAT maps are created at the configured size. A restart asking for
// another size moves the flows into new maps of that size: a first copy at
// load while the predecessor's programs still run, a second once ours run
// everywhere (FinishFlowMapMigration), which also moves the pins. Every flow
// keeps its port, including one the predecessor translated in between.
TEST_F(PrivilegedBpfPinTest, FlowMapResizeMovesTheFlows) {
  auto pinned_max_entries = [this](const char* map) -> uint32_t {
    const UniqueFd fd(bpf_obj_get((options_.pin_dir + "/" + map).c_str()));
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (!fd.valid() || bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) return 0;
    return info.max_entries;
  };
  options_.config.max_flows = 4096;
  ASSERT_OK_AND_ASSIGN(auto old, SnatProgram::Create(options_));
  EXPECT_EQ(old->max_flows(), 4096u);
  ASSERT_OK(old->ReplacePodAddresses({kPod}));
  ASSERT_OK(old->SetEgressAddresses({{kEgress1, false}}));
  const uint16_t first = EgressPort(*old, 40000);
  ASSERT_NE(first, 0);
  EXPECT_EQ(pinned_max_entries("ruleplane_nat"), 4096u);
  EXPECT_EQ(pinned_max_entries("ruleplane_rnat"), 4096u);

  // The successor loads while the predecessor's programs still run.
  options_.config.max_flows = 8192;
  ASSERT_OK_AND_ASSIGN(auto prog, SnatProgram::Create(options_));
  EXPECT_EQ(prog->max_flows(), 8192u);
  EXPECT_EQ(prog->reused_maps().size(), 8u);  // every map but the two flow maps
  EXPECT_TRUE(prog->flow_map_migration_pending());
  EXPECT_EQ(pinned_max_entries("ruleplane_nat"), 4096u) << "the old pin stays until the programs switch";
  const uint16_t late = EgressPort(*old, 40001);  // between the two copies
  ASSERT_NE(late, 0);

  ASSERT_OK(prog->FinishFlowMapMigration());
  EXPECT_FALSE(prog->flow_map_migration_pending());
  EXPECT_EQ(pinned_max_entries("ruleplane_nat"), 8192u);
  EXPECT_EQ(pinned_max_entries("ruleplane_rnat"), 8192u);
  EXPECT_EQ(EgressPort(*prog, 40000), first);
  EXPECT_EQ(EgressPort(*prog, 40001), late);
  ASSERT_OK(prog->FinishFlowMapMigration());  // nothing pending: no-op
  ASSERT_OK_AND_ASSIGN(const ReasonCounters counters, prog->ReadReasonCounters());
  EXPECT_EQ(counters[RP_NAT_NEW], 2u) << "no flow got a second translation";

  // A restart at the same size adopts everything, flows included.
  old.reset();
  prog.reset();
  ASSERT_OK_AND_ASSIGN(auto again, SnatProgram::Create(options_));
  EXPECT_EQ(again->reused_maps().size(), 10u);
  EXPECT_FALSE(again->flow_map_migration_pending());
  EXPECT_EQ(EgressPort(*again, 40000), first);
  again.reset();

  // Leaving bpf mode in the middle of a resize removes the old pins too.
  options_.config.max_flows = 4096;
  ASSERT_OK_AND_ASSIGN(auto leaving, SnatProgram::Create(options_));
  EXPECT_TRUE(leaving->flow_map_migration_pending());
  ASSERT_OK(leaving->UnpinMaps());
  EXPECT_FALSE(std::filesystem::exists(options_.pin_dir));
}

// The statistics reader walks the flow map only when the datapath may have
// changed its keys: packets of known flows (both ways) leave the generation
// alone; a new flow, a restored reverse half, or another map do not.
TEST_F(PrivilegedBpfPinTest, ReaderWalksTheFlowMapOnlyAfterAChange) {
  ASSERT_OK_AND_ASSIGN(auto prog, SnatProgram::Create(options_));
  ASSERT_OK(prog->ReplacePodAddresses({kPod}));
  ASSERT_OK(prog->SetEgressAddresses({{kEgress1, false}}));
  const uint16_t port = EgressPort(*prog);
  ASSERT_NE(port, 0);
  ASSERT_OK_AND_ASSIGN(const auto first, ReadPinnedSnatMaps(options_.pin_dir));
  ASSERT_TRUE(first.translations.has_value());
  EXPECT_EQ(first.translations->size(), 1u);
  const kernel::bpf::SnatMapsGeneration known{first.flow_map_id, first.generation};

  EXPECT_EQ(EgressPort(*prog), port);
  ASSERT_OK_AND_ASSIGN(const TcRun reply,
                       RunTc(prog->ingress_prog_fd(), BuildTcp(kRemote, 443, kEgress1, port, {}, kTcpAck)));
  EXPECT_EQ(reply.verdict, TC_ACT_OK);
  ASSERT_OK_AND_ASSIGN(const auto quiet, ReadPinnedSnatMaps(options_.pin_dir, known));
  EXPECT_FALSE(quiet.translations.has_value());
  EXPECT_EQ(quiet.generation, first.generation);

  const uint16_t port2 = EgressPort(*prog, 40001);
  ASSERT_NE(port2, 0);
  ASSERT_OK_AND_ASSIGN(const auto busy, ReadPinnedSnatMaps(options_.pin_dir, known));
  ASSERT_TRUE(busy.translations.has_value());
  EXPECT_EQ(busy.translations->size(), 2u);

  // The LRU takes a reverse half; the flow's next packet restores it.
  const UniqueFd rnat(bpf_obj_get((options_.pin_dir + "/ruleplane_rnat").c_str()));
  const rp_rnat_key rk = ReverseKey(kEgress1, port2, kRemote, 443, kProtoTcp);
  ASSERT_EQ(bpf_map_delete_elem(rnat.get(), &rk), 0);
  const kernel::bpf::SnatMapsGeneration before{busy.flow_map_id, busy.generation};
  EXPECT_EQ(EgressPort(*prog, 40001), port2);
  ASSERT_OK_AND_ASSIGN(const auto restored, ReadPinnedSnatMaps(options_.pin_dir, before));
  ASSERT_TRUE(restored.translations.has_value());
  EXPECT_EQ(restored.translations->size(), 2u);

  // The same generation of another map (recreated pins) is no proof.
  ASSERT_OK_AND_ASSIGN(const auto other, ReadPinnedSnatMaps(options_.pin_dir, kernel::bpf::SnatMapsGeneration{
                                                                                 restored.flow_map_id + 1,
                                                                                 restored.generation}));
  ASSERT_TRUE(other.translations.has_value());
  ASSERT_OK(prog->UnpinMaps());
}

// What the statistics say about how the programs run: which pair, which
// clock (the program's own test: the option and the kernel's HZ), which
// exclusion lookup, for the flow map the reader reads.
TEST_F(PrivilegedBpfPinTest, ProgramSaysHowItRuns) {
  ASSERT_OK_AND_ASSIGN(auto prog, SnatProgram::Create(options_));
  ASSERT_OK(prog->ReplaceExclusions({*Ipv4Prefix::Parse("10.96.0.0/12")}));
  ASSERT_OK_AND_ASSIGN(SnatMapsSnapshot snap, ReadPinnedSnatMaps(options_.pin_dir));
  EXPECT_TRUE(snap.exclusions_in_array);
  ASSERT_OK_AND_ASSIGN(const uint32_t id, prog->flow_map_id());
  EXPECT_EQ(id, snap.flow_map_id);
  // libbpf reads CONFIG_HZ from /boot/config-$(uname -r) or /proc/config.gz.
  utsname uts{};
  ASSERT_EQ(uname(&uts), 0);
  const bool hz_known = std::filesystem::exists(absl::StrCat("/boot/config-", uts.release)) ||
                        std::filesystem::exists("/proc/config.gz");
  EXPECT_EQ(prog->clock_jiffies(), hz_known);

  // More prefixes than a bank holds: the trie answers.
  ASSERT_OK(prog->ReplaceExclusions(MoreThanABank({})));
  ASSERT_OK_AND_ASSIGN(snap, ReadPinnedSnatMaps(options_.pin_dir));
  EXPECT_FALSE(snap.exclusions_in_array);

  // The helper pair with the helper clock.
  SnatProgramOptions helper = options_;
  helper.pin_dir = bpffs_->path() + "/helper";
  helper.csum_direct = false;
  helper.clock_jiffies = false;
  ASSERT_OK_AND_ASSIGN(auto prog_h, SnatProgram::Create(helper));
  EXPECT_FALSE(prog_h->csum_direct());
  EXPECT_FALSE(prog_h->clock_jiffies());
  ASSERT_OK_AND_ASSIGN(const uint32_t id_h, prog_h->flow_map_id());
  EXPECT_NE(id_h, id);
  ASSERT_OK(prog_h->UnpinMaps());
  ASSERT_OK(prog->UnpinMaps());
}

// A kernel whose verifier refuses the pair that reads skb->ip_summed (here:
// CO-RE against a BTF whose struct sk_buff has no such field, so libbpf
// poisons the read and the verifier rejects the program) still gets SNAT:
// the loader falls back to the helper pair, which translates with valid
// checksums, and says so (csum_direct(): the statistics' "helper").
TEST_F(PrivilegedBpfPinTest, RefusedDirectPairFallsBackToTheHelperPair) {
  {
    ASSERT_OK_AND_ASSIGN(auto probe, SnatProgram::Create(options_));
    const bool direct = probe->csum_direct();
    ASSERT_OK(probe->UnpinMaps());
    if (!direct) GTEST_SKIP() << "this kernel loads the helper pair anyway (no bpf_cast_to_kern_ctx)";
  }
  // struct sk_buff { int len; }: no ip_summed to relocate the read to.
  btf* other = btf__new_empty();
  ASSERT_NE(other, nullptr);
  const int int_id = btf__add_int(other, "int", 4, BTF_INT_SIGNED);
  ASSERT_GT(int_id, 0);
  ASSERT_GT(btf__add_struct(other, "sk_buff", 4), 0);
  ASSERT_EQ(btf__add_field(other, "len", int_id, 0, 0), 0);
  uint32_t size = 0;
  const void* raw = btf__raw_data(other, &size);
  ASSERT_NE(raw, nullptr);
  const std::string path = bpffs_->path() + "-other.btf";
  {
    std::ofstream out(path, std::ios::binary);
    out.write(static_cast<const char*>(raw), size);
    ASSERT_TRUE(out.good());
  }
  btf__free(other);

  options_.btf_custom_path = path;
  ASSERT_OK_AND_ASSIGN(auto prog, SnatProgram::Create(options_));
  std::filesystem::remove(path);
  EXPECT_FALSE(prog->csum_direct());
  ASSERT_OK(prog->ReplacePodAddresses({kPod}));
  ASSERT_OK(prog->SetEgressAddresses({{kEgress1, false}}));
  ASSERT_OK_AND_ASSIGN(const TcRun run, RunTc(prog->egress_prog_fd(), BuildTcp(kPod, 40000, kRemote, 443, Text("hi"))));
  ASSERT_EQ(run.verdict, TC_ACT_OK);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(run.out));
  EXPECT_EQ(p.src, kEgress1);
  EXPECT_TRUE(p.ip_checksum_ok);
  EXPECT_TRUE(p.l4_checksum_ok);
  ASSERT_OK(prog->UnpinMaps());
}

// The statistics reader sees every translation, across more entries than one
// batch of BPF_MAP_LOOKUP_BATCH (4096) holds.
TEST_F(PrivilegedBpfPinTest, ReaderSeesEveryTranslation) {
  options_.config.port_min = 1024;  // room for 5000 flows to one destination
  ASSERT_OK_AND_ASSIGN(auto prog, SnatProgram::Create(options_));
  ASSERT_OK(prog->ReplacePodAddresses({kPod}));
  ASSERT_OK(prog->SetEgressAddresses({{kEgress1, false}}));
  constexpr int kFlows = 5000;
  std::set<uint16_t> ports;
  for (int i = 0; i < kFlows; ++i) {
    ASSERT_OK_AND_ASSIGN(const TcRun run,
                         RunTc(prog->egress_prog_fd(), BuildTcp(kPod, static_cast<uint16_t>(20000 + i), kRemote, 443)));
    ASSERT_EQ(run.verdict, TC_ACT_OK) << "flow " << i;
    ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(run.out));
    ports.insert(p.sport);
  }
  ASSERT_OK_AND_ASSIGN(const SnatMapsSnapshot snap, ReadPinnedSnatMaps(options_.pin_dir));
  ASSERT_TRUE(snap.translations.has_value());
  ASSERT_EQ(snap.translations->size(), static_cast<size_t>(kFlows));
  std::set<uint16_t> seen;
  for (const rp_rnat_key& k : *snap.translations) {
    EXPECT_EQ(k.remote_port, htons(443));
    seen.insert(ntohs(k.egress_port));
  }
  EXPECT_EQ(seen, ports);
  EXPECT_EQ(snap.reasons[RP_NAT_NEW], static_cast<uint64_t>(kFlows));
  EXPECT_EQ(snap.flow_capacity, options_.config.max_flows);
  ASSERT_OK(prog->UnpinMaps());
}

// A pinned map whose layout differs from this build is refused with a message
// naming the pin, instead of being reused with the wrong layout.
TEST_F(PrivilegedBpfPinTest, PinnedMapWithOtherLayoutIsRefused) {
  std::filesystem::create_directories(options_.pin_dir);
  const UniqueFd fd(bpf_map_create(BPF_MAP_TYPE_HASH, "ruleplane_nat", 16, 16, 128, nullptr));
  ASSERT_TRUE(fd.valid()) << "bpf_map_create: " << errno;
  const std::string path = options_.pin_dir + "/ruleplane_nat";
  ASSERT_EQ(bpf_obj_pin(fd.get(), path.c_str()), 0);

  const auto prog = SnatProgram::Create(options_);
  ASSERT_FALSE(prog.ok());
  EXPECT_EQ(prog.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(prog.status().message().find(path), absl::string_view::npos) << prog.status();
  EXPECT_NE(prog.status().message().find("value_size 16 (pinned) != 8"), absl::string_view::npos) << prog.status();
}

// A pin dir outside bpffs is refused: pins there would not survive anything.
TEST(PrivilegedBpfPinDirTest, PinDirOutsideBpffsIsRefused) {
  if (std::string why = MissingBpfPrivileges(); !why.empty()) GTEST_SKIP() << why;
  SnatProgramOptions options;
  options.pin_dir = ::testing::TempDir() + "/not-bpffs/ruleplane";
  const auto prog = SnatProgram::Create(options);
  EXPECT_EQ(prog.status().code(), absl::StatusCode::kFailedPrecondition) << prog.status();
}

// Runs `body` on a fresh thread inside a new, private network namespace (the
// namespace dies with the thread; setns on a thread we own, STYLE.md 6).
void InPrivateNetns(const std::function<void()>& body) {
  std::thread t([&body] {
    if (::unshare(CLONE_NEWNET) != 0) {
      ADD_FAILURE() << "unshare(CLONE_NEWNET): " << errno;
      return;
    }
    body();
  });
  t.join();
}

// A socket of type `type` bound to `local`:`lport` and connected to
// `remote`:`rport` (TCP: through a listener there), or -1.
int NodeSocket(int type, Ipv4Addr local, uint16_t lport, Ipv4Addr remote, uint16_t rport, int* listener) {
  auto sin = [](Ipv4Addr a, uint16_t port) {
    sockaddr_in s{};
    s.sin_family = AF_INET;
    s.sin_port = htons(port);
    std::memcpy(&s.sin_addr, a.bytes().data(), 4);
    return s;
  };
  const int one = 1;
  if (type == SOCK_STREAM) {
    *listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in r = sin(remote, rport);
    ::setsockopt(*listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(*listener, reinterpret_cast<sockaddr*>(&r), sizeof(r)) != 0 || ::listen(*listener, 4) != 0) return -1;
  }
  const int fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
  sockaddr_in l = sin(local, lport), r = sin(remote, rport);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&l), sizeof(l)) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&r), sizeof(r)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A port that a socket of the node holds towards a remote is not given to a
// pod flow to that remote (the node's replies would reach the pod): with a
// one-port range the flow fails over to the next address, counted as
// RP_NAT_NODE_SOCKET. Towards another remote the port is free. TCP
// (established) and UDP (connected). BPF_PROG_TEST_RUN runs in the
// caller's netns, where the sockets are.
TEST_F(PrivilegedBpfSnatTest, PortsHeldByNodeSocketsAreSkipped) {
  InPrivateNetns([this] {
    for (const char* cmd : {"ip link set lo up", "ip addr add 192.0.2.10/32 dev lo",
                            "ip addr add 203.0.113.7/32 dev lo"}) {
      ASSERT_EQ(std::system(cmd), 0) << cmd;
    }
    int tcp_listener = -1, unused = -1;
    const int tcp = NodeSocket(SOCK_STREAM, kEgress1, 61000, kRemote, 443, &tcp_listener);
    ASSERT_GE(tcp, 0) << "node TCP connection: " << errno;
    const int udp = NodeSocket(SOCK_DGRAM, kEgress1, 61000, kRemote, 53, &unused);
    ASSERT_GE(udp, 0) << "node UDP socket: " << errno;
    SnatConfig config;
    config.port_min = 61000;
    config.port_max = 61000;
    Load(config, {kEgress1, kEgress2});

    ASSERT_OK_AND_ASSIGN(const ParsedPacket t, ParseFrame(Egress(BuildTcp(kPod, 40000, kRemote, 443)).out));
    EXPECT_EQ(t.src, kEgress2) << "kEgress1:61000 -> kRemote:443 is the node's TCP connection";
    EXPECT_EQ(Count(RP_NAT_NODE_SOCKET), 1u);
    ASSERT_OK_AND_ASSIGN(const ParsedPacket u, ParseFrame(Egress(BuildUdp(kPod, 40000, kRemote, 53)).out));
    EXPECT_EQ(u.src, kEgress2) << "kEgress1:61000 -> kRemote:53 is the node's UDP socket";
    EXPECT_EQ(Count(RP_NAT_NODE_SOCKET), 2u);
    EXPECT_EQ(Count(RP_FAILOVER), 2u);
    // A skip is no insert attempt: collisions feed the reader's generation,
    // whose change makes the monitor walk the whole flow map again.
    ASSERT_OK_AND_ASSIGN(const std::vector<EgressUsage> usage, prog_->ReadEgressUsage());
    EXPECT_EQ(usage[0].collisions, 0u);
    EXPECT_EQ(usage[0].exhausted, 2u);

    ASSERT_OK_AND_ASSIGN(const ParsedPacket other, ParseFrame(Egress(BuildTcp(kPod, 40000, kRemote2, 443)).out));
    EXPECT_EQ(other.src, kEgress1) << "towards another remote the port is free";
    EXPECT_EQ(other.sport, 61000);
    EXPECT_EQ(Count(RP_NAT_NODE_SOCKET), 2u);
    for (int fd : {tcp, tcp_listener, udp}) ::close(fd);
  });
}

bool FilterAttached(int ifindex, bpf_tc_attach_point point, uint32_t* prog_id) {
  bpf_tc_hook hook{};
  hook.sz = sizeof(hook);
  hook.ifindex = ifindex;
  hook.attach_point = point;
  bpf_tc_opts opts{};
  opts.sz = sizeof(opts);
  opts.handle = kRuleplaneTcFilter.handle;
  opts.priority = kRuleplaneTcFilter.priority;
  if (bpf_tc_query(&hook, &opts) != 0) return false;
  if (prog_id != nullptr) *prog_id = opts.prog_id;
  return true;
}

uint32_t ProgId(int fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

// The id of the bpf link pinned at `path`, 0 if none.
uint32_t PinnedLinkId(const std::string& path) {
  const int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return 0;
  bpf_link_info info{};
  uint32_t len = sizeof(info);
  const uint32_t id = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
  ::close(fd);
  return id;
}

// Creates clsact on `ifindex` like another agent would; true if created.
bool CreateForeignClsact(int ifindex) {
  bpf_tc_hook hook{};
  hook.sz = sizeof(hook);
  hook.ifindex = ifindex;
  hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
  return bpf_tc_hook_create(&hook) == 0;
}

bpf_tc_hook ForeignEgressHook(int ifindex) {
  bpf_tc_hook hook{};
  hook.sz = sizeof(hook);
  hook.ifindex = ifindex;
  hook.attach_point = BPF_TC_EGRESS;
  return hook;
}

// Another owner's egress filter (handle 1, priority 1: before our slot) on
// an existing clsact; true if attached.
bool AttachForeignEgressFilter(int ifindex, int prog_fd) {
  bpf_tc_hook hook = ForeignEgressHook(ifindex);
  bpf_tc_opts opts{};
  opts.sz = sizeof(opts);
  opts.prog_fd = prog_fd;
  opts.handle = 1;
  opts.priority = 1;
  return bpf_tc_attach(&hook, &opts) == 0;
}

class PrivilegedBpfTcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = MissingBpfPrivileges(); !why.empty()) GTEST_SKIP() << why;
    if (std::string why = MissingSysAdmin(); !why.empty()) GTEST_SKIP() << why;
    SnatProgramOptions options;
    options.pin_dir = "";
    ASSERT_OK_AND_ASSIGN(prog_, SnatProgram::Create(options));
  }
  std::unique_ptr<SnatProgram> prog_;
};

// Attaching creates clsact and both filters in our slot; destroying removes
// our filters and the qdisc we created.
TEST_F(PrivilegedBpfTcTest, AttachCreatesAndDestroyRemovesOurQdisc) {
  InPrivateNetns([this] {
    auto hook = prog_->AttachToInterface("lo");
    ASSERT_TRUE(hook.ok()) << hook.status();
    EXPECT_TRUE(hook->created_qdisc());
    uint32_t egress_id = 0, ingress_id = 0;
    ASSERT_TRUE(FilterAttached(hook->ifindex(), BPF_TC_EGRESS, &egress_id));
    ASSERT_TRUE(FilterAttached(hook->ifindex(), BPF_TC_INGRESS, &ingress_id));
    EXPECT_EQ(egress_id, ProgId(prog_->egress_prog_fd()));
    EXPECT_EQ(ingress_id, ProgId(prog_->ingress_prog_fd()));

    // Attaching again (an agent restart) replaces in place.
    auto again = prog_->AttachToInterface(hook->ifindex());
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_FALSE(again->created_qdisc());
    again->Release();

    const int ifindex = hook->ifindex();
    EXPECT_OK(hook->Destroy());
    EXPECT_FALSE(FilterAttached(ifindex, BPF_TC_EGRESS, nullptr));
    EXPECT_FALSE(FilterAttached(ifindex, BPF_TC_INGRESS, nullptr));
    EXPECT_TRUE(CreateForeignClsact(ifindex)) << "our clsact should be gone";
  });
}

// On a clsact somebody else created, destroying removes only our filters and
// leaves their qdisc and their filter alone.
TEST_F(PrivilegedBpfTcTest, ForeignQdiscAndFiltersSurviveDestroy) {
  InPrivateNetns([this] {
    ASSERT_OK_AND_ASSIGN(const int ifindex, kernel::bpf::InterfaceIndex("lo"));
    ASSERT_TRUE(CreateForeignClsact(ifindex));
    // Someone else's filter in another slot.
    ASSERT_TRUE(AttachForeignEgressFilter(ifindex, prog_->egress_prog_fd()));
    bpf_tc_hook foreign_hook = ForeignEgressHook(ifindex);

    {
      auto hook = prog_->AttachToInterface(ifindex);
      ASSERT_TRUE(hook.ok()) << hook.status();
      EXPECT_FALSE(hook->created_qdisc());
      EXPECT_TRUE(FilterAttached(ifindex, BPF_TC_EGRESS, nullptr));
    }  // destructor detaches

    EXPECT_FALSE(FilterAttached(ifindex, BPF_TC_EGRESS, nullptr));
    EXPECT_FALSE(FilterAttached(ifindex, BPF_TC_INGRESS, nullptr));
    bpf_tc_opts query{};
    query.sz = sizeof(query);
    query.handle = 1;
    query.priority = 1;
    EXPECT_EQ(bpf_tc_query(&foreign_hook, &query), 0) << "foreign filter was removed";
    EXPECT_FALSE(CreateForeignClsact(ifindex)) << "foreign clsact was removed";
  });
}

// tcx (Linux >= 6.6): links, pinned next to the maps, no qdisc.
class PrivilegedBpfTcxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = MissingBpfPrivileges(); !why.empty()) GTEST_SKIP() << why;
    if (std::string why = MissingSysAdmin(); !why.empty()) GTEST_SKIP() << why;
    if (!kernel::bpf::KernelHasTcx()) GTEST_SKIP() << "kernel without tcx (Linux < 6.6)";
    ASSERT_OK_AND_ASSIGN(bpffs_, ScopedBpffs::Mount());
    options_.pin_dir = bpffs_->path() + "/ruleplane";
    options_.attach = TcAttach::kTcx;
  }
  static std::vector<uint32_t> Progs(int ifindex, TcDirection dir) {
    absl::StatusOr<std::vector<uint32_t>> ids = TcHook::TcxProgramIds(ifindex, dir);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *ids : std::vector<uint32_t>{};
  }
  std::unique_ptr<ScopedBpffs> bpffs_;
  SnatProgramOptions options_;
};

// Attach makes one pinned link per direction and no qdisc; a restarted agent
// (new program, same pins) swaps the program inside the same links; Destroy
// detaches and unpins.
TEST_F(PrivilegedBpfTcxTest, LinksArePinnedReplacedInPlaceAndRemoved) {
  InPrivateNetns([this] {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnatProgram> first, SnatProgram::Create(options_));
    ASSERT_OK_AND_ASSIGN(const int ifindex, kernel::bpf::InterfaceIndex("lo"));
    uint32_t egress_link = 0;
    {
      ASSERT_OK_AND_ASSIGN(TcHook hook, first->AttachToInterface(ifindex));
      EXPECT_EQ(hook.attach(), TcAttach::kTcx);
      EXPECT_FALSE(hook.created_qdisc());
      EXPECT_EQ(Progs(ifindex, TcDirection::kEgress), std::vector<uint32_t>{ProgId(first->egress_prog_fd())});
      EXPECT_EQ(Progs(ifindex, TcDirection::kIngress), std::vector<uint32_t>{ProgId(first->ingress_prog_fd())});
      EXPECT_TRUE(std::filesystem::exists(hook.LinkPinPath(TcDirection::kEgress))) << hook.LinkPinPath(TcDirection::kEgress);
      EXPECT_TRUE(std::filesystem::exists(hook.LinkPinPath(TcDirection::kIngress)));
      EXPECT_FALSE(FilterAttached(ifindex, BPF_TC_EGRESS, nullptr)) << "no cls_bpf filter in tcx mode";
      EXPECT_TRUE(CreateForeignClsact(ifindex)) << "tcx must not create a clsact qdisc";
      egress_link = PinnedLinkId(hook.LinkPinPath(TcDirection::kEgress));
      EXPECT_NE(egress_link, 0u);
      hook.Release();  // agent exit: the pinned links keep running
    }
    EXPECT_EQ(Progs(ifindex, TcDirection::kEgress).size(), 1u) << "released link was detached";

    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnatProgram> second, SnatProgram::Create(options_));
    ASSERT_OK_AND_ASSIGN(TcHook hook, second->AttachToInterface("lo"));
    EXPECT_EQ(Progs(ifindex, TcDirection::kEgress), std::vector<uint32_t>{ProgId(second->egress_prog_fd())})
        << "the restarted agent's program replaces the old one in the same link";
    EXPECT_EQ(Progs(ifindex, TcDirection::kIngress), std::vector<uint32_t>{ProgId(second->ingress_prog_fd())});
    const std::string pin = hook.LinkPinPath(TcDirection::kEgress);
    EXPECT_EQ(PinnedLinkId(pin), egress_link) << "the same link, not a new one";
    EXPECT_OK(hook.Destroy());
    EXPECT_TRUE(Progs(ifindex, TcDirection::kEgress).empty());
    EXPECT_TRUE(Progs(ifindex, TcDirection::kIngress).empty());
    EXPECT_FALSE(std::filesystem::exists(pin));
  });
}

// Another owner's tcx program stays attached, before and after ours, and our
// links are appended after it.
TEST_F(PrivilegedBpfTcxTest, ForeignTcxProgramSurvivesAndRunsFirst) {
  InPrivateNetns([this] {
    SnatProgramOptions foreign_options;
    foreign_options.pin_dir = "";
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnatProgram> foreign, SnatProgram::Create(foreign_options));
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnatProgram> ours, SnatProgram::Create(options_));
    ASSERT_OK_AND_ASSIGN(const int ifindex, kernel::bpf::InterfaceIndex("lo"));
    const int foreign_link = bpf_link_create(foreign->egress_prog_fd(), ifindex, static_cast<bpf_attach_type>(47), nullptr);
    ASSERT_GE(foreign_link, 0) << errno;
    {
      ASSERT_OK_AND_ASSIGN(TcHook hook, ours->AttachToInterface(ifindex));
      EXPECT_EQ(Progs(ifindex, TcDirection::kEgress),
                (std::vector<uint32_t>{ProgId(foreign->egress_prog_fd()), ProgId(ours->egress_prog_fd())}));
    }  // destructor detaches ours
    EXPECT_EQ(Progs(ifindex, TcDirection::kEgress), std::vector<uint32_t>{ProgId(foreign->egress_prog_fd())});
    // Cleanup by pin dir (a successor in another mode) leaves it too.
    ASSERT_OK_AND_ASSIGN(TcHook again, ours->AttachToInterface(ifindex));
    again.Release();
    EXPECT_OK(kernel::bpf::RemovePinnedTcxLinks(options_.pin_dir));
    EXPECT_EQ(Progs(ifindex, TcDirection::kEgress), std::vector<uint32_t>{ProgId(foreign->egress_prog_fd())});
    ::close(foreign_link);
  });
}

// Real packets: on lo, our tcx program translates a "pod" (127.0.0.1) and
// another owner's clsact filter, which runs after every tcx program, still
// sees each translated packet (the chain was not ended for it).
TEST_F(PrivilegedBpfTcxTest, OtherOwnersClsactFilterSeesTranslatedPackets) {
  InPrivateNetns([this] {
    options_.pin_dir = "";
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnatProgram> ours, SnatProgram::Create(options_));
    const Ipv4Addr loopback = Ipv4Addr::FromOctets(127, 0, 0, 1);
    ASSERT_OK(ours->ReplacePodAddresses({loopback}));
    ASSERT_OK(ours->SetEgressAddresses({EgressAddress{kEgress1, false}}));
    SnatProgramOptions foreign_options;  // clsact, empty pod set: counts "not a pod"
    foreign_options.pin_dir = "";
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnatProgram> foreign, SnatProgram::Create(foreign_options));

    ASSERT_OK_AND_ASSIGN(const int ifindex, kernel::bpf::InterfaceIndex("lo"));
    ASSERT_TRUE(CreateForeignClsact(ifindex));
    ASSERT_TRUE(AttachForeignEgressFilter(ifindex, foreign->egress_prog_fd()));
    ASSERT_OK_AND_ASSIGN(TcHook hook, ours->AttachToInterface(ifindex));

    // lo is down in a new namespace; UDP datagrams to 127.0.0.2 leave through
    // its egress hook (delivery does not matter here).
    ASSERT_EQ(std::system("ip link set lo up"), 0);
    const int sock = ::socket(AF_INET, SOCK_DGRAM, 0);
    ASSERT_GE(sock, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(9);
    to.sin_addr.s_addr = Ipv4Addr::FromOctets(127, 0, 0, 2).network_order();
    constexpr int kPackets = 5;
    for (int i = 0; i < kPackets; ++i) {
      ASSERT_EQ(::sendto(sock, "x", 1, 0, reinterpret_cast<const sockaddr*>(&to), sizeof(to)), 1) << errno;
    }
    ::close(sock);

    ASSERT_OK_AND_ASSIGN(const ReasonCounters mine, ours->ReadReasonCounters());
    ASSERT_OK_AND_ASSIGN(const ReasonCounters theirs, foreign->ReadReasonCounters());
    EXPECT_EQ(mine[RP_XLATE_EGRESS], static_cast<uint64_t>(kPackets)) << "our tcx program translated them";
    EXPECT_GE(theirs[RP_PASS_NOT_POD], static_cast<uint64_t>(kPackets))
        << "the clsact filter after us did not see the translated packets";
  });
}

// Loaded for tcx, a translated packet continues to what runs after us
// (TCX_NEXT = TC_ACT_UNSPEC) instead of ending the chain; it is still
// translated.
TEST_F(PrivilegedBpfTcxTest, TranslatedPacketsContinueDownTheChain) {
  options_.pin_dir = "";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SnatProgram> prog, SnatProgram::Create(options_));
  ASSERT_OK(prog->ReplacePodAddresses({kPod}));
  ASSERT_OK(prog->SetEgressAddresses({EgressAddress{kEgress1, false}}));
  ASSERT_OK_AND_ASSIGN(TcRun out, RunTc(prog->egress_prog_fd(), BuildTcp(kPod, 40000, kRemote, 443)));
  EXPECT_EQ(out.verdict, TC_ACT_UNSPEC);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket p, ParseFrame(out.out));
  EXPECT_EQ(p.src, kEgress1);
  ASSERT_OK_AND_ASSIGN(TcRun back, RunTc(prog->ingress_prog_fd(), BuildTcp(kRemote, 443, kEgress1, p.sport)));
  EXPECT_EQ(back.verdict, TC_ACT_UNSPEC);
  ASSERT_OK_AND_ASSIGN(const ParsedPacket r, ParseFrame(back.out));
  EXPECT_EQ(r.dst, kPod);
  EXPECT_EQ(r.dport, 40000);
}

// Attaching to an interface that does not exist names it.
TEST_F(PrivilegedBpfTcTest, MissingInterfaceIsNotFound) {
  const auto hook = prog_->AttachToInterface("rp-no-such0");
  EXPECT_FALSE(hook.ok());
  EXPECT_NE(hook.status().message().find("rp-no-such0"), absl::string_view::npos) << hook.status();
}

}  // namespace
}  // namespace ruleplane::testing
