// Privileged: the real agent watches an xtables lock file (its own, never
// /run/xtables.lock) while test processes hold and wait for it; and refuses
// to start when another table sits at one of its hook priorities.
#include <grpcpp/grpcpp.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "test/util/process.h"
#include "test/integration/agent_process.h"
#include "test/integration/netns_fixture.h"

namespace ruleplane::testing {
namespace {

namespace fs = std::filesystem;

class PrivilegedCoexistenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = PrivilegedSkipReason()) GTEST_SKIP() << *why;
    auto ns = TestNetns::Create();
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = std::move(*ns);
    dir_ = fs::temp_directory_path() /
           absl::StrCat("rp-coexist-", getpid(), "-", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    agent_.reset();
    fs::remove_all(dir_);
  }
  v1::GetLockStatsResponse LockStats() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::GetLockStatsResponse r;
    grpc::Status s = agent_->diag()->GetLockStats(&ctx, {}, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r;
  }
  CommandResult RunAgent(const std::string& args) {
    return ns_->RunIn(absl::StrCat(RULEPLANE_AGENT_BIN, " --socket=", dir_.string(), "/s.sock --metrics-address= ",
                                   "--state-dir=", dir_.string(), "/state --xtables-lock-path=", dir_.string(),
                                   "/xtables.lock --exit-after-start ", args));
  }

  std::unique_ptr<TestNetns> ns_;
  fs::path dir_;
  std::unique_ptr<AgentProcess> agent_;
};

TEST_F(PrivilegedCoexistenceTest, AgentReportsLockHolderWaiterAndHoldTimeWithoutTakingTheLock) {
  const std::string lock = (dir_ / "xtables.lock").string();
  std::ofstream(lock).put('\0');
  // As on a node: "iptables-restore", child of "kube-proxy".
  fs::create_symlink("/usr/bin/flock", dir_ / "iptables-restore");
  fs::create_symlink("/bin/sh", dir_ / "kube-proxy");
  agent_ = std::make_unique<AgentProcess>(ns_.get(), (dir_ / "agent").string(),
                                          std::vector<std::string>{"--xtables-lock-path=" + lock});
  ASSERT_TRUE(agent_->Start().ok()) << agent_->Log();
  ASSERT_EQ(RunShell(absl::StrCat("cat /proc/", agent_->pid(), "/comm")).output, "ruleplane-agent\n");
  ASSERT_TRUE(WaitFor([&] { return LockStats().file_state() == "file"; }, absl::Seconds(2)));

  pid_t holder = Spawn({(dir_ / "kube-proxy").string(), "-c",
                        absl::StrCat((dir_ / "iptables-restore").string(), " ", lock, " sleep 1.5; true")});
  ASSERT_GT(holder, 0);
  ASSERT_TRUE(WaitFor([&] { return LockStats().has_current(); }, absl::Seconds(2)));
  pid_t waiter = Spawn({"/usr/bin/flock", lock, "true"});
  ASSERT_GT(waiter, 0);
  ASSERT_TRUE(WaitFor([&] { return LockStats().waiters_size() == 1; }, absl::Seconds(2)));
  v1::GetLockStatsResponse during = LockStats();
  EXPECT_TRUE(during.current().in_progress());
  EXPECT_EQ(during.current().holder().comm(), "iptables-restor");
  EXPECT_EQ(during.waiters(0).pid(), waiter);

  // The agent never holds, waits for, or even opens the lock.
  struct stat st {};
  ASSERT_EQ(::stat(lock.c_str(), &st), 0);
  const std::string inode = absl::StrCat(":", st.st_ino, " ");
  std::ifstream locks("/proc/locks");
  int entries = 0;
  for (std::string line; std::getline(locks, line);) {
    if (line.find(inode) == std::string::npos) continue;
    ++entries;
    EXPECT_EQ(line.find(absl::StrCat(" ", agent_->pid(), " ")), std::string::npos) << line;
  }
  EXPECT_EQ(entries, 2) << "the holder and the waiter";
  for (const auto& fd : fs::directory_iterator(absl::StrCat("/proc/", agent_->pid(), "/fd"))) {
    std::error_code ec;
    EXPECT_NE(fs::read_symlink(fd.path(), ec).string(), lock) << "the agent opened the lock file";
  }

  EXPECT_EQ(Wait(holder), 0);
  EXPECT_EQ(Wait(waiter), 0);
  ASSERT_TRUE(WaitFor([&] {
    v1::GetLockStatsResponse r = LockStats();
    return r.holds() >= 1 && !r.has_current() && r.waiters_size() == 0;
  }, absl::Seconds(3)));
  v1::GetLockStatsResponse r = LockStats();
  EXPECT_TRUE(r.monitoring());
  EXPECT_EQ(r.path(), lock);
  const v1::LockHold& h = r.recent(0);
  EXPECT_EQ(h.holder().comm(), "iptables-restor");
  EXPECT_EQ(h.holder().name(), "iptables-restore");
  EXPECT_EQ(h.holder().parent_name(), "kube-proxy");
  EXPECT_GE(h.held_seconds(), 1.4);
  ASSERT_EQ(h.waiters_size(), 1);
  EXPECT_EQ(h.waiters(0).pid(), waiter);
  EXPECT_EQ(h.waiters(0).comm(), "flock");
  EXPECT_EQ(r.long_holds(), 1u);
  EXPECT_GE(r.longest_hold_seconds(), 1.4);
  ASSERT_GE(r.holders_size(), 1);
  EXPECT_EQ(r.holders(0).holder(), "iptables-restore");
  EXPECT_NE(r.holders(0).example().find("child of kube-proxy"), std::string::npos) << r.holders(0).example();
  // One log line names holder, parent and waiter.
  std::string log = agent_->Log();
  size_t at = log.find("xtables lock held");
  ASSERT_NE(at, std::string::npos) << log;
  std::string line = log.substr(at, log.find('\n', at) - at);
  EXPECT_NE(line.find("by iptables-restore (pid"), std::string::npos) << line;
  EXPECT_NE(line.find("child of kube-proxy"), std::string::npos) << line;
  EXPECT_NE(line.find(absl::StrCat("1 waiter: flock (pid ", waiter, ")")), std::string::npos) << line;
}

TEST_F(PrivilegedCoexistenceTest, LockPathThatIsADirectoryIsReportedNotFatal) {
  fs::create_directories(dir_ / "xtables.lock");
  agent_ = std::make_unique<AgentProcess>(ns_.get(), (dir_ / "agent").string(),
                                          std::vector<std::string>{"--xtables-lock-path=" + (dir_ / "xtables.lock").string()});
  ASSERT_TRUE(agent_->Start().ok()) << agent_->Log();
  ASSERT_TRUE(WaitFor([&] { return LockStats().file_state() == "directory"; }, absl::Seconds(2)));
  EXPECT_NE(LockStats().file_detail().find("hostPath"), std::string::npos);
}

TEST_F(PrivilegedCoexistenceTest, MixedIptablesBackendsAreReported) {
  // An iptables-nft table in this netns plus a legacy one would be mixed;
  // the legacy x_tables module may not be loadable here, so check what the
  // kernel actually shows and compare.
  ASSERT_EQ(ns_->RunIn("nft 'add table ip mangle; add chain ip mangle PREROUTING { type filter hook prerouting "
                       "priority -150; }; add chain ip mangle KUBE-IPTABLES-HINT'").exit_code, 0);
  bool legacy = ns_->RunIn("iptables-legacy -t raw -S >/dev/null 2>&1 && grep -q . /proc/net/ip_tables_names").exit_code == 0;
  agent_ = std::make_unique<AgentProcess>(ns_.get(), (dir_ / "agent").string());
  ASSERT_TRUE(agent_->Start().ok()) << agent_->Log();
  v1::GetLockStatsResponse r = LockStats();
  EXPECT_TRUE(r.backends().nft_in_use()) << r.DebugString();
  ASSERT_EQ(r.backends().nft_tables_size(), 1);
  EXPECT_EQ(r.backends().nft_tables(0), "ip mangle");
  ASSERT_EQ(r.backends().kube_hints_size(), 1);
  EXPECT_EQ(r.backends().kube_hints(0), "KUBE-IPTABLES-HINT in ip mangle");
  EXPECT_EQ(r.backends().legacy_in_use(), legacy);
  EXPECT_EQ(r.backends().mixed(), legacy) << r.backends().summary();
  if (legacy) {
    EXPECT_NE(agent_->Log().find("MIXED iptables backends"), std::string::npos);
  }
}

TEST_F(PrivilegedCoexistenceTest, PriorityCollisionRefusesToStartNamingTheOtherTable) {
  ASSERT_EQ(ns_->RunIn("nft 'add table ip other; add chain ip other pre { type nat hook prerouting priority -105; }'")
                .exit_code,
            0);
  CommandResult r = RunAgent("");
  EXPECT_EQ(r.exit_code, 1) << r.error;
  EXPECT_NE(r.error.find("hook priority collision: ip other chain pre (nat prerouting priority -105)"),
            std::string::npos)
      << r.error;
  EXPECT_NE(r.error.find("allow_priority_collision"), std::string::npos) << r.error;
  EXPECT_NE(ns_->RunIn("nft list table inet ruleplane").exit_code, 0) << "nothing may be applied";

  // The refused start is in the bring-up history, with the reason.
  std::ifstream in(dir_ / "state" / "bringup-history.json");
  std::stringstream history;
  history << in.rdbuf();
  EXPECT_NE(history.str().find("\"outcome\": \"failed\""), std::string::npos) << history.str();
  EXPECT_NE(history.str().find("hook priority collision"), std::string::npos) << history.str();

  // Another priority avoids it; or the operator allows the collision.
  std::ofstream(dir_ / "c.json") << R"({"dnat_priority": -104})";
  r = RunAgent("--config=" + (dir_ / "c.json").string());
  EXPECT_EQ(r.exit_code, 0) << r.error;
  ASSERT_EQ(ns_->RunIn("nft delete table inet ruleplane").exit_code, 0);
  r = RunAgent("--allow-priority-collision");
  EXPECT_EQ(r.exit_code, 0) << r.error;
  EXPECT_NE(r.error.find("hook priority collision (allowed by allow_priority_collision)"), std::string::npos)
      << r.error;
}

TEST_F(PrivilegedCoexistenceTest, CollisionAtPostroutingInIp6IsFoundToo) {
  ASSERT_EQ(ns_->RunIn("nft 'add table ip6 masq6; add chain ip6 masq6 post { type nat hook postrouting priority 105; }'")
                .exit_code,
            0);
  CommandResult r = RunAgent("");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.error.find("ip6 masq6 chain post (nat postrouting priority 105)"), std::string::npos) << r.error;
}

}  // namespace
}  // namespace ruleplane::testing
