// PollerKeeper: keeps gRPC's callback-API pollers awake, so a request that
// arrives after an idle second is served at once instead of up to 100 ms late.
//
// Why: with gRPC 1.51 on Linux (epoll1, no background poller), callback-API
// handlers and completions run only on the process-wide "callback alternative
// completion queue", drained by a few "nexting" threads (2 on a 2-CPU node).
// Each waits for the next event with a 1 s deadline and, when that passes
// without an event, sleeps 100 ms without polling (grpc
// src/cpp/common/completion_queue_cc.cc). Threads that went idle together
// time out together, so a request arriving 1.0-1.1 s after the previous one
// waits for the end of their sleep. Measured on this agent (ruleplanectl
// health after a gap of 1.00-1.06 s): 42-103 ms instead of 15 ms; in the
// CNI chain benchmark it showed up as rare 52-76 ms ADDs.
//
// How: a callback-API health Check to this server over its in-process
// channel every `period` (< 1 s). Each ping completes on that queue, so the
// thread that takes it starts a fresh 1 s wait: at any moment one thread has
// been woken within the last period and is polling. Cost: one in-process
// unary RPC per period, no socket.
//
// Owns one timer thread. Stop() (or the destructor) waits for the ping in
// flight; call it before the server shuts down.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/generic/generic_stub.h>

#include <cstdint>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace ruleplane::api {

class PollerKeeper {
 public:
  // Starts pinging `channel` (the server's InProcessChannel) every `period`.
  PollerKeeper(std::shared_ptr<grpc::Channel> channel, absl::Duration period);
  ~PollerKeeper();
  PollerKeeper(const PollerKeeper&) = delete;
  PollerKeeper& operator=(const PollerKeeper&) = delete;

  // Stops the timer and waits for the ping in flight. Idempotent.
  void Stop();
  // Pings completed so far, answered or not (tests).
  int64_t completed() const;

 private:
  // Shared with the ping callbacks, which may still be unlocking it while
  // Stop() returns: it lives as long as the last of them.
  struct State {
    absl::Mutex mu;
    bool stop ABSL_GUARDED_BY(mu) = false;
    bool in_flight ABSL_GUARDED_BY(mu) = false;
    int64_t completed ABSL_GUARDED_BY(mu) = 0;
  };

  void Loop();

  std::unique_ptr<grpc::GenericStub> stub_;  // holds the channel
  const absl::Duration period_;
  const std::shared_ptr<State> state_ = std::make_shared<State>();
  std::thread thread_;
};

}  // namespace ruleplane::api
