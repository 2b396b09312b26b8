// Privileged tier: the SNAT backends against the real kernel, each test in
// its own throwaway network namespace.
//  - nftables: the rendered SNAT ruleset (interval exclusions, ifname set,
//    steering map, NAT rules with register port ranges) commits, reads back
//    identical (Reconcile finds nothing to do), and a settings change is a
//    minimal diff that never touches pod elements.
//  - bpf: BpfSnatPort loads, fills, attaches, survives a "restart" (a new
//    port object adopting pins and the hook record), and removes exactly
//    what it created (filters, a clsact qdisc it created, pins) - never a
//    qdisc somebody else created.
// Needs root (netns, nftables, CAP_BPF) and bpffs at /sys/fs/bpf (mounted
// here when missing); skips loudly otherwise.
#include <fcntl.h>
#include <netinet/in.h>
#include <linux/netfilter.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <cstring>
#include <functional>
#include <thread>

#include <bpf/bpf.h>
#include <net/if.h>

#include "absl/strings/str_cat.h"
#include "agent/backend/nft_snat_backend.h"
#include "agent/backend/snat_backend.h"
#include "agent/kernel/bpf/bpf_snat_port.h"
#include "agent/kernel/bpf/snat_reader.h"
#include "agent/kernel/nft/netlink_nft_port.h"
#include "agent/txn/reconcile.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test/integration/netns_fixture.h"

namespace ruleplane {
namespace {

using ::ruleplane::testing::CommandResult;
using ::ruleplane::testing::RunInNetns;
using ::ruleplane::testing::TestNetns;
using ::testing::HasSubstr;
using ::testing::Not;

core::IpAddress Ip(const char* s) { return *core::IpAddress::Parse(s); }

core::SnatSettings Snat(core::SnatMode mode) {
  core::SnatSettings s;
  s.mode = mode;
  s.egress_interfaces = {"eth-out"};
  s.egress_ipv4 = {Ip("192.0.2.1"), Ip("192.0.2.2")};
  for (const char* p : {"10.0.0.0/8", "10.96.0.0/12", "172.16.0.0/12", "203.0.113.7", "240.0.0.0/4"}) {
    s.exclude_ipv4.push_back(*core::IpPrefix::Parse(p));
  }
  s.ports = {61000, 61001};
  return s;
}

class PrivilegedSnatNftTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = ruleplane::testing::PrivilegedSkipReason()) GTEST_SKIP() << *why;
    auto ns = TestNetns::Create();
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = std::move(*ns);
    kernel::nft::NetlinkNftPort::Options o;
    o.netns_path = ns_->path();
    auto port = kernel::nft::NetlinkNftPort::Create(o);
    ASSERT_TRUE(port.ok()) << port.status();
    port_ = std::move(*port);
  }

  txn::DesiredElements Desired(const render::BaseRuleset& base, const std::vector<render::SetElement>& pods = {}) {
    txn::DesiredElements d;
    for (const render::SetElement& se : base.elements) d[se.set].push_back(se.element);
    for (const render::SetElement& se : pods) d[se.set].push_back(se.element);
    return d;
  }

  // Converges the kernel to (base, desired) and returns the ops it took.
  std::vector<render::Op> Converge(const render::BaseRuleset& base, const txn::DesiredElements& desired) {
    absl::StatusOr<txn::KernelTable> kernel = port_->Dump("ruleplane", NFPROTO_INET);
    EXPECT_TRUE(kernel.ok()) << kernel.status();
    std::vector<render::Op> ops = txn::Reconcile(base, desired, *kernel, nullptr);
    if (ops.empty()) return ops;
    render::Plan plan{"ruleplane", NFPROTO_INET, ops};
    txn::CommitReport report = port_->Commit(plan);
    EXPECT_TRUE(report.status.ok()) << report.status << "\n" << render::PlanToText(plan);
    return ops;
  }

  std::unique_ptr<TestNetns> ns_;
  std::unique_ptr<kernel::nft::NetlinkNftPort> port_;
};

TEST_F(PrivilegedSnatNftTest, RulesetCommitsAndReadsBackIdentical) {
  render::Layout layout;
  layout.snat = Snat(core::SnatMode::kNftables);
  render::BaseRuleset base = backend::RenderFullBase(layout);
  std::vector<render::SetElement> pods = render::ElementsOf([] {
    core::Attachment a;
    a.key = {"c1", "eth0"};
    a.ips = {Ip("10.96.0.5")};
    return a;
  }());
  ASSERT_FALSE(Converge(base, Desired(base, pods)).empty());
  EXPECT_TRUE(Converge(base, Desired(base, pods)).empty()) << "read-back must match: nothing left to do";

  CommandResult listed = ns_->RunIn("nft list table inet ruleplane");
  ASSERT_EQ(listed.exit_code, 0) << listed.error;
  EXPECT_THAT(listed.output, HasSubstr("jump snat-v4"));
  EXPECT_THAT(listed.output, HasSubstr("snat ip to 192.0.2.1:61000-61001 fully-random"));
  EXPECT_THAT(listed.output, HasSubstr("10.0.0.0/8"));
  EXPECT_THAT(listed.output, HasSubstr("240.0.0.0/4"));

  // Steering elements (as the monitor would) fit the kernel's sets.
  backend::NftSnatBackend nft(layout.snat);
  std::vector<render::SetElement> steering =
      nft.PlanSteering({{Ip("192.0.2.1"), Ip("198.51.100.9"), 443, IPPROTO_TCP, 2},
                        {Ip("192.0.2.1"), Ip("198.51.100.8"), 53, IPPROTO_UDP, 2},
                        {Ip("192.0.2.2"), Ip("198.51.100.8"), 53, IPPROTO_UDP, 2}});
  ASSERT_EQ(steering.size(), 2u);
  std::vector<render::SetElement> all = pods;
  all.insert(all.end(), steering.begin(), steering.end());
  ASSERT_FALSE(Converge(base, Desired(base, all)).empty());
  EXPECT_TRUE(Converge(base, Desired(base, all)).empty());
  listed = ns_->RunIn("nft list map inet ruleplane snat-steer-v4; nft list set inet ruleplane snat-full-v4");
  EXPECT_THAT(listed.output, HasSubstr("198.51.100.9 . tcp . 443"));
  EXPECT_THAT(listed.output, HasSubstr(": 192.0.2.2"));
  EXPECT_THAT(listed.output, HasSubstr("198.51.100.8 . udp . 53"));
}

TEST_F(PrivilegedSnatNftTest, Ipv6AndKernelDefaultPortsCommit) {
  render::Layout layout;
  layout.snat = Snat(core::SnatMode::kNftables);
  layout.snat.ports = {};
  layout.snat.fully_random = false;
  layout.snat.ipv6 = true;
  layout.snat.egress_ipv6 = {Ip("2001:db8::1")};
  layout.snat.exclude_ipv6 = {*core::IpPrefix::Parse("fd00::/8"), *core::IpPrefix::Parse("2001:db8:1::/48")};
  render::BaseRuleset base = backend::RenderFullBase(layout);
  ASSERT_FALSE(Converge(base, Desired(base)).empty());
  EXPECT_TRUE(Converge(base, Desired(base)).empty());
  CommandResult listed = ns_->RunIn("nft list table inet ruleplane");
  ASSERT_EQ(listed.exit_code, 0) << listed.error;
  EXPECT_THAT(listed.output, HasSubstr("jump snat-v6"));
  EXPECT_THAT(listed.output, HasSubstr("snat ip6 to 2001:db8::1"));
  EXPECT_THAT(listed.output, HasSubstr("fd00::/8"));
  EXPECT_THAT(listed.output, Not(HasSubstr("fully-random")));
}

TEST_F(PrivilegedSnatNftTest, SettingsChangeIsAMinimalDiffAndOffRemovesEverything) {
  render::Layout layout;
  layout.snat = Snat(core::SnatMode::kNftables);
  render::BaseRuleset base = backend::RenderFullBase(layout);
  ASSERT_FALSE(Converge(base, Desired(base)).empty());

  // New exclusions and a reordered pool: exclusion elements change, the
  // primary rule changes; pod sets are never touched.
  layout.snat.exclude_ipv4 = {*core::IpPrefix::Parse("10.0.0.0/8"), *core::IpPrefix::Parse("192.168.0.0/16")};
  layout.snat.egress_ipv4 = {Ip("192.0.2.2"), Ip("192.0.2.1")};
  base = backend::RenderFullBase(layout);
  std::vector<render::Op> ops = Converge(base, Desired(base));
  ASSERT_FALSE(ops.empty());
  for (const render::Op& o : ops) {
    const std::string s = render::OpSummary(o);
    EXPECT_THAT(s, Not(HasSubstr("pod-ipv4"))) << s;
    EXPECT_THAT(s, Not(HasSubstr("delete set"))) << s;
  }
  EXPECT_TRUE(Converge(base, Desired(base)).empty());
  CommandResult listed = ns_->RunIn("nft list table inet ruleplane");
  EXPECT_THAT(listed.output, HasSubstr("192.168.0.0/16"));
  EXPECT_THAT(listed.output, Not(HasSubstr("172.16.0.0/12")));
  EXPECT_THAT(listed.output, HasSubstr("snat ip to 192.0.2.2:61000-61001"));

  // Mode off: every SNAT object goes, in one batch.
  render::Layout off;
  base = backend::RenderFullBase(off);
  Converge(base, Desired(base));
  EXPECT_TRUE(Converge(base, Desired(base)).empty());
  listed = ns_->RunIn("nft list table inet ruleplane");
  ASSERT_EQ(listed.exit_code, 0);
  EXPECT_THAT(listed.output, Not(HasSubstr("snat")));
}

// --- bpf ---

std::optional<std::string> BpffsSkipReason() {
  struct statfs fs {};
  if (::statfs("/sys/fs/bpf", &fs) == 0 && fs.f_type == BPF_FS_MAGIC) return std::nullopt;
  std::filesystem::create_directories("/sys/fs/bpf");
  if (::mount("bpf", "/sys/fs/bpf", "bpf", 0, nullptr) == 0) return std::nullopt;
  return absl::StrCat("no bpffs at /sys/fs/bpf and mounting one failed: ", std::strerror(errno));
}

class PrivilegedBpfSnatPortTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = ruleplane::testing::PrivilegedSkipReason()) GTEST_SKIP() << *why;
    if (auto why = BpffsSkipReason()) GTEST_SKIP() << *why;
    auto ns = TestNetns::Create();
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = std::move(*ns);
    CommandResult r = ns_->RunIn(
        "ip link add eth-out type veth peer name peer0 && ip addr add 192.0.2.1/24 dev eth-out && "
        "ip link set eth-out up && ip link set peer0 up");
    ASSERT_EQ(r.exit_code, 0) << r.error;
    pin_dir_ = absl::StrCat("/sys/fs/bpf/rp-test-", ns_->name());
    state_dir_ = std::filesystem::temp_directory_path() / absl::StrCat("rp-bpfport-", ns_->name());
    std::filesystem::create_directories(state_dir_);
  }
  void TearDown() override {
    std::filesystem::remove_all(pin_dir_);
    std::filesystem::remove_all(state_dir_);
  }
  render::BpfSnatPlan Plan() {
    render::BpfSnatPlan p;
    p.enabled = true;
    p.pin_dir = pin_dir_;
    p.interfaces = {"eth-out"};
    p.egress = {{192, 0, 2, 1}, {192, 0, 2, 2}};
    p.exclusions = {{{10, 0, 0, 0}, 8}};
    p.port_min = 61000;
    p.port_max = 61001;
    p.max_retries = 32;
    p.max_flows = 65536;
    p.attach = core::BpfAttach::kClsact;
    return p;
  }
  render::BpfSnatPlan TcxPlan() {
    render::BpfSnatPlan p = Plan();
    p.attach = core::BpfAttach::kTcx;
    return p;
  }
  // Program names tcx runs on eth-out (call inside the netns).
  static std::vector<std::string> TcxProgs() {
    std::vector<std::string> names;
    const int ifindex = static_cast<int>(::if_nametoindex("eth-out"));
    for (auto dir : {kernel::bpf::TcDirection::kIngress, kernel::bpf::TcDirection::kEgress}) {
      absl::StatusOr<std::vector<uint32_t>> ids = kernel::bpf::TcHook::TcxProgramIds(ifindex, dir);
      EXPECT_TRUE(ids.ok()) << ids.status();
      if (!ids.ok()) continue;
      for (uint32_t id : *ids) {
        const int fd = bpf_prog_get_fd_by_id(id);
        bpf_prog_info info{};
        uint32_t len = sizeof(info);
        names.push_back(fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.name : "?");
        if (fd >= 0) ::close(fd);
      }
    }
    return names;
  }
  kernel::bpf::BpfSnatPortOptions Options() { return {state_dir_.string(), pin_dir_, board_}; }
  std::string Tc() {
    return ns_->RunIn("tc qdisc show dev eth-out; tc filter show dev eth-out ingress; tc filter show dev eth-out egress")
        .output;
  }

  std::unique_ptr<TestNetns> ns_;
  std::string pin_dir_;
  std::filesystem::path state_dir_;
  std::shared_ptr<txn::BpfDatapathBoard> board_ = std::make_shared<txn::BpfDatapathBoard>();
};

TEST_F(PrivilegedBpfSnatPortTest, AttachesFillsSurvivesRestartAndRemovesWhatItCreated) {
  RunInNetns(*ns_, [&] {
    {
      kernel::bpf::BpfSnatPort port(Options());
      absl::Status s = port.Converge(Plan(), {{10, 96, 0, 5}});
      ASSERT_TRUE(s.ok()) << s;
      ASSERT_TRUE(port.UpdatePods({{10, 96, 0, 6}}, {{10, 96, 0, 5}}).ok());
      EXPECT_THAT(port.Describe(), HasSubstr("hooks=eth-out"));
      // Destroying the port (agent exit) leaves everything running.
    }
    std::string tc = Tc();
    EXPECT_THAT(tc, HasSubstr("clsact"));
    EXPECT_THAT(tc, HasSubstr("snat_egress"));
    EXPECT_THAT(tc, HasSubstr("snat_ingress"));
    EXPECT_TRUE(std::filesystem::exists(pin_dir_ + "/ruleplane_pods"));
    EXPECT_TRUE(std::filesystem::exists(state_dir_ / "bpf-snat-hooks"));
    absl::StatusOr<kernel::bpf::SnatMapsSnapshot> maps = kernel::bpf::ReadPinnedSnatMaps(pin_dir_);
    ASSERT_TRUE(maps.ok()) << maps.status();
    EXPECT_TRUE(maps->egress[0].live && maps->egress[1].live);
    EXPECT_FALSE(maps->egress[2].live);
    EXPECT_EQ(maps->flow_capacity, Plan().max_flows);
    EXPECT_FALSE(board_->For(maps->flow_map_id).has_value()) << "the exited port said nothing more";

    // "Restart": a new port adopts the pins and replaces the filters, and
    // says how its programs run, for the map the statistics read.
    kernel::bpf::BpfSnatPort port(Options());
    ASSERT_TRUE(port.Converge(Plan(), {{10, 96, 0, 6}}).ok());
    EXPECT_THAT(Tc(), HasSubstr("snat_egress"));
    std::optional<txn::BpfDatapath> dp = board_->For(maps->flow_map_id);
    ASSERT_TRUE(dp.has_value());
    EXPECT_TRUE(dp->l4_checksum == "direct" || dp->l4_checksum == "helper") << dp->l4_checksum;
    EXPECT_TRUE(dp->clock == "jiffies" || dp->clock == "ktime") << dp->clock;
    EXPECT_THAT(Tc(), HasSubstr(dp->l4_checksum == "direct" ? "snat_egress:[" : "snat_egress_h"))
        << "the pair named is the pair attached";
    EXPECT_FALSE(board_->For(maps->flow_map_id + 1).has_value()) << "another map";
    // Leaving bpf mode: filters, our clsact, pins and the record go.
    absl::Status s = port.Converge(render::BpfSnatPlan{}, {});
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_FALSE(board_->For(maps->flow_map_id).has_value()) << "cleared when leaving bpf mode";
    tc = Tc();
    EXPECT_THAT(tc, Not(HasSubstr("snat_")));
    EXPECT_THAT(tc, Not(HasSubstr("clsact"))) << "we created the clsact qdisc, so it goes";
    EXPECT_FALSE(std::filesystem::exists(pin_dir_));
    EXPECT_FALSE(std::filesystem::exists(state_dir_ / "bpf-snat-hooks"));
  });
}

// tcx: links pinned next to the maps survive a restart, and switching the
// attach kind either way swaps one kind for the other without leaving the
// old behind; leaving bpf mode removes the links.
TEST_F(PrivilegedBpfSnatPortTest, TcxLinksSurviveRestartAndSwitchWithClsact) {
  if (!kernel::bpf::KernelHasTcx()) GTEST_SKIP() << "kernel without tcx (Linux < 6.6)";
  RunInNetns(*ns_, [&] {
    {
      kernel::bpf::BpfSnatPort port(Options());
      absl::Status s = port.Converge(TcxPlan(), {{10, 96, 0, 5}});
      ASSERT_TRUE(s.ok()) << s;
      EXPECT_THAT(port.Describe(), HasSubstr("hooks=eth-out(tcx)"));
    }
    const std::vector<std::string> ours = {"snat_ingress", "snat_egress"};
    EXPECT_EQ(TcxProgs(), ours) << "agent exit leaves the links running";
    EXPECT_THAT(Tc(), Not(HasSubstr("clsact")));
    const int ifindex = static_cast<int>(::if_nametoindex("eth-out"));
    EXPECT_TRUE(std::filesystem::exists(absl::StrCat(pin_dir_, "/tcx_", ifindex, "_egress")));

    kernel::bpf::BpfSnatPort port(Options());  // restart
    ASSERT_TRUE(port.Converge(TcxPlan(), {{10, 96, 0, 5}}).ok());
    EXPECT_EQ(TcxProgs(), ours);

    absl::Status s = port.Converge(Plan(), {{10, 96, 0, 5}});  // to clsact
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_TRUE(TcxProgs().empty());
    EXPECT_THAT(Tc(), HasSubstr("snat_egress"));
    EXPECT_THAT(port.Describe(), HasSubstr("hooks=eth-out(clsact)"));
    EXPECT_FALSE(std::filesystem::exists(absl::StrCat(pin_dir_, "/tcx_", ifindex, "_egress")));

    s = port.Converge(TcxPlan(), {{10, 96, 0, 5}});  // and back
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(TcxProgs(), ours);
    std::string tc = Tc();
    EXPECT_THAT(tc, Not(HasSubstr("snat_")));
    EXPECT_THAT(tc, Not(HasSubstr("clsact"))) << "the clsact qdisc we created goes with our filters";

    {
      // A successor that starts in clsact mode replaces the predecessor's
      // tcx links found through the record and the pins.
      port.Release();
      kernel::bpf::BpfSnatPort next(Options());
      ASSERT_TRUE(next.Converge(Plan(), {}).ok());
      EXPECT_TRUE(TcxProgs().empty());
      EXPECT_THAT(Tc(), HasSubstr("snat_egress"));
      ASSERT_TRUE(next.Converge(TcxPlan(), {}).ok());
    }
    kernel::bpf::BpfSnatPort last(Options());
    s = last.Converge(render::BpfSnatPlan{}, {});  // leave bpf mode
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_TRUE(TcxProgs().empty());
    EXPECT_THAT(Tc(), Not(HasSubstr("clsact")));
    EXPECT_FALSE(std::filesystem::exists(pin_dir_));
  });
}

// Upgrade from an agent that only knew clsact (its record has no kind): the
// new agent's tcx links replace its filters and the clsact qdisc it created.
TEST_F(PrivilegedBpfSnatPortTest, UpgradeFromAClsactOnlyAgentMovesToTcx) {
  if (!kernel::bpf::KernelHasTcx()) GTEST_SKIP() << "kernel without tcx (Linux < 6.6)";
  RunInNetns(*ns_, [&] {
    {
      kernel::bpf::BpfSnatPort old(Options());
      ASSERT_TRUE(old.Converge(Plan(), {{10, 96, 0, 5}}).ok());
    }  // exits, leaving its filters
    // Rewrite the record the way the older agent wrote it: "hook IF OWNS".
    const std::filesystem::path record = state_dir_ / "bpf-snat-hooks";
    std::ifstream in(record);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    const std::string kind = " clsact\n";
    ASSERT_NE(text.find("hook eth-out 1" + kind), std::string::npos) << text;
    text.replace(text.find(kind), kind.size(), "\n");
    std::ofstream(record, std::ios::trunc) << text;

    kernel::bpf::BpfSnatPort port(Options());
    absl::Status s = port.Converge(TcxPlan(), {{10, 96, 0, 5}});
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(TcxProgs(), (std::vector<std::string>{"snat_ingress", "snat_egress"}));
    std::string tc = Tc();
    EXPECT_THAT(tc, Not(HasSubstr("snat_")));
    EXPECT_THAT(tc, Not(HasSubstr("clsact"))) << "the qdisc the old agent created goes with its filters";
  });
}

// Switching the attach kind while an interface leaves the plan: the new kind
// on the interfaces still wanted, nothing left on (or recorded for) the other.
TEST_F(PrivilegedBpfSnatPortTest, AttachSwitchThatAlsoDropsAnInterfaceLeavesNothingThere) {
  if (!kernel::bpf::KernelHasTcx()) GTEST_SKIP() << "kernel without tcx (Linux < 6.6)";
  CommandResult r = ns_->RunIn("ip link add eth-b type veth peer name peer1 && ip link set eth-b up");
  ASSERT_EQ(r.exit_code, 0) << r.error;
  RunInNetns(*ns_, [&] {
    kernel::bpf::BpfSnatPort port(Options());
    render::BpfSnatPlan both = TcxPlan();
    both.interfaces = {"eth-out", "eth-b"};
    absl::Status s = port.Converge(both, {});
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_THAT(port.Describe(), HasSubstr("hooks=eth-b(tcx),eth-out(tcx)"));
    s = port.Converge(Plan(), {});  // clsact, eth-out only
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_THAT(port.Describe(), HasSubstr("hooks=eth-out(clsact) "));
    absl::StatusOr<std::vector<uint32_t>> left =
        kernel::bpf::TcHook::TcxProgramIds(static_cast<int>(::if_nametoindex("eth-b")),
                                           kernel::bpf::TcDirection::kEgress);
    ASSERT_TRUE(left.ok()) << left.status();
    EXPECT_TRUE(left->empty());
    std::ifstream record(state_dir_ / "bpf-snat-hooks");
    std::string text((std::istreambuf_iterator<char>(record)), std::istreambuf_iterator<char>());
    EXPECT_THAT(text, Not(HasSubstr("eth-b")));
  });
}

// An egress interface deleted and created again under its name (a bond or
// VLAN rebuilt) has none of our hooks: the next converge attaches to the new
// device, in both attach kinds, and the pins of the old device's defunct
// tcx links go; while the interface is missing the converge says so. A
// device renamed away keeps nothing of ours.
TEST_F(PrivilegedBpfSnatPortTest, InterfaceRecreatedUnderItsNameIsHookedAgain) {
  std::vector<render::BpfSnatPlan> plans = {Plan()};
  if (kernel::bpf::KernelHasTcx()) plans.push_back(TcxPlan());
  for (const render::BpfSnatPlan& plan : plans) {
    SCOPED_TRACE(plan.attach == core::BpfAttach::kTcx ? "tcx" : "clsact");
    RunInNetns(*ns_, [&] {
      kernel::bpf::BpfSnatPort port(Options());
      ASSERT_TRUE(port.Converge(plan, {{10, 96, 0, 5}}).ok());
      const int old_ifindex = static_cast<int>(::if_nametoindex("eth-out"));
      CommandResult r = ns_->RunIn("ip link del eth-out");
      ASSERT_EQ(r.exit_code, 0) << r.error;
      absl::Status gone = port.Converge(plan, {{10, 96, 0, 5}});
      EXPECT_FALSE(gone.ok());
      EXPECT_THAT(std::string(gone.message()), HasSubstr("eth-out"));
      r = ns_->RunIn(
          "ip link add eth-out type veth peer name peer0 && ip addr add 192.0.2.1/24 dev eth-out && "
          "ip link set eth-out up && ip link set peer0 up");
      ASSERT_EQ(r.exit_code, 0) << r.error;
      const int new_ifindex = static_cast<int>(::if_nametoindex("eth-out"));
      ASSERT_NE(new_ifindex, old_ifindex);
      absl::Status s = port.Converge(plan, {{10, 96, 0, 5}});
      ASSERT_TRUE(s.ok()) << s;
      if (plan.attach == core::BpfAttach::kTcx) {
        EXPECT_EQ(TcxProgs(), (std::vector<std::string>{"snat_ingress", "snat_egress"}));
        std::vector<std::string> pins;
        for (const auto& e : std::filesystem::directory_iterator(pin_dir_)) {
          const std::string name = e.path().filename().string();
          if (name.rfind("tcx_", 0) == 0) pins.push_back(name);
        }
        std::sort(pins.begin(), pins.end());
        EXPECT_EQ(pins, (std::vector<std::string>{absl::StrCat("tcx_", new_ifindex, "_egress"),
                                                  absl::StrCat("tcx_", new_ifindex, "_ingress")}));
      } else {
        const std::string tc = Tc();
        EXPECT_THAT(tc, HasSubstr("snat_egress"));
        EXPECT_THAT(tc, HasSubstr("snat_ingress"));
      }
      // Renamed away (the device stays, under another name): our hooks
      // come off it; renamed back: they return.
      r = ns_->RunIn("ip link set eth-out down && ip link set eth-out name eth-old && ip link set eth-old up");
      ASSERT_EQ(r.exit_code, 0) << r.error;
      EXPECT_FALSE(port.Converge(plan, {{10, 96, 0, 5}}).ok()) << "eth-out is missing";
      const std::string old_tc = ns_->RunIn("tc filter show dev eth-old ingress; tc filter show dev eth-old egress").output;
      EXPECT_THAT(old_tc, Not(HasSubstr("snat_")));
      for (auto dir : {kernel::bpf::TcDirection::kIngress, kernel::bpf::TcDirection::kEgress}) {
        absl::StatusOr<std::vector<uint32_t>> ids = kernel::bpf::TcHook::TcxProgramIds(new_ifindex, dir);
        ASSERT_TRUE(ids.ok()) << ids.status();
        EXPECT_TRUE(ids->empty()) << "tcx programs left on eth-old";
      }
      r = ns_->RunIn("ip link set eth-old down && ip link set eth-old name eth-out && ip link set eth-out up");
      ASSERT_EQ(r.exit_code, 0) << r.error;
      s = port.Converge(plan, {{10, 96, 0, 5}});
      ASSERT_TRUE(s.ok()) << s;
      if (plan.attach == core::BpfAttach::kTcx) {
        EXPECT_EQ(TcxProgs(), (std::vector<std::string>{"snat_ingress", "snat_egress"}));
      } else {
        EXPECT_THAT(Tc(), HasSubstr("snat_egress"));
      }
      // Leaving bpf mode removes what the new device got (and our qdisc).
      ASSERT_TRUE(port.Converge(render::BpfSnatPlan{}, {}).ok());
      EXPECT_THAT(Tc(), Not(HasSubstr("clsact")));
      EXPECT_FALSE(std::filesystem::exists(pin_dir_));
    });
  }
}

TEST_F(PrivilegedBpfSnatPortTest, NeverRemovesAQdiscItDidNotCreate) {
  CommandResult r = ns_->RunIn("tc qdisc add dev eth-out clsact");
  ASSERT_EQ(r.exit_code, 0) << r.error;
  RunInNetns(*ns_, [&] {
    kernel::bpf::BpfSnatPort port(Options());
    ASSERT_TRUE(port.Converge(Plan(), {}).ok());
    EXPECT_THAT(Tc(), HasSubstr("snat_egress"));
    ASSERT_TRUE(port.Converge(render::BpfSnatPlan{}, {}).ok());
    std::string tc = Tc();
    EXPECT_THAT(tc, Not(HasSubstr("snat_")));
    EXPECT_THAT(tc, HasSubstr("clsact")) << "someone else's qdisc stays";
  });
}

TEST_F(PrivilegedBpfSnatPortTest, CleansUpAfterAPredecessorWithoutLoadingAnything) {
  RunInNetns(*ns_, [&] {
    {
      kernel::bpf::BpfSnatPort port(Options());
      ASSERT_TRUE(port.Converge(Plan(), {}).ok());
    }
    // A new agent that starts in another mode removes the predecessor's
    // dataplane from the record and the pin dir alone.
    kernel::bpf::BpfSnatPort port(Options());
    ASSERT_TRUE(port.Converge(render::BpfSnatPlan{}, {}).ok());
    std::string tc = Tc();
    EXPECT_THAT(tc, Not(HasSubstr("snat_")));
    EXPECT_THAT(tc, Not(HasSubstr("clsact")));
    EXPECT_FALSE(std::filesystem::exists(pin_dir_));
    EXPECT_EQ(port.Describe(), "bpf dataplane off");
  });
}

}  // namespace
}  // namespace ruleplane
