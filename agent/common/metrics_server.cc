#include "agent/common/metrics_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ruleplane::metrics {

struct MetricsServerAccess {
  static MHD_Result Handle(void* cls, MHD_Connection* conn, const char* url, const char* method,
                           const char*, const char*, size_t*, void**) {
    auto* self = static_cast<MetricsServer*>(cls);
    std::string body;
    unsigned code = MHD_HTTP_OK;
    if (std::strcmp(method, "GET") != 0) {
      code = MHD_HTTP_METHOD_NOT_ALLOWED;
      body = "only GET\n";
    } else if (std::strcmp(url, "/metrics") == 0) {
      body = self->registry_->Render();
    } else if (std::strcmp(url, "/healthz") == 0) {
      body = "ok\n";
    } else {
      code = MHD_HTTP_NOT_FOUND;
      body = "see /metrics\n";
    }
    MHD_Response* resp = MHD_create_response_from_buffer(body.size(), body.data(),
                                                         MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    MHD_Result r = MHD_queue_response(conn, code, resp);
    MHD_destroy_response(resp);
    return r;
  }
};

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address,
                                                                     const Registry* registry) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", address, "\" is not host:port"));
  }
  std::string host = address.substr(0, colon);
  uint32_t port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address \"", address, "\": bad port"));
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  sockaddr_storage ss{};
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
  if (inet_pton(AF_INET, host.c_str(), &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr) == 1) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
  } else if (inet_pton(AF_INET6, host.c_str(), &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr) == 1) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    flags |= MHD_USE_IPv6;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", address, "\": host must be an IP address"));
  }
  auto server = std::unique_ptr<MetricsServer>(new MetricsServer());
  server->registry_ = registry;
  server->daemon_ = MHD_start_daemon(flags, static_cast<uint16_t>(port), nullptr, nullptr,
                                     &MetricsServerAccess::Handle, server.get(),
                                     MHD_OPTION_SOCK_ADDR, &ss, MHD_OPTION_END);
  if (server->daemon_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot listen for metrics on ", address,
                                               " (address in use or not local?)"));
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(server->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  server->port_ = info ? info->port : static_cast<uint16_t>(port);
  return server;
}

MetricsServer::~MetricsServer() {
  if (daemon_) MHD_stop_daemon(daemon_);
}

}  // namespace ruleplane::metrics
