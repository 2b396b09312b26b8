// TestNetns: a throwaway network namespace for privileged tests.
//
// Owns one named netns (`ip netns add rp-<random>`), deleted in the
// destructor. Its cleanup is registered before the namespace is created, so
// a test that fails half-way never leaks one. Tests use it from one thread.
// The `ip`/`nft` CLIs are used here only to set up and to observe; the code
// under test never execs them (DESIGN.md invariants).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace ruleplane::testing {

struct CommandResult {
  int exit_code = -1;  // -1 when the command could not be run or was killed
  std::string output;  // stdout
  std::string error;   // stderr
};

// Runs `shell_cmd` with /bin/sh -c in the current netns.
CommandResult RunShell(const std::string& shell_cmd);

// Why the privileged tier cannot run here ("needs CAP_NET_ADMIN ..."), or
// nullopt when it can. Tests GTEST_SKIP() with this text.
std::optional<std::string> PrivilegedSkipReason();

class TestNetns {
 public:
  // Creates a uniquely named namespace with loopback up.
  static absl::StatusOr<std::unique_ptr<TestNetns>> Create();

  TestNetns(const TestNetns&) = delete;
  TestNetns& operator=(const TestNetns&) = delete;
  ~TestNetns();

  const std::string& name() const { return name_; }
  // /run/netns/<name>: what NetlinkNftPort::Options::netns_path wants.
  std::string path() const { return "/run/netns/" + name_; }

  // `ip netns exec <name> sh -c '<shell_cmd>'`.
  CommandResult RunIn(const std::string& shell_cmd) const;

 private:
  explicit TestNetns(std::string name) : name_(std::move(name)) {}

  std::string name_;
  bool created_ = false;
};

// Runs `fn` on a thread of our own that joined `ns`, and waits for it
// (STYLE.md section 6: never setns() a thread we do not own exclusively).
// A namespace that cannot be joined fails the test (gtest) and skips `fn`.
void RunInNetns(const TestNetns& ns, const std::function<void()>& fn);

// Quotes `s` for /bin/sh.
std::string ShellQuote(const std::string& s);

}  // namespace ruleplane::testing
