// AgentProcess: runs the real ruleplane-agent binary inside a test netns
// with its own socket and state dir, plus gRPC stubs to talk to it.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "ruleplane/v1/cni.grpc.pb.h"
#include "ruleplane/v1/diagnostics.grpc.pb.h"
#include "test/integration/netns_fixture.h"

namespace ruleplane::testing {

class AgentProcess {
 public:
  // `dir` holds the socket, state dir and log; `extra_args` are appended.
  AgentProcess(const TestNetns* ns, std::string dir, std::vector<std::string> extra_args = {});
  ~AgentProcess();

  // Starts the agent and waits until its health says SERVING (or it exits).
  absl::Status Start(absl::Duration timeout = absl::Seconds(10));
  // SIGTERM and wait; returns the exit status.
  int Stop();
  // SIGKILL and reap.
  void Kill();
  bool running() const { return pid_ > 0; }
  // The agent's pid (`ip netns exec` execs it in place).
  pid_t pid() const { return pid_; }

  std::string socket() const { return dir_ + "/ruleplane.sock"; }
  std::string state_dir() const { return dir_ + "/state"; }
  std::string Log() const;

  v1::Cni::Stub* cni() { return cni_.get(); }
  v1::Diagnostics::Stub* diag() { return diag_.get(); }

 private:
  const TestNetns* ns_;
  std::string dir_;
  std::vector<std::string> extra_args_;
  pid_t pid_ = -1;
  std::unique_ptr<v1::Cni::Stub> cni_;
  std::unique_ptr<v1::Diagnostics::Stub> diag_;
};

// A CNI ADD request for a pod with one IPv4 address and optional hostPort.
v1::CniRequest AddRequest(const std::string& cid, const std::string& ip, int host_port = 0,
                          const std::string& netns = "/var/run/netns/fake");
// Calls with a deadline.
grpc::Status CallAdd(v1::Cni::Stub* stub, const v1::CniRequest& req,
                     absl::Duration timeout = absl::Seconds(5));
grpc::Status CallDel(v1::Cni::Stub* stub, const std::string& cid,
                     absl::Duration timeout = absl::Seconds(5));

}  // namespace ruleplane::testing
