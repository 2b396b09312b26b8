// PeerListener: the agent's unix socket, accepted by us so that every
// connection's peer credentials (SO_PEERCRED) are known, then handed to the
// gRPC server with AddInsecureChannelFromFd.
//
// Why not a plain "unix:" listening port: gRPC C++ 1.51 does not expose the
// peer's uid/gid to handlers. A connection handed over from an fd shows up as
// peer "fd:<n>" in ServerContext::peer(), which we map back to the
// credentials captured at accept time.
//
// Owns the listening fd and one accept thread. Thread-safe lookups.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/common/unique_fd.h"

namespace grpc {
class Server;
}

namespace ruleplane::api {

struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

class PeerListener {
 public:
  // Creates the socket's directory (0750) if missing, removes a stale
  // socket file, binds, sets mode 0660 and group `socket_gid`.
  // FailedPrecondition naming the path on any failure (e.g. another agent is
  // serving on it: that is detected and refused, not stolen).
  static absl::StatusOr<std::unique_ptr<PeerListener>> Bind(const std::string& path, gid_t socket_gid);
  ~PeerListener();

  // Starts accepting and handing connections to `server` (already started).
  void Serve(grpc::Server* server);
  // Credentials of the connection behind ServerContext::peer().
  std::optional<PeerCred> Lookup(const std::string& peer) const ABSL_LOCKS_EXCLUDED(mu_);
  const std::string& path() const { return path_; }

 private:
  PeerListener(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  void AcceptLoop(grpc::Server* server);

  std::string path_;
  UniqueFd fd_;
  UniqueFd stop_fd_;
  std::thread thread_;
  mutable absl::Mutex mu_;
  std::map<std::string, PeerCred> peers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ruleplane::api
