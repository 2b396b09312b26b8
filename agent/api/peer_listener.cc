#include "agent/api/peer_listener.h"

#include <fcntl.h>
#include <grpcpp/server.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace ruleplane::api {
namespace {

absl::Status Fail(const std::string& path, std::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat("socket ", path, ": ", std::string(what), ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PeerListener>> PeerListener::Bind(const std::string& path, gid_t socket_gid) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket: path \"", path, "\" is empty or longer than ",
                                                   sizeof(addr.sun_path) - 1, " bytes"));
  }
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return absl::FailedPreconditionError(absl::StrCat("socket dir ", dir.string(), ": ", ec.message()));
    ::chmod(dir.c_str(), 0750);
    if (::chown(dir.c_str(), 0, socket_gid) != 0) {
      LOG(WARNING) << "chown " << dir << ": " << std::strerror(errno);
    }
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  addr.sun_family = AF_UNIX;

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return Fail(path, "socket()");
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat("socket ", path, " exists and is not a socket; refusing to remove it"));
    }
    // Stale or live? A live agent answers connect(); never steal its socket.
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe.valid() && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      return absl::FailedPreconditionError(absl::StrCat("socket ", path, " is in use by a running agent"));
    }
    ::unlink(path.c_str());
  }
  // Bind with a restrictive umask window, then set the final mode.
  mode_t old = ::umask(0177);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::umask(old);
  if (rc != 0) return Fail(path, "bind");
  if (::chown(path.c_str(), 0, socket_gid) != 0 && errno != EPERM) return Fail(path, "chown");
  if (::chmod(path.c_str(), 0660) != 0) return Fail(path, "chmod");
  if (::listen(fd.get(), 128) != 0) return Fail(path, "listen");
  auto l = std::unique_ptr<PeerListener>(new PeerListener(path, std::move(fd)));
  l->stop_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!l->stop_fd_.valid()) return Fail(path, "eventfd");
  return l;
}

PeerListener::~PeerListener() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    if (::write(stop_fd_.get(), &one, sizeof(one)) < 0) PLOG(ERROR) << "wake accept loop";
    thread_.join();
  }
}

void PeerListener::Serve(grpc::Server* server) {
  thread_ = std::thread([this, server] { AcceptLoop(server); });
}

void PeerListener::AcceptLoop(grpc::Server* server) {
  for (;;) {
    pollfd fds[2] = {{fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      PLOG(ERROR) << "accept loop poll";
      return;
    }
    if (fds[1].revents) return;
    int conn = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (conn < 0) {
      if (errno != EAGAIN && errno != EINTR) {
        PLOG_EVERY_N(WARNING, 100) << "accept on " << path_;
      }
      continue;
    }
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      PLOG(WARNING) << "SO_PEERCRED on " << path_;
      ::close(conn);
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      // The fd number identifies the connection until it closes; a reused
      // number is overwritten here before any RPC can arrive on it.
      peers_[absl::StrCat("fd:", conn)] = PeerCred{cred.pid, cred.uid, cred.gid};
    }
    grpc::AddInsecureChannelFromFd(server, conn);  // owned by gRPC now
  }
}

std::optional<PeerCred> PeerListener::Lookup(const std::string& peer) const {
  absl::MutexLock lock(&mu_);
  auto it = peers_.find(peer);
  if (it == peers_.end()) return std::nullopt;
  return it->second;
}

}  // namespace ruleplane::api
