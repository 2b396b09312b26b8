// The lock monitor in-process against real flock(1) processes. Needs no
// privileges: inotify, /proc/locks and /proc/<pid> of our own children are
// readable by anyone. Uses its own lock file, never /run/xtables.lock.
#include "agent/coexist/xtables_lock_monitor.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "test/util/process.h"

namespace ruleplane::coexist {
namespace {

namespace fs = std::filesystem;

using ::ruleplane::testing::Spawn;
using ::ruleplane::testing::Wait;
using ::ruleplane::testing::WaitFor;

class XtablesLockMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / absl::StrCat("rp-lockmon-", getpid(), "-",
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    lock_ = (dir_ / "xtables.lock").string();
  }
  void TearDown() override {
    monitor_.reset();
    fs::remove_all(dir_);
  }
  void StartMonitor() {
    XtablesLockMonitorOptions o;
    o.path = lock_;
    auto m = XtablesLockMonitor::Start(o, &registry_);
    ASSERT_TRUE(m.ok()) << m.status();
    monitor_ = std::move(*m);
  }

  fs::path dir_;
  std::string lock_;
  metrics::Registry registry_;
  std::unique_ptr<XtablesLockMonitor> monitor_;
};

TEST_F(XtablesLockMonitorTest, ReportsHolderWithParentWaiterAndHoldTime) {
  std::ofstream(lock_).put('\0');
  // Names as on a node: "iptables-restore", child of "kube-proxy".
  fs::create_symlink("/usr/bin/flock", dir_ / "iptables-restore");
  fs::create_symlink("/bin/sh", dir_ / "kube-proxy");
  StartMonitor();
  ASSERT_TRUE(WaitFor([&] { return monitor_->Snapshot().file_state == "file"; }, absl::Seconds(2)));

  pid_t holder = Spawn({(dir_ / "kube-proxy").string(), "-c",
                        absl::StrCat((dir_ / "iptables-restore").string(), " ", lock_, " sleep 1.5; true")});
  ASSERT_GT(holder, 0);
  ASSERT_TRUE(WaitFor([&] { return monitor_->Snapshot().current.has_value(); }, absl::Seconds(2)));
  pid_t waiter = Spawn({"/usr/bin/flock", lock_, "true"});
  ASSERT_GT(waiter, 0);
  ASSERT_TRUE(WaitFor([&] { return !monitor_->Snapshot().waiters_now.empty(); }, absl::Seconds(2)));
  LockStats during = monitor_->Snapshot();
  ASSERT_TRUE(during.current.has_value());
  EXPECT_TRUE(during.current->in_progress);
  EXPECT_EQ(during.waiters_now[0].pid, waiter);
  EXPECT_EQ(during.waiters_now[0].comm, "flock");
  EXPECT_EQ(registry_.GetGauge("ruleplane_xtables_lock_waiters", "")->value(), 1);
  // Never a lock (or an open file) of ours on the lock file.
  std::ifstream locks("/proc/locks");
  for (std::string line; std::getline(locks, line);) {
    EXPECT_EQ(line.find(absl::StrCat(" ", getpid(), " ")), std::string::npos) << line;
  }
  for (const auto& fd : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    EXPECT_NE(fs::read_symlink(fd.path(), ec).string(), lock_);
  }

  EXPECT_EQ(Wait(holder), 0);
  EXPECT_EQ(Wait(waiter), 0);
  // The waiter's own hold (flock running `true`) lasts microseconds: below
  // the sampling resolution, so it may or may not be counted; its wait is.
  ASSERT_TRUE(WaitFor([&] {
    LockStats s = monitor_->Snapshot();
    return s.holds >= 1 && !s.current && s.waiters_now.empty();
  }, absl::Seconds(3)));
  LockStats s = monitor_->Snapshot();
  const LockHold& first = s.recent.front();
  EXPECT_EQ(first.holder.comm, "iptables-restor") << "the kernel caps comm at 15 bytes";
  EXPECT_EQ(first.holder.name, "iptables-restore");
  EXPECT_EQ(first.holder.parent_name, "kube-proxy");
  EXPECT_NE(first.holder.cmdline.find("sleep 1.5"), std::string::npos) << first.holder.cmdline;
  EXPECT_GE(first.held, absl::Milliseconds(1400));
  EXPECT_LT(first.held, absl::Milliseconds(2500));
  ASSERT_EQ(first.waiters.size(), 1u);
  EXPECT_EQ(first.waiters[0].pid, waiter);
  EXPECT_EQ(first.max_waiters, 1u);
  EXPECT_EQ(s.long_holds, 1u);
  EXPECT_GE(s.longest_hold, absl::Milliseconds(1400));
  EXPECT_EQ(s.by_holder["iptables-restore"].holds, 1u);
  EXPECT_GE(s.opens, 2u);
  std::string text = registry_.Render();
  EXPECT_NE(text.find("ruleplane_xtables_lock_hold_seconds_count{holder=\"iptables-restore\"} 1"), std::string::npos)
      << text;
  EXPECT_NE(text.find("ruleplane_xtables_lock_wait_seconds_count 1"), std::string::npos) << text;
  EXPECT_EQ(registry_.GetGauge("ruleplane_xtables_lock_waiters", "")->value(), 0);
  EXPECT_GE(registry_.GetGauge("ruleplane_xtables_lock_longest_hold_seconds", "")->value(), 1.4);
}

TEST_F(XtablesLockMonitorTest, AbsentFileIsReportedThenPickedUpWhenCreated) {
  StartMonitor();
  ASSERT_TRUE(WaitFor([&] { return monitor_->Snapshot().file_state == "absent"; }, absl::Seconds(2)));
  EXPECT_EQ(registry_.GetGauge("ruleplane_xtables_lock_file", "", {{"state", "absent"}})->value(), 1);
  // iptables creates it on first use (O_CREAT), then locks it.
  pid_t p = Spawn({"/usr/bin/flock", lock_, "sleep", "0.3"});
  EXPECT_EQ(Wait(p), 0);
  ASSERT_TRUE(WaitFor([&] { return monitor_->Snapshot().file_state == "file"; }, absl::Seconds(2)));
  pid_t q = Spawn({"/usr/bin/flock", lock_, "sleep", "0.3"});
  EXPECT_EQ(Wait(q), 0);
  ASSERT_TRUE(WaitFor([&] { return monitor_->Snapshot().holds >= 1; }, absl::Seconds(2)));
  EXPECT_EQ(monitor_->Snapshot().recent.back().holder.comm, "flock");
}

TEST_F(XtablesLockMonitorTest, DirectoryFromAHostPathMountIsReportedNotFatal) {
  fs::create_directories(lock_);
  StartMonitor();
  ASSERT_TRUE(WaitFor([&] { return monitor_->Snapshot().file_state == "directory"; }, absl::Seconds(2)));
  EXPECT_NE(monitor_->Snapshot().file_detail.find("hostPath"), std::string::npos);
  // Fixed by the operator: becomes a file and is watched.
  fs::remove(lock_);
  std::ofstream(lock_).put('\0');
  ASSERT_TRUE(WaitFor([&] { return monitor_->Snapshot().file_state == "file"; }, absl::Seconds(2)));
}

TEST_F(XtablesLockMonitorTest, ReplacedFileIsFollowed) {
  std::ofstream(lock_).put('\0');
  StartMonitor();
  ASSERT_TRUE(WaitFor([&] { return monitor_->Snapshot().file_state == "file"; }, absl::Seconds(2)));
  std::ofstream(lock_ + ".new").put('\0');
  fs::rename(lock_ + ".new", lock_);
  absl::SleepFor(absl::Milliseconds(100));
  pid_t p = Spawn({"/usr/bin/flock", lock_, "sleep", "0.3"});
  EXPECT_EQ(Wait(p), 0);
  ASSERT_TRUE(WaitFor([&] { return monitor_->Snapshot().holds >= 1; }, absl::Seconds(2)))
      << "a hold on the new inode is seen";
}

}  // namespace
}  // namespace ruleplane::coexist
