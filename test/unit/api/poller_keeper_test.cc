// PollerKeeper against a real in-process gRPC server (no sockets, no
// privileges): it pings, one at a time, and stops when asked. What it is for
// (no 100 ms stall after an idle second) is measured by
// tools/bench/idle_gap.py, not asserted here: timing belongs in benchmarks.
#include "agent/api/poller_keeper.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <memory>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace ruleplane::api {
namespace {

class PollerKeeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    // A callback service, as the agent has (without one the server has no
    // polled completion queue and refuses to start).
    builder.RegisterCallbackGenericService(&generic_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  // Waits (bounded) until `keeper` completed at least `n` pings.
  static bool WaitForPings(const PollerKeeper& keeper, int64_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (keeper.completed() < n) {
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return true;
  }

  grpc::CallbackGenericService generic_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(PollerKeeperTest, PingsTheServerUntilStopped) {
  PollerKeeper keeper(server_->InProcessChannel(grpc::ChannelArguments()), absl::Milliseconds(20));
  ASSERT_TRUE(WaitForPings(keeper, 3)) << "completed " << keeper.completed();
  keeper.Stop();
  const int64_t after_stop = keeper.completed();
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(keeper.completed(), after_stop) << "a ping after Stop()";
  keeper.Stop();  // idempotent
}

// Stop() (here: the destructor) waits for the ping in flight, whose callback
// touches the keeper's state: keepers destroyed at any point of a ping leave
// nothing running behind them (ASan/UBSan in CI). The server must outlive
// its in-process channel and keeper, as in ApiServer: gRPC 1.51 crashes on an
// in-process call after Server::Shutdown.
TEST_F(PollerKeeperTest, DestroyedWhilePingingLeavesNothingBehind) {
  int64_t pinged = 0;
  for (int i = 0; i < 20; ++i) {
    auto keeper = std::make_unique<PollerKeeper>(server_->InProcessChannel(grpc::ChannelArguments()),
                                                 absl::Microseconds(100 * (i % 5)) + absl::Microseconds(50));
    absl::SleepFor(absl::Microseconds(300 * i));
    keeper.reset();
    auto probe = std::make_unique<PollerKeeper>(server_->InProcessChannel(grpc::ChannelArguments()),
                                                absl::Milliseconds(1));
    ASSERT_TRUE(WaitForPings(*probe, 1)) << "the server stopped answering after keeper " << i;
    pinged += probe->completed();
  }
  EXPECT_GE(pinged, 20);
}

}  // namespace
}  // namespace ruleplane::api
