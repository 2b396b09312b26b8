#include "agent/bringup/api_server_probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "agent/coexist/proc_info.h"
#include "agent/common/unique_fd.h"
#include "glog/logging.h"

namespace ruleplane::bringup {
namespace {

std::string Unquote(absl::string_view v) {
  v = absl::StripAsciiWhitespace(v);
  if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
    v = v.substr(1, v.size() - 2);
  }
  return std::string(v);
}

size_t Indent(absl::string_view line) {
  size_t i = 0;
  while (i < line.size() && line[i] == ' ') ++i;
  return i;
}

}  // namespace

std::string ApiServerEndpoint::ToString() const {
  return absl::StrContains(host, ':') ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

absl::StatusOr<ApiServerEndpoint> ParseEndpoint(const std::string& text) {
  absl::string_view s = absl::StripAsciiWhitespace(text);
  uint16_t port = 443;
  if (absl::ConsumePrefix(&s, "https://")) {
    port = 443;
  } else if (absl::ConsumePrefix(&s, "http://")) {
    port = 80;
  }
  s = s.substr(0, s.find('/'));
  ApiServerEndpoint ep;
  absl::string_view port_text;
  if (absl::ConsumePrefix(&s, "[")) {
    size_t close = s.find(']');
    if (close == absl::string_view::npos) return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": unclosed ["));
    ep.host = std::string(s.substr(0, close));
    absl::string_view rest = s.substr(close + 1);
    if (absl::ConsumePrefix(&rest, ":")) port_text = rest;
  } else {
    size_t colon = s.rfind(':');
    if (colon != absl::string_view::npos && s.find(':') == colon) {
      ep.host = std::string(s.substr(0, colon));
      port_text = s.substr(colon + 1);
    } else {
      ep.host = std::string(s);  // a bare IPv6 address has several colons
    }
  }
  if (ep.host.empty()) return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": no host"));
  if (!port_text.empty()) {
    int p = 0;
    if (!absl::SimpleAtoi(port_text, &p) || p <= 0 || p > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": bad port"));
    }
    port = static_cast<uint16_t>(p);
  }
  ep.port = port;
  return ep;
}

std::optional<std::string> KubeconfigServer(const std::string& yaml) {
  struct Item {
    std::string name, server, cluster;
  };
  std::vector<Item> clusters, contexts;
  std::string current_context, section;
  std::vector<Item>* items = nullptr;
  for (absl::string_view raw : absl::StrSplit(yaml, '\n')) {
    absl::string_view line = raw.substr(0, raw.find(" #"));
    if (absl::StripAsciiWhitespace(line).empty() || absl::StartsWith(absl::StripLeadingAsciiWhitespace(line), "#")) {
      continue;
    }
    size_t indent = Indent(line);
    absl::string_view body = line.substr(indent);
    if (indent == 0 && !absl::StartsWith(body, "- ")) {
      section = std::string(body.substr(0, body.find(':')));
      items = section == "clusters" ? &clusters : section == "contexts" ? &contexts : nullptr;
      if (section == "current-context") current_context = Unquote(body.substr(body.find(':') + 1));
      continue;
    }
    if (items == nullptr) continue;
    if (absl::ConsumePrefix(&body, "- ")) items->emplace_back();
    if (items->empty()) continue;
    size_t colon = body.find(':');
    if (colon == absl::string_view::npos) continue;
    std::string key(absl::StripAsciiWhitespace(body.substr(0, colon)));
    std::string value = Unquote(body.substr(colon + 1));
    // `name` belongs to the list item; `server`/`cluster` sit one level down.
    if (key == "name" && !value.empty()) items->back().name = value;
    if (key == "server") items->back().server = value;
    if (key == "cluster" && !value.empty()) items->back().cluster = value;
  }
  std::string want_cluster;
  for (const Item& c : contexts) {
    if (c.name == current_context) want_cluster = c.cluster;
  }
  for (const Item& c : clusters) {
    if (!want_cluster.empty() && c.name == want_cluster && !c.server.empty()) return c.server;
  }
  for (const Item& c : clusters) {
    if (!c.server.empty()) return c.server;
  }
  return std::nullopt;
}

EndpointChoice ChooseApiServerEndpoint(const std::string& configured, const std::string& kubeconfig_path,
                                       const GetEnv& getenv) {
  EndpointChoice out;
  if (!configured.empty()) {
    absl::StatusOr<ApiServerEndpoint> ep = ParseEndpoint(configured);
    if (!ep.ok()) {
      out.why_none = absl::StrCat("api_server.endpoint: ", ep.status().message());
      return out;
    }
    ep->source = "config api_server.endpoint";
    out.endpoint = *ep;
    return out;
  }
  if (!kubeconfig_path.empty()) {
    std::optional<std::string> text = coexist::ReadSmallFile(kubeconfig_path, 1 << 20);
    if (!text) {
      out.why_none = absl::StrCat("kubeconfig ", kubeconfig_path, ": cannot read: ", std::strerror(errno));
      return out;
    }
    std::optional<std::string> server = KubeconfigServer(*text);
    if (!server) {
      out.why_none = absl::StrCat("kubeconfig ", kubeconfig_path, ": no cluster server");
      return out;
    }
    absl::StatusOr<ApiServerEndpoint> ep = ParseEndpoint(*server);
    if (!ep.ok()) {
      out.why_none = absl::StrCat("kubeconfig ", kubeconfig_path, ": server ", ep.status().message());
      return out;
    }
    ep->source = absl::StrCat("kubeconfig ", kubeconfig_path);
    out.endpoint = *ep;
    return out;
  }
  std::optional<std::string> host = getenv("KUBERNETES_SERVICE_HOST");
  std::optional<std::string> port = getenv("KUBERNETES_SERVICE_PORT");
  if (host && !host->empty()) {
    // kubelet injects the Service VIP both here and in KUBERNETES_PORT
    // (tcp://VIP:443); an operator override changes only this variable.
    std::optional<std::string> injected = getenv("KUBERNETES_PORT");
    if (injected) {
      absl::StatusOr<ApiServerEndpoint> vip = ParseEndpoint(
          std::string(absl::StripPrefix(*injected, "tcp://")));
      if (vip.ok() && vip->host == *host) {
        out.why_none = absl::StrCat("in-cluster env KUBERNETES_SERVICE_HOST=", *host,
                                    " is the kubernetes Service VIP (it needs kube-proxy's rules); set "
                                    "api_server.endpoint or override KUBERNETES_SERVICE_HOST with a direct address");
        return out;
      }
    }
    std::string text = absl::StrContains(*host, ':') ? absl::StrCat("[", *host, "]") : *host;
    if (port && !port->empty()) absl::StrAppend(&text, ":", *port);
    absl::StatusOr<ApiServerEndpoint> ep = ParseEndpoint(text);
    if (!ep.ok()) {
      out.why_none = absl::StrCat("in-cluster env: ", ep.status().message());
      return out;
    }
    ep->source = "in-cluster env";
    out.endpoint = *ep;
    return out;
  }
  out.why_none = "no endpoint configured (api_server.endpoint, api_server.kubeconfig or in-cluster env)";
  return out;
}

absl::StatusOr<absl::Duration> ProbeTcp(const ApiServerEndpoint& ep, absl::Duration timeout) {
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + timeout;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* res = nullptr;
  int gai = getaddrinfo(ep.host.c_str(), std::to_string(ep.port).c_str(), &hints, &res);
  if (gai != 0) return absl::UnavailableError(absl::StrCat("resolve ", ep.host, ": ", gai_strerror(gai)));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owned(res, &freeaddrinfo);
  std::string last = "no address";
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last = absl::StrCat("socket: ", std::strerror(errno));
      continue;
    }
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0) return absl::Now() - start;
    if (errno != EINPROGRESS) {
      last = absl::StrCat("connect ", ep.ToString(), ": ", std::strerror(errno));
      continue;
    }
    pollfd p{fd.get(), POLLOUT, 0};
    int left = static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now())));
    int n = ::poll(&p, 1, left);
    if (n == 0) return absl::DeadlineExceededError(absl::StrCat("connect ", ep.ToString(), ": timed out"));
    int err = 0;
    socklen_t len = sizeof(err);
    if (n < 0 || getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err == 0) return absl::Now() - start;
    last = absl::StrCat("connect ", ep.ToString(), ": ", std::strerror(err));
  }
  return absl::UnavailableError(last);
}

}  // namespace ruleplane::bringup

namespace ruleplane::bringup {

std::unique_ptr<ApiServerProber> ApiServerProber::Start(EndpointChoice choice, absl::Duration wait,
                                                        BringupRecorder* recorder) {
  auto p = std::unique_ptr<ApiServerProber>(new ApiServerProber(std::move(choice), wait, recorder));
  p->thread_ = std::thread([raw = p.get()] { raw->Run(); });
  return p;
}

ApiServerProber::~ApiServerProber() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void ApiServerProber::Run() {
  if (!choice_.endpoint) {
    recorder_->Instant(kApiServerReachable, PhaseStatus::kSkipped, choice_.why_none);
    LOG(INFO) << "API server probe skipped: " << choice_.why_none;
    if (absl::Status s = recorder_->Save(); !s.ok()) LOG(WARNING) << s;
    return;
  }
  const ApiServerEndpoint& ep = *choice_.endpoint;
  const std::string where = absl::StrCat(ep.ToString(), " (", ep.source, ")");
  const int waiting = recorder_->Begin(kWaitingForApiServer, where);
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + wait_;
  absl::Duration backoff = absl::Milliseconds(100);
  std::string last_error;
  for (int attempt = 1;; ++attempt) {
    absl::Duration left = deadline - absl::Now();
    absl::StatusOr<absl::Duration> took = ProbeTcp(ep, std::max(absl::Milliseconds(100), std::min(left, absl::Seconds(2))));
    if (took.ok()) {
      recorder_->End(waiting, PhaseStatus::kOk,
                     absl::StrCat(where, ": answered after ", attempt, attempt == 1 ? " attempt" : " attempts"));
      recorder_->Instant(kApiServerReachable, PhaseStatus::kOk,
                         absl::StrCat(where, " TCP connect ", absl::ToDoubleMilliseconds(*took), "ms"));
      LOG(INFO) << "API server " << where << " reachable after " << absl::ToDoubleSeconds(absl::Now() - start) << "s";
      break;
    }
    last_error = std::string(took.status().message());
    if (absl::Now() >= deadline) {
      recorder_->End(waiting, PhaseStatus::kFailed,
                     absl::StrCat(where, ": not reachable within ", absl::FormatDuration(wait_), " (", attempt,
                                  " attempts, last: ", last_error, ")"));
      LOG(WARNING) << "API server " << where << " not reachable within " << wait_ << ": " << last_error;
      break;
    }
    if (stop_.WaitForNotificationWithTimeout(backoff)) {
      recorder_->End(waiting, PhaseStatus::kFailed, absl::StrCat(where, ": agent stopped while waiting (last: ", last_error, ")"));
      return;
    }
    // Capped low: the wait phase ends at the first answer, so the cap is
    // its resolution.
    backoff = std::min(backoff * 2, absl::Milliseconds(500));
  }
  if (absl::Status s = recorder_->Save(); !s.ok()) LOG(WARNING) << s;
}

}  // namespace ruleplane::bringup
