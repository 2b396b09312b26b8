#include "test/bpf/harness.h"

#include <bpf/bpf.h>
#include <linux/capability.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "agent/kernel/bpf/errors.h"

#ifndef CAP_BPF
#define CAP_BPF 39  // linux >= 5.8 uapi; older headers lack it
#endif

namespace ruleplane::testing {
namespace {

using kernel::bpf::BpfError;

uint64_t EffectiveCaps() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view v(line);
    if (absl::ConsumePrefix(&v, "CapEff:")) {
      uint64_t caps = 0;
      if (absl::SimpleHexAtoi(absl::StripAsciiWhitespace(v), &caps)) return caps;
    }
  }
  return 0;
}

bool Has(uint64_t caps, int cap) { return (caps >> cap) & 1; }

}  // namespace

std::string MissingBpfPrivileges() {
  const uint64_t caps = EffectiveCaps();
  std::vector<std::string> missing;
  if (!Has(caps, CAP_BPF) && !Has(caps, CAP_SYS_ADMIN)) missing.push_back("CAP_BPF");
  if (!Has(caps, CAP_NET_ADMIN) && !Has(caps, CAP_SYS_ADMIN)) missing.push_back("CAP_NET_ADMIN");
  if (missing.empty()) return "";
  return absl::StrCat("bpf tier needs ", absl::StrJoin(missing, " and "),
                      " to load and test-run tc programs (run as root: ctest -L bpf)");
}

std::string MissingSysAdmin() {
  if (Has(EffectiveCaps(), CAP_SYS_ADMIN)) return "";
  return "needs CAP_SYS_ADMIN to mount bpffs / unshare a netns (run as root)";
}

absl::StatusOr<TcRun> RunTc(int prog_fd, const Bytes& frame) {
  TcRun run;
  run.out.resize(frame.size() + 256);  // room for programs that grow packets
  bpf_test_run_opts opts{};
  opts.sz = sizeof(opts);
  opts.data_in = frame.data();
  opts.data_size_in = static_cast<uint32_t>(frame.size());
  opts.data_out = run.out.data();
  opts.data_size_out = static_cast<uint32_t>(run.out.size());
  opts.repeat = 1;
  if (const int err = bpf_prog_test_run_opts(prog_fd, &opts); err != 0) {
    return BpfError(err, absl::StrCat("BPF_PROG_TEST_RUN prog fd ", prog_fd));
  }
  run.verdict = static_cast<int>(opts.retval);
  run.duration_ns = opts.duration;
  run.out.resize(opts.data_size_out);
  return run;
}

absl::StatusOr<UniqueFd> MapFdByName(int prog_fd, absl::string_view name) {
  std::vector<uint32_t> ids(64);
  bpf_prog_info info{};
  info.nr_map_ids = static_cast<uint32_t>(ids.size());
  info.map_ids = reinterpret_cast<uint64_t>(ids.data());
  uint32_t len = sizeof(info);
  if (const int err = bpf_obj_get_info_by_fd(prog_fd, &info, &len); err != 0) {
    return BpfError(err, "query program info");
  }
  for (uint32_t i = 0; i < std::min<uint32_t>(info.nr_map_ids, ids.size()); ++i) {
    UniqueFd fd(bpf_map_get_fd_by_id(ids[i]));
    if (!fd.valid()) continue;
    bpf_map_info minfo{};
    uint32_t mlen = sizeof(minfo);
    if (bpf_obj_get_info_by_fd(fd.get(), &minfo, &mlen) == 0 && name == minfo.name) return fd;
  }
  return absl::NotFoundError(absl::StrCat("program fd ", prog_fd, " uses no map named ", name));
}

absl::StatusOr<std::unique_ptr<ScopedBpffs>> ScopedBpffs::Mount() {
  std::string tmpl = "/tmp/ruleplane-bpffs-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return BpfError(errno, "mkdtemp for bpffs");
  // Owns the dir from here on, so a failed mount still removes it.
  auto scoped = std::unique_ptr<ScopedBpffs>(new ScopedBpffs(tmpl));
  if (::mount("bpf", tmpl.c_str(), "bpf", 0, "mode=0700") != 0) {
    return BpfError(errno, absl::StrCat("mount bpffs on ", tmpl));
  }
  return scoped;
}

ScopedBpffs::~ScopedBpffs() {
  // MNT_DETACH: maps still referenced by live fds keep the superblock alive.
  ::umount2(path_.c_str(), MNT_DETACH);
  ::rmdir(path_.c_str());
}

}  // namespace ruleplane::testing
