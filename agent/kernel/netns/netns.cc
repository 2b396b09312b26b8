#include "agent/kernel/netns/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>

#include <cerrno>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ruleplane::kernel::netns {
namespace {

UniqueFd CreateSocket(int domain, int type, int protocol) {
  return UniqueFd(::socket(domain, type | SOCK_CLOEXEC, protocol));
}

}  // namespace

absl::StatusOr<UniqueFd> OpenSocketInNetns(const std::string& netns_path, int domain, int type,
                                           int protocol) {
  if (netns_path.empty()) {
    UniqueFd fd = CreateSocket(domain, type, protocol);
    if (!fd.valid()) {
      return absl::ErrnoToStatus(errno, "create socket in current netns");
    }
    return fd;
  }

  // Opened on the caller's thread so a bad path fails without spawning.
  UniqueFd ns_fd(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns_fd.valid()) {
    return absl::ErrnoToStatus(errno, absl::StrCat("open netns ", netns_path));
  }

  absl::Status status;
  UniqueFd result;
  // The helper thread is ours alone: it switches netns once and exits, so
  // no other code ever runs in the wrong namespace and nothing needs to be
  // switched back.
  std::thread helper([&] {
    if (::setns(ns_fd.get(), CLONE_NEWNET) != 0) {
      status = absl::ErrnoToStatus(errno, absl::StrCat("setns to netns ", netns_path));
      return;
    }
    UniqueFd fd = CreateSocket(domain, type, protocol);
    if (!fd.valid()) {
      status = absl::ErrnoToStatus(errno, absl::StrCat("create socket in netns ", netns_path));
      return;
    }
    result = std::move(fd);
  });
  helper.join();
  if (!status.ok()) return status;
  return result;
}

}  // namespace ruleplane::kernel::netns
