#include "test/integration/netns_fixture.h"

#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"

extern char** environ;

namespace ruleplane::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Effective capabilities of this process (CapEff in /proc/self/status).
uint64_t EffectiveCaps() {
  std::string status = ReadFile("/proc/self/status");
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (absl::ConsumePrefix(&line, "CapEff:")) {
      std::string hex(absl::StripAsciiWhitespace(line));
      return std::strtoull(hex.c_str(), nullptr, 16);
    }
  }
  return 0;
}

constexpr int kCapNetAdmin = 12;
constexpr int kCapSysAdmin = 21;

}  // namespace

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

CommandResult RunShell(const std::string& shell_cmd) {
  CommandResult result;
  // Output goes to temp files rather than pipes: no deadlock on big output.
  char out_path[] = "/tmp/rp-test-out-XXXXXX";
  char err_path[] = "/tmp/rp-test-err-XXXXXX";
  int out_fd = ::mkstemp(out_path);
  int err_fd = ::mkstemp(err_path);
  if (out_fd < 0 || err_fd < 0) {
    if (out_fd >= 0) {
      ::close(out_fd);
      ::unlink(out_path);
    }
    if (err_fd >= 0) {
      ::close(err_fd);
      ::unlink(err_path);
    }
    result.error = "mkstemp failed";
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_fd, STDERR_FILENO);
  std::string cmd = shell_cmd;
  char sh[] = "/bin/sh";
  char dash_c[] = "-c";
  char* argv[] = {sh, dash_c, cmd.data(), nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, "/bin/sh", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_fd);
  ::close(err_fd);
  if (rc == 0) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  }
  result.output = ReadFile(out_path);
  result.error = ReadFile(err_path);
  ::unlink(out_path);
  ::unlink(err_path);
  return result;
}

std::optional<std::string> PrivilegedSkipReason() {
  const uint64_t caps = EffectiveCaps();
  if (!(caps & (uint64_t{1} << kCapNetAdmin))) {
    return std::string("privileged test: needs CAP_NET_ADMIN (run as root)");
  }
  if (!(caps & (uint64_t{1} << kCapSysAdmin))) {
    return std::string("privileged test: needs CAP_SYS_ADMIN for `ip netns add` (run as root)");
  }
  if (RunShell("command -v ip && command -v nft").exit_code != 0) {
    return std::string("privileged test: needs the `ip` (iproute2) and `nft` (nftables) CLIs");
  }
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<TestNetns>> TestNetns::Create() {
  std::random_device random;
  std::uniform_int_distribution<uint32_t> dist;
  // Cleanup first: the owner exists (and will delete by name) before the
  // namespace does.
  std::unique_ptr<TestNetns> ns(
      new TestNetns(absl::StrCat("rp-", absl::Hex(dist(random), absl::kZeroPad8))));
  ns->created_ = true;
  CommandResult add = RunShell(absl::StrCat("ip netns add ", ns->name_));
  if (add.exit_code != 0) {
    ns->created_ = false;
    return absl::InternalError(absl::StrCat("ip netns add ", ns->name_, ": ", add.error));
  }
  CommandResult lo = ns->RunIn("ip link set lo up");
  if (lo.exit_code != 0) {
    return absl::InternalError(absl::StrCat("ip link set lo up in ", ns->name_, ": ", lo.error));
  }
  return ns;
}

TestNetns::~TestNetns() {
  if (!created_) return;
  CommandResult del = RunShell(absl::StrCat("ip netns del ", name_));
  if (del.exit_code != 0) {
    std::fprintf(stderr, "warning: ip netns del %s: %s\n", name_.c_str(), del.error.c_str());
  }
}

CommandResult TestNetns::RunIn(const std::string& shell_cmd) const {
  return RunShell(absl::StrCat("ip netns exec ", name_, " sh -c ", ShellQuote(shell_cmd)));
}

void RunInNetns(const TestNetns& ns, const std::function<void()>& fn) {
  std::thread t([&] {
    const int fd = ::open(ns.path().c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << ns.path();
    ASSERT_EQ(::setns(fd, CLONE_NEWNET), 0) << "setns " << ns.path();
    ::close(fd);
    fn();
  });
  t.join();
}

}  // namespace ruleplane::testing
