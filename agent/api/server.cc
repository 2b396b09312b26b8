#include "agent/api/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "agent/api/cni_service.h"
#include "agent/api/diagnostics_service.h"
#include "agent/api/poller_keeper.h"
#include "agent/common/status_macros.h"
#include "glog/logging.h"

namespace ruleplane::api {

inline constexpr char kHealthService[] = "ruleplane";

absl::StatusOr<std::unique_ptr<ApiServer>> ApiServer::Start(ApiOptions options, txn::Engine* engine,
                                                            std::unique_ptr<txn::NftPort> read_port) {
  auto s = std::unique_ptr<ApiServer>(new ApiServer());
  s->read_port_ = std::move(read_port);
  ASSIGN_OR_RETURN(s->listener_, PeerListener::Bind(options.socket_path, options.socket_gid));
  const int max_message = options.max_message_bytes;
  const absl::Duration keepalive = options.poller_keepalive;
  s->ctx_ = std::make_unique<ServiceContext>(std::move(options), engine, s->read_port_.get(), s->listener_.get());
  s->cni_ = std::make_unique<CniService>(s->ctx_.get());
  s->diagnostics_ = std::make_unique<DiagnosticsService>(s->ctx_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // No listening port: connections arrive through PeerListener (fd hand-off)
  // so each one's SO_PEERCRED is known.
  builder.SetMaxReceiveMessageSize(max_message);
  builder.RegisterService(s->cni_.get());
  builder.RegisterService(s->diagnostics_.get());
  s->server_ = builder.BuildAndStart();
  if (!s->server_) return absl::InternalError("gRPC server failed to start");
  s->server_->GetHealthCheckService()->SetServingStatus(kHealthService, false);
  s->server_->GetHealthCheckService()->SetServingStatus("", false);
  if (keepalive > absl::ZeroDuration()) {
    s->keeper_ = std::make_unique<PollerKeeper>(s->server_->InProcessChannel(grpc::ChannelArguments()), keepalive);
  }
  s->listener_->Serve(s->server_.get());
  LOG(INFO) << "gRPC serving on unix:" << s->listener_->path() << " (not ready yet)";
  return s;
}

ApiServer::~ApiServer() { Shutdown(); }

void ApiServer::SetReady(bool ready, std::string reason) {
  ctx_->SetReady(ready, std::move(reason));
  server_->GetHealthCheckService()->SetServingStatus(kHealthService, ready);
  server_->GetHealthCheckService()->SetServingStatus("", ready);
}

void ApiServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  listener_.reset();  // stop accepting new connections first
  if (keeper_) keeper_->Stop();  // its ping must not outlive the server
  // Open WatchTransactions streams would otherwise hold Shutdown() for its
  // whole grace period.
  if (ctx_ != nullptr && ctx_->options().commits != nullptr) ctx_->options().commits->Shutdown();
  // Start() may have failed before the server existed (e.g. the socket
  // path could not be bound); the destructor still gets here.
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace ruleplane::api
