// Can this node reach its API server, through a DIRECT endpoint?
//
// A node agent that reaches the API server through the `kubernetes` Service
// VIP depends on kube-proxy's rules, and kube-proxy may be waiting for the
// node's network: bring-up deadlocks. So the endpoint is, in order:
//   1. config api_server.endpoint ("https://10.0.0.1:6443", "host:port");
//   2. the `server:` of the kubeconfig at api_server.kubeconfig (its
//      current-context's cluster);
//   3. the in-cluster env KUBERNETES_SERVICE_HOST/PORT, but only when it was
//      overridden to a direct address: kubelet injects the Service VIP there
//      and in KUBERNETES_PORT alike, so equal hosts mean "VIP" and are refused.
// The probe is a plain TCP connect with a timeout (no TLS, no request): the
// agent needs nothing from the API server to set up pods, so this is a
// report of the node's state, not a gate.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ruleplane::bringup {

struct ApiServerEndpoint {
  std::string host;
  uint16_t port = 443;
  std::string source;  // "config api_server.endpoint", "kubeconfig /path", "in-cluster env"
  std::string ToString() const;
};

// "https://h:6443", "h:6443", "[fd00::1]:6443", "h" (port 443).
absl::StatusOr<ApiServerEndpoint> ParseEndpoint(const std::string& text);

// The `server:` of the current context's cluster in kubeconfig YAML text
// (a small line-based reader for kubeconfig's fixed shape); the first server
// when the context cannot be followed; nullopt when there is none.
std::optional<std::string> KubeconfigServer(const std::string& yaml);

struct EndpointChoice {
  std::optional<ApiServerEndpoint> endpoint;
  // Why there is none, for the "skipped" phase.
  std::string why_none;
};

using GetEnv = std::function<std::optional<std::string>(const char*)>;
EndpointChoice ChooseApiServerEndpoint(const std::string& configured, const std::string& kubeconfig_path,
                                       const GetEnv& getenv);

// One TCP connect to `ep` within `timeout` (name resolution included);
// returns how long the connect took.
absl::StatusOr<absl::Duration> ProbeTcp(const ApiServerEndpoint& ep, absl::Duration timeout);

}  // namespace ruleplane::bringup

#include <memory>
#include <thread>

#include "absl/synchronization/notification.h"
#include "agent/bringup/recorder.h"

namespace ruleplane::bringup {

// Probes the chosen endpoint on its own short-lived thread until it answers
// or `wait` has passed, recording "waiting for API server" and "API server
// reachable" (or why it was skipped) on `recorder`, then saving the history.
// Never delays readiness: the agent needs no API server to set up pods.
class ApiServerProber {
 public:
  static std::unique_ptr<ApiServerProber> Start(EndpointChoice choice, absl::Duration wait,
                                                BringupRecorder* recorder);
  // Stops waiting (the phase is closed as failed) and joins.
  ~ApiServerProber();
  ApiServerProber(const ApiServerProber&) = delete;
  ApiServerProber& operator=(const ApiServerProber&) = delete;

 private:
  ApiServerProber(EndpointChoice choice, absl::Duration wait, BringupRecorder* recorder)
      : choice_(std::move(choice)), wait_(wait), recorder_(recorder) {}
  void Run();

  const EndpointChoice choice_;
  const absl::Duration wait_;
  BringupRecorder* const recorder_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace ruleplane::bringup
