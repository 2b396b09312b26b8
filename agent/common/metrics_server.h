// Serves a Registry as Prometheus text on GET /metrics (libmicrohttpd, one
// internal polling thread: the agent's metrics/diagnostics reader thread).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/common/metrics.h"

struct MHD_Daemon;

namespace ruleplane::metrics {

class MetricsServer {
 public:
  // `address` is "host:port" (IPv4 or [IPv6]); port 0 picks a free port.
  // InvalidArgument for a malformed address, Unavailable when it cannot bind.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address,
                                                              const Registry* registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  uint16_t port() const { return port_; }

 private:
  MetricsServer() = default;
  MHD_Daemon* daemon_ = nullptr;
  const Registry* registry_ = nullptr;
  uint16_t port_ = 0;
  friend struct MetricsServerAccess;
};

}  // namespace ruleplane::metrics
