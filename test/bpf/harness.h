// BPF test-tier harness: privilege gate, BPF_PROG_TEST_RUN, and a private
// bpffs mount for pinning tests (katran's BpfTester, cilium's privileged
// test gate).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/common/unique_fd.h"
#include "test/bpf/packet.h"

namespace ruleplane::testing {

// Empty if the process may load and test-run tc programs (CAP_BPF or
// CAP_SYS_ADMIN, plus CAP_NET_ADMIN or CAP_SYS_ADMIN); otherwise what is
// missing, for GTEST_SKIP().
std::string MissingBpfPrivileges();
// Empty if the process may mount and unshare (CAP_SYS_ADMIN).
std::string MissingSysAdmin();

struct TcRun {
  int verdict = 0;           // TC_ACT_*
  Bytes out;                 // the packet after the program
  uint32_t duration_ns = 0;  // the program's run time, as the kernel measured it
};

// Runs a SCHED_CLS program once on `frame` (BPF_PROG_TEST_RUN).
absl::StatusOr<TcRun> RunTc(int prog_fd, const Bytes& frame);

// An fd for the map called `name` used by program `prog_fd` (test-only
// access to maps the production API does not expose for writing).
absl::StatusOr<UniqueFd> MapFdByName(int prog_fd, absl::string_view name);

// A fresh bpffs instance mounted on a new temp dir; unmounted and removed on
// destruction. Each bpffs mount is a separate instance, so tests never see
// the host's /sys/fs/bpf.
class ScopedBpffs {
 public:
  static absl::StatusOr<std::unique_ptr<ScopedBpffs>> Mount();
  ~ScopedBpffs();
  const std::string& path() const { return path_; }

 private:
  explicit ScopedBpffs(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace ruleplane::testing
