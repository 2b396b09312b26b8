#include "cni/plugin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>

#include <grpcpp/create_channel_posix.h>
#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "agent/common/status_macros.h"
#include "agent/common/unique_fd.h"
#include "cni/json_scan.h"
#include "ruleplane/v1/cni.grpc.pb.h"

namespace ruleplane::cni {
namespace {

using nlohmann::json;

// Set once by SetOneShotProcess (cni/run.h) before any agent call.
bool one_shot_process = false;

constexpr absl::string_view kSupportedVersions[] = {"0.4.0", "1.0.0", "1.1.0"};
constexpr absl::string_view kValidAttachmentsKey = "cni.dev/valid-attachments";
// libcni's limit (IFNAMSIZ - 1).
constexpr size_t kMaxIfnameLen = 15;

bool IsSupportedVersion(absl::string_view v) {
  for (absl::string_view s : kSupportedVersions) {
    if (v == s) return true;
  }
  return false;
}

std::string Quote(absl::string_view s) { return absl::StrCat("\"", s, "\""); }

// JSON type names for messages ("wrong type" errors say what was found).
std::string TypeName(const json& v) { return v.type_name(); }

const json* Member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

// Same rule as libcni's ValidateContainerID: ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$
bool IsValidContainerId(absl::string_view id) {
  if (id.empty() || !absl::ascii_isalnum(static_cast<unsigned char>(id[0]))) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

// Same rule as libcni's ValidateInterfaceName.
absl::Status ValidateIfname(absl::string_view name) {
  if (name.size() > kMaxIfnameLen) {
    return absl::InvalidArgumentError(
        absl::StrCat("CNI_IFNAME ", Quote(name), " is longer than ", kMaxIfnameLen, " bytes"));
  }
  if (name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat("CNI_IFNAME ", Quote(name), " is not a valid interface name"));
  }
  for (char c : name) {
    if (c == '/' || c == ':' || absl::ascii_isspace(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(
          absl::StrCat("CNI_IFNAME ", Quote(name), " must not contain '/', ':' or whitespace"));
    }
  }
  return absl::OkStatus();
}

// Parses an IPv4/IPv6 address and returns its canonical text.
std::optional<std::string> CanonicalIp(absl::string_view text) {
  std::string s(text);
  char buf[INET6_ADDRSTRLEN];
  in_addr v4;
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) return std::string(inet_ntop(AF_INET, &v4, buf, sizeof(buf)));
  in6_addr v6;
  if (inet_pton(AF_INET6, s.c_str(), &v6) == 1) return std::string(inet_ntop(AF_INET6, &v6, buf, sizeof(buf)));
  return std::nullopt;
}

// Reads a JSON integer in [lo, hi]; nullopt for anything else (floats
// included, as Go's encoding/json rejects 8080.0 for an int field).
std::optional<int64_t> IntInRange(const json& v, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) return std::nullopt;
  int64_t n = 0;
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) return std::nullopt;
    n = static_cast<int64_t>(u);
  } else {
    n = v.get<int64_t>();
  }
  if (n < lo || n > hi) return std::nullopt;
  return n;
}

// nlohmann reports parse errors by exception; it is caught right here and
// turned into a Status, so nothing is thrown across a function boundary.
absl::StatusOr<json> DecodeJson(absl::string_view text) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
}

const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN_CODE";
  }
}

// A CNI error on its way to stdout.
struct Failure {
  int code;
  std::string msg;
  std::string details;
};

// One agent connection for one plugin run; owns the channel and stub. Used
// by one thread (the plugin's only one); must not outlive the run.
//
// The plugin lives for one call, so the connection is built for that:
//  - we connect the unix socket ourselves (blocking connect bounded by the
//    call's deadline through SO_SNDTIMEO, which AF_UNIX honours while the
//    listener's backlog is full) and hand the connected fd to gRPC as a
//    direct channel (CreateCustomInsecureChannelFromFd). That skips the
//    whole client_channel machinery a `unix:` target brings: resolver, LB
//    policy, subchannel, connectivity watchers and their executor hops, and
//    the connector's wait for the server's SETTINGS before the first call.
//    The request goes out with the HTTP/2 preface in one write. Measured on
//    the 2-CPU dev VM: see cni/README.md ("Exec cost").
//  - a refused/missing socket fails at connect(), before any gRPC work, with
//    "not reachable" (CNI 11); nothing retries (the runtime retries whole CNI
//    operations);
//  - the call has an absolute deadline, so a listener that accepts but never
//    answers fails at the deadline ("did not answer", CNI 11). Nothing waits
//    longer than the configured timeout;
//  - no BDP pings (the agent would have to answer a PING for every reply),
//    no channelz, no retries.
class AgentClient {
 public:
  explicit AgentClient(const NetConf& conf)
      : socket_(conf.socket), timeout_(conf.timeout), deadline_(absl::Now() + timeout_) {}

  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;

  ~AgentClient() {
    if (one_shot_process) {
      // Deliberately leaked, with the channel it holds: the process _exits
      // right after the answer is written (see SetOneShotProcess), and
      // tearing the channel down would only delay that.
      (void)stub_.release();
    }
  }

  template <typename Req, typename Resp>
  using Method = grpc::Status (v1::Cni::Stub::*)(grpc::ClientContext*, const Req&, Resp*);

  // Calls `method`; on failure returns the CNI error (code per cni.proto,
  // or `override_code` for every failure when non-zero, as STATUS needs).
  template <typename Req, typename Resp>
  std::optional<Failure> Call(Method<Req, Resp> method, absl::string_view rpc, Command command, const Req& req,
                              Resp* resp, int override_code = 0) {
    if (stub_ == nullptr) {
      if (std::optional<Failure> f = Connect(rpc, override_code)) return f;
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(deadline_));
    ctx.set_wait_for_ready(false);
    grpc::Status st = (stub_.get()->*method)(&ctx, req, resp);
    if (st.ok()) return std::nullopt;
    return Describe(st, rpc, command, override_code);
  }

 private:
  // Connects to the agent's socket before the deadline and builds the
  // channel on that connection. A Failure ("not reachable", CNI 11 or
  // `override_code`) when the socket is missing, refused, or its backlog
  // stays full until the deadline.
  std::optional<Failure> Connect(absl::string_view rpc, int override_code) {
    int code = override_code != 0 ? override_code : kCniTryAgainLater;
    auto unreachable = [&](absl::string_view what, int err) {
      return Failure{code, absl::StrCat("ruleplane agent not reachable at ", socket_),
                     absl::StrCat("Cni.", rpc, " at unix:", socket_, ": UNAVAILABLE: ", what, ": ",
                                  std::strerror(err))};
    };
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return unreachable("socket", errno);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    // ParseNetConf bounds the path to sizeof(sun_path) - 1 bytes.
    std::memcpy(addr.sun_path, socket_.data(), std::min(socket_.size(), sizeof(addr.sun_path) - 1));
    while (true) {
      // A blocking AF_UNIX connect waits while the listener's backlog is
      // full, for at most SO_SNDTIMEO, then fails with EAGAIN (net/unix/
      // af_unix.c, unix_stream_connect). Zero would mean "forever".
      absl::Duration left = std::max(deadline_ - absl::Now(), absl::Microseconds(1));
      timeval tv = absl::ToTimeval(left);
      if (::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
        return unreachable("setsockopt SO_SNDTIMEO", errno);
      }
      if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) break;
      if (errno != EINTR) return unreachable("connect", errno);
    }
    // gRPC makes the fd non-blocking; the send timeout must not linger on
    // it either way.
    timeval none{};
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &none, sizeof(none)) != 0) {
      return unreachable("setsockopt SO_SNDTIMEO", errno);
    }
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
    args.SetInt(GRPC_ARG_ENABLE_CHANNELZ, 0);
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetString(GRPC_ARG_DEFAULT_AUTHORITY, "localhost");
    channel_ = grpc::CreateCustomInsecureChannelFromFd(absl::StrCat("unix:", socket_),
                                                       fd.release(),  // owned by the channel's transport now
                                                       args);
    stub_ = v1::Cni::NewStub(channel_);
    return std::nullopt;
  }

  // The connection is up (Connect succeeded), so a failed call is the
  // agent's answer, the agent dropping the connection, or the deadline.
  Failure Describe(const grpc::Status& st, absl::string_view rpc, Command command, int override_code) {
    std::string details = absl::StrCat("Cni.", rpc, " at unix:", socket_, ": ", GrpcCodeName(st.error_code()),
                                       st.error_message().empty() ? "" : ": ", st.error_message());
    int code = override_code != 0 ? override_code : CniCodeForGrpc(st.error_code(), command);
    if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return {code,
              absl::StrCat("ruleplane agent at ", socket_, " did not answer ", CommandName(command), " within ",
                           absl::FormatDuration(timeout_)),
              std::move(details)};
    }
    std::string msg = st.error_message().empty()
                          ? absl::StrCat("ruleplane agent failed ", CommandName(command), " with ",
                                         GrpcCodeName(st.error_code()))
                          : st.error_message();
    return {code, std::move(msg), std::move(details)};
  }

  std::string socket_;
  absl::Duration timeout_;
  absl::Time deadline_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Cni::Stub> stub_;
};

absl::StatusOr<Command> ParseCommand(absl::string_view s) {
  if (s == "ADD") return Command::kAdd;
  if (s == "DEL") return Command::kDel;
  if (s == "CHECK") return Command::kCheck;
  if (s == "GC") return Command::kGc;
  if (s == "STATUS") return Command::kStatus;
  if (s == "VERSION") return Command::kVersion;
  return absl::InvalidArgumentError(
      absl::StrCat("CNI_COMMAND ", Quote(s), " is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"));
}

// Fills the request fields shared by ADD, DEL and CHECK.
v1::CniRequest BaseRequest(const Env& env, const NetConf& conf, const std::string& stdin_bytes) {
  v1::CniRequest req;
  req.set_command(std::string(CommandName(env.command)));
  req.set_container_id(env.container_id);
  req.set_netns(env.netns);
  req.set_ifname(env.ifname);
  req.set_args(env.args);
  req.set_path(env.path);
  req.set_config(stdin_bytes);
  req.set_cni_version(conf.cni_version);
  req.set_network_name(conf.name);
  v1::Attachment* a = req.mutable_attachment();
  a->set_container_id(env.container_id);
  a->set_ifname(env.ifname);
  a->set_netns(env.netns);
  a->set_pod_namespace(env.cni_args.pod_namespace);
  a->set_pod_name(env.cni_args.pod_name);
  a->set_pod_uid(env.cni_args.pod_uid);
  return req;
}

}  // namespace

absl::string_view CommandName(Command c) {
  switch (c) {
    case Command::kAdd: return "ADD";
    case Command::kDel: return "DEL";
    case Command::kCheck: return "CHECK";
    case Command::kGc: return "GC";
    case Command::kStatus: return "STATUS";
    case Command::kVersion: return "VERSION";
  }
  return "UNKNOWN";
}

absl::StatusOr<CniArgs> ParseCniArgs(absl::string_view args) {
  CniArgs out;
  for (absl::string_view pair : absl::StrSplit(args, ';', absl::SkipEmpty())) {
    size_t eq = pair.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat("CNI_ARGS: malformed pair ", Quote(pair), " (want KEY=VALUE)"));
    }
    absl::string_view key = pair.substr(0, eq);
    absl::string_view value = pair.substr(eq + 1);
    if (key == "K8S_POD_NAMESPACE") {
      out.pod_namespace = std::string(value);
    } else if (key == "K8S_POD_NAME") {
      out.pod_name = std::string(value);
    } else if (key == "K8S_POD_UID") {
      out.pod_uid = std::string(value);
    }
    // IgnoreUnknown, K8S_POD_INFRA_CONTAINER_ID and anything else: not ours.
  }
  return out;
}

absl::StatusOr<Env> ParseEnv(const std::map<std::string, std::string>& env) {
  auto get = [&env](const char* name) -> std::string {
    auto it = env.find(name);
    return it == env.end() ? std::string() : it->second;
  };
  Env out;
  std::string command = get("CNI_COMMAND");
  if (command.empty()) return absl::InvalidArgumentError("CNI_COMMAND is not set");
  ASSIGN_OR_RETURN(out.command, ParseCommand(command));
  if (out.command == Command::kVersion || out.command == Command::kGc || out.command == Command::kStatus) {
    out.path = get("CNI_PATH");
    return out;
  }
  out.container_id = get("CNI_CONTAINERID");
  out.netns = get("CNI_NETNS");
  out.ifname = get("CNI_IFNAME");
  out.args = get("CNI_ARGS");
  out.path = get("CNI_PATH");
  if (out.container_id.empty()) return absl::InvalidArgumentError("CNI_CONTAINERID is not set");
  if (!IsValidContainerId(out.container_id)) {
    return absl::InvalidArgumentError(absl::StrCat("CNI_CONTAINERID ", Quote(out.container_id),
                                                   " must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"));
  }
  if (out.netns.empty() && out.command != Command::kDel) return absl::InvalidArgumentError("CNI_NETNS is not set");
  if (out.ifname.empty()) return absl::InvalidArgumentError("CNI_IFNAME is not set");
  RETURN_IF_ERROR(ValidateIfname(out.ifname));
  ASSIGN_OR_RETURN(out.cni_args, ParseCniArgs(out.args));
  return out;
}

absl::Status CheckCniVersion(const json& conf, Command command) {
  const json* v = Member(conf, "cniVersion");
  if (v == nullptr || v->is_null()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cniVersion: missing; ruleplane supports ", absl::StrJoin(kSupportedVersions, ", ")));
  }
  if (!v->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("cniVersion: want a string, got ", TypeName(*v)));
  }
  const std::string& version = v->get_ref<const std::string&>();
  if (!IsSupportedVersion(version)) {
    return absl::FailedPreconditionError(absl::StrCat("cniVersion ", Quote(version),
                                                      " is not supported; ruleplane supports ",
                                                      absl::StrJoin(kSupportedVersions, ", ")));
  }
  if ((command == Command::kGc || command == Command::kStatus) && version != kLatestCniVersion) {
    return absl::FailedPreconditionError(absl::StrCat(CommandName(command), " needs cniVersion ",
                                                      kLatestCniVersion, ", config has ", Quote(version)));
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Duration> ParseTimeout(const json& value) {
  absl::Duration d;
  if (value.is_number()) {
    double seconds = value.get<double>();
    if (!std::isfinite(seconds) || seconds <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("timeout: want a positive number of seconds, got ", value.dump()));
    }
    d = absl::Seconds(seconds);
  } else if (value.is_string()) {
    // absl::ParseDuration reads Go's time.ParseDuration syntax ("1m30s").
    const std::string& text = value.get_ref<const std::string&>();
    if (!absl::ParseDuration(text, &d) || d == absl::InfiniteDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat("timeout: ", Quote(text), " is not a duration (want e.g. \"500ms\", \"2s\" or seconds)"));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout: want seconds or a duration string, got ", TypeName(value)));
  }
  if (d <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("timeout: must be positive, got ", absl::FormatDuration(d)));
  }
  return d;
}

absl::StatusOr<NetConf> ParseNetConf(const json& conf) {
  NetConf out;
  if (const json* v = Member(conf, "cniVersion"); v != nullptr && v->is_string()) {
    out.cni_version = v->get<std::string>();
  }
  const json* type = Member(conf, "type");
  if (type == nullptr || !type->is_string()) {
    return absl::InvalidArgumentError(type == nullptr ? "type: missing"
                                                      : absl::StrCat("type: want a string, got ", TypeName(*type)));
  }
  if (type->get_ref<const std::string&>() != kPluginType) {
    return absl::InvalidArgumentError(absl::StrCat("type: ", Quote(type->get_ref<const std::string&>()),
                                                   " is not ", Quote(kPluginType)));
  }
  const json* name = Member(conf, "name");
  if (name == nullptr || !name->is_string() || name->get_ref<const std::string&>().empty()) {
    return absl::InvalidArgumentError(
        name == nullptr      ? "name: missing"
        : name->is_string() ? "name: empty"
                            : absl::StrCat("name: want a string, got ", TypeName(*name)));
  }
  out.name = name->get<std::string>();
  if (const json* s = Member(conf, "socket"); s != nullptr && !s->is_null()) {
    if (!s->is_string() || s->get_ref<const std::string&>().empty()) {
      return absl::InvalidArgumentError(s->is_string() ? "socket: empty"
                                                       : absl::StrCat("socket: want a string, got ", TypeName(*s)));
    }
    out.socket = s->get<std::string>();
    // sun_path holds 108 bytes including the terminating NUL.
    if (out.socket.size() >= sizeof(sockaddr_un{}.sun_path)) {
      return absl::InvalidArgumentError(absl::StrCat("socket: path longer than ", sizeof(sockaddr_un{}.sun_path) - 1,
                                                     " bytes: ", out.socket));
    }
  }
  if (const json* t = Member(conf, "timeout"); t != nullptr && !t->is_null()) {
    ASSIGN_OR_RETURN(out.timeout, ParseTimeout(*t));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> SelectIps(const json& prev_result, absl::string_view ifname) {
  std::vector<std::string> out;
  const json* ips = Member(prev_result, "ips");
  if (ips == nullptr || ips->is_null()) return out;
  if (!ips->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("prevResult.ips: want an array, got ", TypeName(*ips)));
  }
  const json* interfaces = Member(prev_result, "interfaces");
  if (interfaces != nullptr && !interfaces->is_null() && !interfaces->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("prevResult.interfaces: want an array, got ", TypeName(*interfaces)));
  }
  for (size_t i = 0; i < ips->size(); ++i) {
    const json& ip = (*ips)[i];
    std::string field = absl::StrCat("prevResult.ips[", i, "]");
    if (!ip.is_object()) return absl::InvalidArgumentError(absl::StrCat(field, ": want an object, got ", TypeName(ip)));
    const json* address = Member(ip, "address");
    if (address == nullptr || !address->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".address: missing or not a string"));
    }
    const std::string& cidr = address->get_ref<const std::string&>();
    std::pair<absl::string_view, absl::string_view> parts = absl::StrSplit(cidr, absl::MaxSplits('/', 1));
    std::optional<std::string> addr = CanonicalIp(parts.first);
    if (!addr) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".address: ", Quote(cidr), " is not an IP/prefix"));
    }
    if (const json* index = Member(ip, "interface"); index != nullptr && !index->is_null()) {
      std::optional<int64_t> idx = IntInRange(*index, 0, INT32_MAX);
      if (!idx) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".interface: want a non-negative integer, got ", index->dump()));
      }
      // An index outside prevResult.interfaces tells us nothing about the
      // interface; the reference portmap plugin keeps such ips, and so do we.
      if (interfaces != nullptr && interfaces->is_array() && static_cast<size_t>(*idx) < interfaces->size()) {
        const json& intf = (*interfaces)[static_cast<size_t>(*idx)];
        const json* name = Member(intf, "name");
        const json* sandbox = Member(intf, "sandbox");
        bool ours = name != nullptr && name->is_string() && name->get_ref<const std::string&>() == ifname &&
                    sandbox != nullptr && sandbox->is_string() && !sandbox->get_ref<const std::string&>().empty();
        if (!ours) continue;  // host side of a veth, a bridge, or another interface of the pod
      }
    }
    out.push_back(*std::move(addr));
  }
  return out;
}

absl::StatusOr<std::vector<v1::PortMapping>> ParsePortMappings(const json& conf) {
  std::vector<v1::PortMapping> out;
  const json* rc = Member(conf, "runtimeConfig");
  if (rc == nullptr || rc->is_null()) return out;
  if (!rc->is_object()) return absl::InvalidArgumentError(absl::StrCat("runtimeConfig: want an object, got ", TypeName(*rc)));
  const json* pms = Member(*rc, "portMappings");
  if (pms == nullptr || pms->is_null()) return out;
  if (!pms->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("runtimeConfig.portMappings: want an array, got ", TypeName(*pms)));
  }
  for (size_t i = 0; i < pms->size(); ++i) {
    const json& pm = (*pms)[i];
    std::string field = absl::StrCat("runtimeConfig.portMappings[", i, "]");
    if (!pm.is_object()) return absl::InvalidArgumentError(absl::StrCat(field, ": want an object, got ", TypeName(pm)));
    v1::PortMapping m;
    for (const char* key : {"hostPort", "containerPort"}) {
      const json* v = Member(pm, key);
      std::optional<int64_t> port = v == nullptr ? std::nullopt : IntInRange(*v, 1, 65535);
      if (!port) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".", key, ": want an integer 1-65535, got ",
                                                       v == nullptr ? "nothing" : v->dump()));
      }
      if (key[0] == 'h') {
        m.set_host_port(static_cast<uint32_t>(*port));
      } else {
        m.set_container_port(static_cast<uint32_t>(*port));
      }
    }
    std::string protocol = "tcp";
    if (const json* p = Member(pm, "protocol"); p != nullptr && !p->is_null()) {
      if (!p->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".protocol: want a string, got ", TypeName(*p)));
      }
      protocol = absl::AsciiStrToLower(p->get_ref<const std::string&>());
      if (protocol.empty()) protocol = "tcp";
    }
    if (protocol != "tcp" && protocol != "udp" && protocol != "sctp") {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".protocol: ", Quote(protocol), " is not one of tcp, udp, sctp"));
    }
    m.set_protocol(protocol);
    if (const json* h = Member(pm, "hostIP"); h != nullptr && !h->is_null()) {
      if (!h->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".hostIP: want a string, got ", TypeName(*h)));
      }
      const std::string& text = h->get_ref<const std::string&>();
      if (!text.empty()) {
        std::optional<std::string> ip = CanonicalIp(text);
        if (!ip) {
          return absl::InvalidArgumentError(absl::StrCat(field, ".hostIP: ", Quote(text), " is not an IP address"));
        }
        m.set_host_ip(*ip);
      }
    }
    out.push_back(std::move(m));
  }
  return out;
}

absl::StatusOr<std::vector<v1::AttachmentKey>> ParseValidAttachments(const json& conf) {
  const json* list = Member(conf, std::string(kValidAttachmentsKey).c_str());
  if (list == nullptr || list->is_null()) {
    // Refusing is safer than treating "missing" as "keep nothing".
    return absl::InvalidArgumentError(absl::StrCat(kValidAttachmentsKey, ": missing (required for GC)"));
  }
  if (!list->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(kValidAttachmentsKey, ": want an array, got ", TypeName(*list)));
  }
  std::vector<v1::AttachmentKey> out;
  out.reserve(list->size());
  for (size_t i = 0; i < list->size(); ++i) {
    const json& entry = (*list)[i];
    std::string field = absl::StrCat(kValidAttachmentsKey, "[", i, "]");
    const json* id = Member(entry, "containerID");
    const json* ifname = Member(entry, "ifname");
    if (id == nullptr || !id->is_string() || id->get_ref<const std::string&>().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".containerID: missing or not a non-empty string"));
    }
    if (ifname == nullptr || !ifname->is_string() || ifname->get_ref<const std::string&>().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".ifname: missing or not a non-empty string"));
    }
    v1::AttachmentKey k;
    k.set_container_id(id->get<std::string>());
    k.set_ifname(ifname->get<std::string>());
    out.push_back(std::move(k));
  }
  return out;
}

int CniCodeForGrpc(grpc::StatusCode code, Command command) {
  switch (code) {
    case grpc::StatusCode::OK: return 0;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::ABORTED: return kCniTryAgainLater;
    case grpc::StatusCode::INVALID_ARGUMENT: return kCniInvalidConfig;
    case grpc::StatusCode::ALREADY_EXISTS: return kCniHostPortInUse;
    case grpc::StatusCode::NOT_FOUND: return command == Command::kCheck ? kCniAttachmentMissing : kCniAgentError;
    case grpc::StatusCode::PERMISSION_DENIED: return kCniPermissionDenied;
    default: return kCniAgentError;
  }
}

std::string FormatCniError(absl::string_view cni_version, int code, absl::string_view msg,
                           absl::string_view details) {
  // ordered_json keeps the documented key order (cniVersion, code, msg,
  // details) for people reading runtime logs; the order means nothing to JSON.
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  j["cniVersion"] = std::string(cni_version);
  j["code"] = code;
  j["msg"] = std::string(msg);
  j["details"] = std::string(details);
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string StdinReadFailure(const std::string& reason) {
  return FormatCniError(kLatestCniVersion, kCniIoFailure, "reading network config from stdin", reason);
}

void SetOneShotProcess() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  one_shot_process = true;
}

std::string VersionJson() { return R"({"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]})"; }

int RunPlugin(const std::map<std::string, std::string>& env, const std::string& stdin_bytes, std::string* out,
              std::string* err) {
  out->clear();
  err->clear();
  auto command_it = env.find("CNI_COMMAND");
  std::string command_name = command_it == env.end() ? "" : command_it->second;
  if (command_name == "VERSION") {
    *out = VersionJson();
    return 0;
  }

  absl::StatusOr<json> conf = DecodeJson(stdin_bytes);
  // Errors carry the config's cniVersion when it is one we speak; otherwise
  // ours (we cannot claim to answer in a version we do not implement).
  std::string error_version(kLatestCniVersion);
  if (conf.ok()) {
    if (const json* v = Member(*conf, "cniVersion"); v != nullptr && v->is_string() &&
                                                      IsSupportedVersion(v->get_ref<const std::string&>())) {
      error_version = v->get<std::string>();
    }
  }
  auto fail = [&](int code, absl::string_view msg, absl::string_view details = "") {
    *out = FormatCniError(error_version, code, msg, details);
    absl::StrAppend(err, "ruleplane: ", command_name.empty() ? "(no CNI_COMMAND)" : command_name,
                    " failed: code=", code, " msg=", msg, details.empty() ? "" : " details=", details, "\n");
    return 1;
  };

  absl::StatusOr<Env> parsed_env = ParseEnv(env);
  if (!parsed_env.ok()) return fail(kCniInvalidEnvironment, parsed_env.status().message());
  const Env& e = *parsed_env;
  if (!conf.ok()) return fail(kCniDecodeFailure, "decoding network config from stdin", conf.status().message());
  if (!conf->is_object()) return fail(kCniDecodeFailure, "network config on stdin is not a JSON object");
  if (absl::Status s = CheckCniVersion(*conf, e.command); !s.ok()) {
    return fail(absl::IsInvalidArgument(s) ? kCniInvalidConfig : kCniIncompatibleVersion, s.message());
  }
  absl::StatusOr<NetConf> nc = ParseNetConf(*conf);
  if (!nc.ok()) return fail(kCniInvalidConfig, nc.status().message());

  switch (e.command) {
    case Command::kAdd:
    case Command::kCheck: {
      const json* prev = Member(*conf, "prevResult");
      if (prev == nullptr || prev->is_null()) {
        return fail(kCniInvalidConfig,
                    "ruleplane is a chained plugin: prevResult missing (put it after the main plugin in the conflist)");
      }
      if (!prev->is_object()) {
        return fail(kCniInvalidConfig, absl::StrCat("prevResult: want an object, got ", TypeName(*prev)));
      }
      absl::StatusOr<std::vector<std::string>> ips = SelectIps(*prev, e.ifname);
      if (!ips.ok()) return fail(kCniInvalidConfig, ips.status().message());
      absl::StatusOr<std::vector<v1::PortMapping>> pms = ParsePortMappings(*conf);
      if (!pms.ok()) return fail(kCniInvalidConfig, pms.status().message());
      // The bytes we will print; located before the call so a scanner
      // problem cannot turn a committed ADD into a failure afterwards.
      absl::StatusOr<absl::string_view> raw_prev = FindTopLevelMember(stdin_bytes, "prevResult");
      if (!raw_prev.ok()) return fail(kCniDecodeFailure, "locating prevResult in stdin", raw_prev.status().message());

      v1::CniRequest req = BaseRequest(e, *nc, stdin_bytes);
      for (std::string& ip : *ips) req.mutable_attachment()->add_ips(std::move(ip));
      for (v1::PortMapping& pm : *pms) *req.mutable_attachment()->add_port_mappings() = std::move(pm);
      AgentClient agent(*nc);
      v1::CniResponse resp;
      std::optional<Failure> f = e.command == Command::kAdd
                                     ? agent.Call(&v1::Cni::Stub::Add, "Add", e.command, req, &resp)
                                     : agent.Call(&v1::Cni::Stub::Check, "Check", e.command, req, &resp);
      if (f) return fail(f->code, f->msg, f->details);
      if (e.command == Command::kAdd) *out = std::string(*raw_prev);  // byte for byte
      return 0;
    }
    case Command::kDel: {
      // DEL needs neither prevResult nor a netns (a repeated DEL after the
      // netns is gone is normal). If the agent is unreachable or slow we
      // answer 11 (try again later) rather than pretending success: the
      // runtime retries DEL, and whatever a DEL that never arrives leaves
      // behind is removed by the agent's GC (CNI GC with the runtime's valid
      // attachments, and its own reconciliation against live netns).
      v1::CniRequest req = BaseRequest(e, *nc, stdin_bytes);
      AgentClient agent(*nc);
      v1::CniResponse resp;
      if (std::optional<Failure> f = agent.Call(&v1::Cni::Stub::Del, "Del", e.command, req, &resp)) {
        return fail(f->code, f->msg, f->details);
      }
      return 0;
    }
    case Command::kGc: {
      absl::StatusOr<std::vector<v1::AttachmentKey>> keep = ParseValidAttachments(*conf);
      if (!keep.ok()) return fail(kCniInvalidConfig, keep.status().message());
      v1::CniGcRequest req;
      req.set_config(stdin_bytes);
      req.set_cni_version(nc->cni_version);
      req.set_network_name(nc->name);
      for (v1::AttachmentKey& k : *keep) *req.add_valid_attachments() = std::move(k);
      AgentClient agent(*nc);
      v1::CniResponse resp;
      if (std::optional<Failure> f = agent.Call(&v1::Cni::Stub::Gc, "Gc", e.command, req, &resp)) {
        return fail(f->code, f->msg, f->details);
      }
      return 0;
    }
    case Command::kStatus: {
      AgentClient agent(*nc);
      v1::CniStatusRequest req;
      v1::CniStatusResponse resp;
      // Every failure to learn the agent's state means "not available".
      if (std::optional<Failure> f =
              agent.Call(&v1::Cni::Stub::Status, "Status", e.command, req, &resp, kCniNotAvailable)) {
        return fail(f->code, f->msg, f->details);
      }
      if (!resp.ready()) {
        std::string reason = resp.reason().empty() ? "no reason given" : resp.reason();
        return fail(kCniNotAvailable, absl::StrCat("ruleplane agent not ready: ", reason), reason);
      }
      return 0;
    }
    case Command::kVersion:
      break;  // answered above
  }
  *out = VersionJson();
  return 0;
}

}  // namespace ruleplane::cni
