// ApiServer: the agent's gRPC server on its unix socket: Cni, Diagnostics,
// grpc.health.v1 (service "ruleplane", NOT_SERVING until SetReady(true)) and
// server reflection (so grpcurl works without .proto files).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "agent/api/context.h"

namespace grpc {
class Server;
}

namespace ruleplane::api {

class CniService;
class DiagnosticsService;
class PollerKeeper;

class ApiServer {
 public:
  // Binds the socket and starts serving (not ready yet). `read_port` is a
  // separate, read-only NftPort for kernel reads (CHECK, DumpRuleset, Diff).
  static absl::StatusOr<std::unique_ptr<ApiServer>> Start(ApiOptions options, txn::Engine* engine,
                                                          std::unique_ptr<txn::NftPort> read_port);
  ~ApiServer();

  void SetReady(bool ready, std::string reason = "");
  // Stops accepting, cancels in-flight calls after a short grace period.
  void Shutdown();
  ServiceContext* context() { return ctx_.get(); }

 private:
  ApiServer() = default;
  std::unique_ptr<txn::NftPort> read_port_;
  std::unique_ptr<PeerListener> listener_;
  std::unique_ptr<ServiceContext> ctx_;
  std::unique_ptr<CniService> cni_;
  std::unique_ptr<DiagnosticsService> diagnostics_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<PollerKeeper> keeper_;  // null when ApiOptions::poller_keepalive is zero
  bool shut_down_ = false;
};

}  // namespace ruleplane::api
