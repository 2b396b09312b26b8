#include "agent/api/poller_keeper.h"

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <chrono>

namespace ruleplane::api {
namespace {

// grpc.health.v1.Health/Check with an empty HealthCheckRequest (service "":
// the server as a whole), sent as raw bytes so the agent needs no generated
// health stubs.
constexpr char kHealthCheck[] = "/grpc.health.v1.Health/Check";

}  // namespace

PollerKeeper::PollerKeeper(std::shared_ptr<grpc::Channel> channel, absl::Duration period)
    : channel_(std::move(channel)), stub_(std::make_unique<grpc::GenericStub>(channel_)), period_(period) {
  thread_ = std::thread([this] { Loop(); });
}

PollerKeeper::~PollerKeeper() { Stop(); }

void PollerKeeper::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

int64_t PollerKeeper::completed() const {
  absl::MutexLock lock(&mu_);
  return completed_;
}

void PollerKeeper::Loop() {
  absl::MutexLock lock(&mu_);
  for (;;) {
    // Sleeps a period, or until Stop().
    mu_.AwaitWithTimeout(absl::Condition(&stop_), period_);
    if (stop_) break;
    // One ping at a time: a slow answer (a busy agent) needs no more of them,
    // its pollers are awake anyway.
    if (in_flight_) continue;
    in_flight_ = true;
    struct Ping {
      grpc::ClientContext ctx;
      grpc::ByteBuffer req;
      grpc::ByteBuffer resp;
    };
    auto* ping = new Ping;
    grpc::Slice empty("");
    ping->req = grpc::ByteBuffer(&empty, 1);
    ping->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    mu_.Unlock();
    stub_->UnaryCall(&ping->ctx, kHealthCheck, grpc::StubOptions(), &ping->req, &ping->resp,
                     [this, ping](const grpc::Status&) {
                       delete ping;
                       absl::MutexLock done(&mu_);
                       in_flight_ = false;
                       ++completed_;
                     });
    mu_.Lock();
  }
  // The callback touches this object: wait for it before the thread ends.
  mu_.Await(absl::Condition(
      +[](bool* in_flight) { return !*in_flight; }, &in_flight_));
}

}  // namespace ruleplane::api
