// Privileged tier: the rtnetlink link/address watcher and the egress
// watcher's settling, against the real kernel in a throwaway netns.
#include "agent/txn/egress_watch.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <unistd.h>

#include <functional>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "agent/kernel/nl/addresses.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test/integration/netns_fixture.h"

namespace ruleplane {
namespace {

using ::ruleplane::testing::CommandResult;
using ::ruleplane::testing::RunInNetns;
using ::ruleplane::testing::TestNetns;
using ::testing::Contains;
using ::testing::IsSupersetOf;
using ::testing::Not;

// Everything the watcher reports within `for_ms` of quiet polling.
kernel::nl::LinkChanges Collect(kernel::nl::LinkWatcher& w, int for_ms = 300) {
  kernel::nl::LinkChanges all;
  pollfd p = {w.fd(), POLLIN, 0};
  while (::poll(&p, 1, for_ms) > 0) {
    absl::StatusOr<kernel::nl::LinkChanges> got = w.ReadPending();
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok()) break;
    all.interfaces.merge(got->interfaces);
    all.overflow = all.overflow || got->overflow;
  }
  return all;
}

class EgressWatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = ruleplane::testing::PrivilegedSkipReason()) GTEST_SKIP() << *why;
    auto ns = TestNetns::Create();
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = std::move(*ns);
  }
  void Run(const std::string& cmd) {
    CommandResult r = ns_->RunIn(cmd);
    ASSERT_EQ(r.exit_code, 0) << cmd << ": " << r.error;
  }
  std::unique_ptr<TestNetns> ns_;
};

// Links and addresses of this netns are reported by name; nothing from
// another netns is.
TEST_F(EgressWatchTest, ReportsLinkAndAddressChangesByName) {
  RunInNetns(*ns_, [&] {
    absl::StatusOr<std::unique_ptr<kernel::nl::LinkWatcher>> w = kernel::nl::LinkWatcher::Open();
    ASSERT_TRUE(w.ok()) << w.status();
    absl::StatusOr<kernel::nl::LinkChanges> none = (*w)->ReadPending();
    ASSERT_TRUE(none.ok()) << none.status();
    EXPECT_TRUE(none->empty()) << "nothing queued yet: no blocking, empty answer";

    Run("ip link add up0 type veth peer name up0p");
    EXPECT_THAT(Collect(**w).interfaces, Contains("up0"));
    Run("ip addr add 192.0.2.9/24 dev up0");
    EXPECT_THAT(Collect(**w).interfaces, Contains("up0"));
    Run("ip -6 addr add 2001:db8::9/64 dev up0 nodad");
    EXPECT_THAT(Collect(**w).interfaces, Contains("up0"));
    Run("ip link set up0 name up1");
    EXPECT_THAT(Collect(**w).interfaces, Contains("up1"));
    Run("ip link del up1");
    EXPECT_THAT(Collect(**w).interfaces, Contains("up1"));

    auto elsewhere = TestNetns::Create();
    ASSERT_TRUE(elsewhere.ok()) << elsewhere.status();
    CommandResult r = (*elsewhere)->RunIn("ip link add other0 type veth peer name other0p");
    ASSERT_EQ(r.exit_code, 0) << r.error;
    EXPECT_THAT(Collect(**w).interfaces, Not(Contains("other0"))) << "another netns";
  });
}

// More notifications than the socket buffer holds: the kernel drops some
// (ENOBUFS) and the watcher says so instead of reporting a partial picture;
// the socket keeps working afterwards.
TEST_F(EgressWatchTest, LostNotificationsAreReportedAsAnOverflow) {
  RunInNetns(*ns_, [&] {
    absl::StatusOr<std::unique_ptr<kernel::nl::LinkWatcher>> w = kernel::nl::LinkWatcher::Open(4096);
    ASSERT_TRUE(w.ok()) << w.status();
    Run("for i in $(seq 1 40); do ip link add o$i type veth peer name p$i || exit 1; done");
    kernel::nl::LinkChanges got = Collect(**w);
    EXPECT_TRUE(got.overflow) << got.interfaces.size() << " interfaces reported";
    Run("ip link add after0 type veth peer name after1");
    kernel::nl::LinkChanges next = Collect(**w);
    EXPECT_FALSE(next.overflow);
    EXPECT_THAT(next.interfaces, Contains("after0"));
  });
}

// The default SNAT address as rtnetlink tells it: the IPv4 primary (not a
// secondary, whatever its label); IPv6 global, never tentative (DAD not
// done: no carrier here), deprecated ones last.
TEST_F(EgressWatchTest, PreferredSourceAddressesSkipSecondariesAndTentative) {
  Run("ip link add up0 type veth peer name up0p && ip link set up0 up && "
      "ip addr add 192.0.2.1/24 dev up0 && ip addr add 192.0.2.2/24 dev up0 && "
      "ip addr add 192.0.2.3/24 dev up0 label up0:x && ip addr add 198.51.100.1/24 dev up0 && "
      "ip -6 addr add 2001:db8::1/64 dev up0 nodad preferred_lft 0 && "
      "ip -6 addr add 2001:db8::2/64 dev up0 && ip -6 addr add 2001:db8::3/64 dev up0 nodad");
  RunInNetns(*ns_, [&] {
    auto text = [](const std::vector<kernel::nl::InterfaceAddress>& v) {
      std::vector<std::string> out;
      for (const kernel::nl::InterfaceAddress& a : v) {
        char buf[64] = {};
        ::inet_ntop(a.family, a.bytes.data(), buf, sizeof(buf));
        out.push_back(buf);
      }
      return out;
    };
    absl::StatusOr<std::vector<kernel::nl::InterfaceAddress>> v4 = kernel::nl::DumpInterfaceAddresses("up0", AF_INET);
    ASSERT_TRUE(v4.ok()) << v4.status();
    EXPECT_THAT(text(*v4), ::testing::UnorderedElementsAre("192.0.2.1", "192.0.2.2", "192.0.2.3", "198.51.100.1"));
    EXPECT_EQ(text(kernel::nl::PreferredSourceAddresses(*v4, AF_INET)),
              (std::vector<std::string>{"192.0.2.1", "198.51.100.1"}));
    absl::StatusOr<std::vector<kernel::nl::InterfaceAddress>> v6 = kernel::nl::DumpInterfaceAddresses("up0", AF_INET6);
    ASSERT_TRUE(v6.ok()) << v6.status();
    EXPECT_THAT(text(*v6), IsSupersetOf({"2001:db8::1", "2001:db8::2", "2001:db8::3"}));
    EXPECT_EQ(text(kernel::nl::PreferredSourceAddresses(*v6, AF_INET6)),
              (std::vector<std::string>{"2001:db8::3", "2001:db8::1"}))
        << "::2 is tentative, ::1 deprecated, fe80:: link-local";
    absl::StatusOr<std::vector<kernel::nl::InterfaceAddress>> none = kernel::nl::DumpInterfaceAddresses("nope0", AF_INET);
    EXPECT_TRUE(absl::IsNotFound(none.status())) << none.status();
  });
}

// A burst of changes is delivered once, after it settles, with every
// interface that changed.
TEST_F(EgressWatchTest, DeliversABurstOnceItSettles) {
  absl::Mutex mu;
  std::vector<kernel::nl::LinkChanges> calls;  // guarded by mu
  std::unique_ptr<txn::EgressWatcher> watcher;
  RunInNetns(*ns_, [&] {
    txn::EgressWatchOptions o;
    o.settle = absl::Seconds(1);  // wide: the commands below are one burst even on a busy machine
    o.max_delay = absl::Seconds(5);
    o.on_change = [&](const kernel::nl::LinkChanges& c) {
      absl::MutexLock lock(&mu);
      calls.push_back(c);
    };
    absl::StatusOr<std::unique_ptr<txn::EgressWatcher>> w = txn::EgressWatcher::Start(std::move(o));
    ASSERT_TRUE(w.ok()) << w.status();
    watcher = std::move(*w);
  });
  ASSERT_NE(watcher, nullptr);
  Run("ip link add b0 type veth peer name b1 && ip addr add 192.0.2.1/24 dev b0 && ip link set b1 up");
  auto count = [&] {
    absl::MutexLock lock(&mu);
    return calls.size();
  };
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (count() == 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  absl::SleepFor(absl::Milliseconds(1500));  // a second call would have come by now
  watcher.reset();                            // stops and joins
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_THAT(calls[0].interfaces, IsSupersetOf({"b0", "b1"}));
  EXPECT_FALSE(calls[0].overflow);
}

}  // namespace
}  // namespace ruleplane
