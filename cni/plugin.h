// The chained CNI plugin `ruleplane`: CNI protocol in (environment + stdin),
// gRPC to the agent out (service ruleplane.v1.Cni over a unix socket).
//
// Everything here runs on the caller's thread; the plugin starts no threads
// of its own (gRPC's internal ones aside) and never touches the kernel's
// packet filter: no libnftnl/libmnl/libbpf, no exec of iptables/nft/tc.
// The parse functions are pure and exposed for tests; RunPlugin (cni/run.h)
// is the whole plugin minus process I/O (cni/main.cc reads env/stdin and
// writes stdout).
#pragma once

#include <map>
#include <string>
#include <vector>

#include <grpcpp/support/status_code_enum.h>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cni/run.h"
#include "ruleplane/v1/state.pb.h"

namespace ruleplane::cni {

inline constexpr absl::string_view kPluginType = "ruleplane";
inline constexpr absl::string_view kDefaultSocket = "/run/ruleplane/ruleplane.sock";
inline constexpr absl::Duration kDefaultTimeout = absl::Seconds(2);
// The version we speak natively; used in errors when the config's is unusable.
inline constexpr absl::string_view kLatestCniVersion = "1.1.0";

// CNI error codes: 1-50 from the CNI 1.1.0 spec ("Error" section), 100+
// ours (see the header comment of proto/ruleplane/v1/cni.proto).
enum CniCode : int {
  kCniIncompatibleVersion = 1,
  kCniInvalidEnvironment = 4,
  kCniIoFailure = 5,
  kCniDecodeFailure = 6,
  kCniInvalidConfig = 7,
  kCniTryAgainLater = 11,
  kCniNotAvailable = 50,
  kCniHostPortInUse = 100,
  kCniAttachmentMissing = 101,
  kCniPermissionDenied = 102,
  kCniAgentError = 103,
};

enum class Command { kAdd, kDel, kCheck, kGc, kStatus, kVersion };

// "ADD", "DEL", ... as in CNI_COMMAND.
absl::string_view CommandName(Command c);

// Pod identity from CNI_ARGS. Keys we do not use (IgnoreUnknown,
// K8S_POD_INFRA_CONTAINER_ID, anything else) are ignored.
struct CniArgs {
  std::string pod_namespace;
  std::string pod_name;
  std::string pod_uid;
};

// Parses CNI_ARGS ("K=V;K=V", any order, empty segments skipped, the value
// is everything after the first '='; a repeated key: last one wins).
// InvalidArgument naming the pair when a segment has no '=' or an empty key.
[[nodiscard]] absl::StatusOr<CniArgs> ParseCniArgs(absl::string_view args);

// The CNI_* environment, validated for `command`.
struct Env {
  Command command = Command::kVersion;
  std::string container_id;  // CNI_CONTAINERID
  std::string netns;         // CNI_NETNS
  std::string ifname;        // CNI_IFNAME
  std::string args;          // CNI_ARGS, raw
  std::string path;          // CNI_PATH, raw
  CniArgs cni_args;          // CNI_ARGS, parsed (ADD, DEL, CHECK only)
};

// Validates the environment. ADD/CHECK need CNI_CONTAINERID, CNI_NETNS,
// CNI_IFNAME; DEL needs CNI_CONTAINERID and CNI_IFNAME (CNI_NETNS may be
// empty); GC, STATUS and VERSION need only CNI_COMMAND.
// InvalidArgument naming the variable on any problem (CNI code 4).
[[nodiscard]] absl::StatusOr<Env> ParseEnv(const std::map<std::string, std::string>& env);

// The plugin's part of the network configuration.
struct NetConf {
  std::string cni_version;
  std::string name;
  std::string socket = std::string(kDefaultSocket);
  absl::Duration timeout = kDefaultTimeout;
};

// Checks "cniVersion" for `command`: 0.4.0, 1.0.0 and 1.1.0 are accepted,
// GC and STATUS need 1.1.0. FailedPrecondition when unsupported or missing
// (CNI code 1); InvalidArgument when not a string (CNI code 7).
[[nodiscard]] absl::Status CheckCniVersion(const nlohmann::json& conf, Command command);

// Parses "timeout": a positive number of seconds (2, 0.5) or a Go-style
// duration string ("500ms", "2s", "1m30s"). InvalidArgument otherwise.
[[nodiscard]] absl::StatusOr<absl::Duration> ParseTimeout(const nlohmann::json& value);

// Parses cniVersion (assumed checked), "type" (must be "ruleplane"), "name",
// "socket", "timeout". Unknown keys are ignored. InvalidArgument naming the
// key (CNI code 7).
[[nodiscard]] absl::StatusOr<NetConf> ParseNetConf(const nlohmann::json& conf);

// Pod addresses (without prefix length, canonical text) from prevResult.ips
// for interface `ifname`: an ip whose "interface" index points at an entry of
// prevResult.interfaces with another name or an empty sandbox is skipped;
// ips without interface information are kept. InvalidArgument naming the
// field (e.g. "prevResult.ips[1].address") on malformed input.
[[nodiscard]] absl::StatusOr<std::vector<std::string>> SelectIps(const nlohmann::json& prev_result,
                                                                 absl::string_view ifname);

// runtimeConfig.portMappings of the config (capability "portMappings"):
// hostPort and containerPort 1-65535, protocol tcp (default), udp or sctp
// (case-insensitive, stored lower case), optional hostIP (IPv4 or IPv6,
// stored in canonical text). Absent or null: no mappings. InvalidArgument
// naming the field.
[[nodiscard]] absl::StatusOr<std::vector<v1::PortMapping>> ParsePortMappings(const nlohmann::json& conf);

// "cni.dev/valid-attachments" of a GC config: [{"containerID", "ifname"}].
// InvalidArgument when missing (a GC without it would delete everything) or
// malformed.
[[nodiscard]] absl::StatusOr<std::vector<v1::AttachmentKey>> ParseValidAttachments(const nlohmann::json& conf);

// The table at the top of proto/ruleplane/v1/cni.proto. NOT_FOUND means
// "attachment missing" (101) only for CHECK; elsewhere it is an agent error.
// OK maps to 0. STATUS is not mapped here (every failure there is 50).
int CniCodeForGrpc(grpc::StatusCode code, Command command);

// {"cniVersion":..,"code":..,"msg":..,"details":..}; never throws (invalid
// UTF-8 in msg/details is replaced).
std::string FormatCniError(absl::string_view cni_version, int code, absl::string_view msg,
                           absl::string_view details);

// The VERSION answer.
std::string VersionJson();

}  // namespace ruleplane::cni
