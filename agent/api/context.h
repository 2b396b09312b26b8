// What the gRPC services share: the engine, the reader, readiness and the
// authorization policy. Owned by ApiServer; services hold a pointer.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/api/commit_hub.h"
#include "agent/api/peer_listener.h"
#include "agent/api/reader_thread.h"
#include "agent/backend/snat_stats.h"
#include "agent/bringup/recorder.h"
#include "agent/coexist/xtables_lock_monitor.h"
#include "agent/txn/engine.h"
#include "agent/txn/nft_port.h"

namespace grpc {
class CallbackServerContext;
}

namespace ruleplane::api {

struct ApiOptions {
  std::string socket_path;
  gid_t socket_gid = 0;
  // Callers allowed to mutate (Cni Add/Del/Gc): uid in mutation_uids or
  // primary gid in mutation_gids. Anyone who can open the socket (mode 0660,
  // group socket_gid) may call read-only methods.
  std::vector<uid_t> mutation_uids = {0};
  std::vector<gid_t> mutation_gids;
  std::string table;
  bool table_owner = false;
  std::string version;
  int max_message_bytes = 4 << 20;
  // Period of the PollerKeeper's in-process pings (poller_keeper.h); zero
  // turns it off. Below gRPC's 1 s poll deadline or it does nothing.
  absl::Duration poller_keepalive = absl::Milliseconds(400);
  // Latest SNAT statistics snapshot (GetSnatStats); unset = SNAT monitor
  // not running.
  std::function<std::optional<backend::SnatStats>()> snat_stats;
  // The SNAT settings in use, one line (GetSnatStats.settings).
  std::function<std::string()> snat_settings;
  // Operations diagnostics; unset = "not available" answers.
  // xtables lock monitor snapshot (nullopt: monitor off).
  std::function<std::optional<coexist::LockStats>()> lock_stats;
  // Bring-up timeline; the Cni service records the first ADD it served.
  bringup::BringupRecorder* bringup = nullptr;
  // WatchTransactions streams (fed by EngineOptions::on_commit).
  CommitHub* commits = nullptr;
};

class ServiceContext {
 public:
  ServiceContext(ApiOptions options, txn::Engine* engine, txn::NftPort* read_port, PeerListener* listener)
      : options_(std::move(options)), engine_(engine), read_port_(read_port), listener_(listener) {}

  // PermissionDenied naming the uid when the caller may not call `method`.
  absl::Status Authorize(grpc::CallbackServerContext* ctx, bool mutating, const char* method) const;

  void SetReady(bool ready, std::string reason) ABSL_LOCKS_EXCLUDED(mu_);
  bool ready() const { return ready_.load(); }
  std::string not_ready_reason() const ABSL_LOCKS_EXCLUDED(mu_);

  const ApiOptions& options() const { return options_; }
  txn::Engine* engine() const { return engine_; }
  txn::NftPort* read_port() const { return read_port_; }
  ReaderThread* reader() { return &reader_; }
  absl::Time started() const { return started_; }

 private:
  const ApiOptions options_;
  txn::Engine* engine_;
  txn::NftPort* read_port_;
  PeerListener* listener_;
  ReaderThread reader_;
  std::atomic<bool> ready_{false};
  mutable absl::Mutex mu_;
  std::string reason_ ABSL_GUARDED_BY(mu_) = "starting: converging the table";
  const absl::Time started_ = absl::Now();
};

}  // namespace ruleplane::api
