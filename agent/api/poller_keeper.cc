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
    : stub_(std::make_unique<grpc::GenericStub>(std::move(channel))), period_(period) {
  thread_ = std::thread([this] { Loop(); });
}

PollerKeeper::~PollerKeeper() { Stop(); }

void PollerKeeper::Stop() {
  {
    absl::MutexLock lock(&state_->mu);
    state_->stop = true;
  }
  if (thread_.joinable()) thread_.join();
}

int64_t PollerKeeper::completed() const {
  absl::MutexLock lock(&state_->mu);
  return state_->completed;
}

void PollerKeeper::Loop() {
  State& st = *state_;
  absl::MutexLock lock(&st.mu);
  for (;;) {
    // Sleeps a period, or until Stop().
    st.mu.AwaitWithTimeout(absl::Condition(&st.stop), period_);
    if (st.stop) break;
    // One ping at a time: a slow answer (a busy agent) needs no more of them,
    // its pollers are awake anyway.
    if (st.in_flight) continue;
    st.in_flight = true;
    struct Ping {
      grpc::ClientContext ctx;
      grpc::ByteBuffer req;
      grpc::ByteBuffer resp;
    };
    auto* ping = new Ping;
    grpc::Slice empty("");
    ping->req = grpc::ByteBuffer(&empty, 1);
    // Bounds the wait in Stop() should the server never answer.
    ping->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    st.mu.Unlock();
    stub_->UnaryCall(&ping->ctx, kHealthCheck, grpc::StubOptions(), &ping->req, &ping->resp,
                     [state = state_, ping](const grpc::Status&) {
                       delete ping;
                       absl::MutexLock done(&state->mu);
                       state->in_flight = false;
                       ++state->completed;
                     });
    st.mu.Lock();
  }
  // The ping's ClientContext must not outlive the stub (and its channel):
  // wait for its callback before the thread (and then the keeper) ends.
  st.mu.Await(absl::Condition(+[](bool* in_flight) { return !*in_flight; }, &st.in_flight));
}

}  // namespace ruleplane::api
