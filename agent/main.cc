// ruleplane-agent: flag parsing and wiring only.
#include <signal.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/api/server.h"
#include "agent/common/metrics.h"
#include "agent/common/metrics_server.h"
#include "agent/common/status_macros.h"
#include "agent/kernel/nft/netlink_nft_port.h"
#include "agent/render/render.h"
#include "agent/txn/drift_monitor.h"
#include "agent/txn/engine.h"
#include "glog/logging.h"
#include "google/protobuf/util/json_util.h"
#include "ruleplane/v1/config.pb.h"

ABSL_FLAG(std::string, config, "", "JSON config file (ruleplane.v1.AgentConfig); flags override it");
ABSL_FLAG(std::string, socket, "/run/ruleplane/ruleplane.sock", "unix socket for the gRPC services");
ABSL_FLAG(std::string, state_dir, "/var/lib/ruleplane", "directory for the checkpoint and journal");
ABSL_FLAG(std::string, table, "ruleplane", "name of the agent's nftables table (family inet)");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9464",
          "host:port for Prometheus /metrics; empty disables");
ABSL_FLAG(std::string, table_owner, "auto",
          "auto|on|off: mark the table NFT_TABLE_F_OWNER|PERSIST (auto: when the kernel has persist)");
ABSL_FLAG(bool, drift_repair, true, "re-assert the table when another process changes it");
ABSL_FLAG(uint32_t, socket_gid, 0, "group owning the socket (read-only access for its members)");
ABSL_FLAG(bool, exit_after_start, false,
          "converge the table, print it is ready and exit (for tests and node bootstrap)");

namespace ruleplane {
std::set<std::string>& GivenFlags();
namespace {

// Flags named on the command line (Debian's abseil keeps
// CommandLineFlag::IsSpecifiedOnCommandLine private, so main() records them).
}  // namespace

std::set<std::string>& GivenFlags() {
  static std::set<std::string> given;
  return given;
}

namespace {

bool FlagSet(const std::string& name) { return GivenFlags().count(name) > 0; }

// Config file first, then flags given on the command line win; defaults
// fill what neither says.
absl::StatusOr<v1::AgentConfig> LoadConfig() {
  v1::AgentConfig cfg;
  const std::string path = absl::GetFlag(FLAGS_config);
  if (!path.empty()) {
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(absl::StrCat("config ", path, ": cannot open"));
    std::stringstream ss;
    ss << in.rdbuf();
    google::protobuf::util::JsonParseOptions opts;
    opts.ignore_unknown_fields = false;
    auto st = google::protobuf::util::JsonStringToMessage(ss.str(), &cfg, opts);
    if (!st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("config ", path, ": ", std::string(st.message())));
    }
  }
  auto pick = [](const std::string& flag, const std::string& flag_value, std::string* field) {
    if (FlagSet(flag) || field->empty()) *field = flag_value;
  };
  pick("socket", absl::GetFlag(FLAGS_socket), cfg.mutable_socket());
  pick("state_dir", absl::GetFlag(FLAGS_state_dir), cfg.mutable_state_dir());
  pick("table", absl::GetFlag(FLAGS_table), cfg.mutable_table());
  if (FlagSet("metrics_address") || !cfg.has_metrics_address()) {
    cfg.set_metrics_address(absl::GetFlag(FLAGS_metrics_address));  // explicit "" disables
  }
  pick("table_owner", absl::GetFlag(FLAGS_table_owner), cfg.mutable_table_owner());
  if (FlagSet("socket_gid") || !cfg.has_socket_gid()) cfg.set_socket_gid(absl::GetFlag(FLAGS_socket_gid));
  if (cfg.mutation_uids_size() == 0) cfg.add_mutation_uids(0);
  if (FlagSet("drift_repair") || !cfg.has_drift_repair()) cfg.set_drift_repair(absl::GetFlag(FLAGS_drift_repair));

  // Validation: name the field.
  if (!absl::StartsWith(cfg.table(), "ruleplane") || cfg.table().size() > 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "table: \"", cfg.table(), "\" must start with \"ruleplane\" (the agent only owns ruleplane* tables)",
        " and be at most 64 characters"));
  }
  for (char c : cfg.table()) {
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) {
      return absl::InvalidArgumentError(absl::StrCat("table: \"", cfg.table(), "\" has character '", std::string(1, c),
                                                     "' (allowed: letters, digits, - and _)"));
    }
  }
  if (cfg.socket().empty() || cfg.socket()[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("socket: \"", cfg.socket(), "\" must be an absolute path"));
  }
  if (cfg.state_dir().empty() || cfg.state_dir()[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("state_dir: \"", cfg.state_dir(), "\" must be an absolute path"));
  }
  if (cfg.table_owner() != "auto" && cfg.table_owner() != "on" && cfg.table_owner() != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("table_owner: \"", cfg.table_owner(), "\" is not one of auto, on, off"));
  }
  for (int32_t prio : {cfg.has_dnat_priority() ? cfg.dnat_priority() : render::kDnatPriority,
                       cfg.has_snat_priority() ? cfg.snat_priority() : render::kSnatPriority}) {
    for (int32_t taken : {-110, -100, 0, 100, -300, -150, -90, 110}) {
      if (prio == taken) {
        return absl::InvalidArgumentError(absl::StrCat(
            cfg.has_dnat_priority() && prio == cfg.dnat_priority() ? "dnat_priority" : "snat_priority", ": ",
            prio, " equals a kube-proxy or Calico priority (-110, -100, 0, 100, -300, -150, -90, 110)"));
      }
    }
  }
  return cfg;
}

// NFT_TABLE_F_PERSIST appeared in Linux 6.9 (commit "netfilter: nf_tables:
// Introduce NFT_TABLE_F_PERSIST"). Without it an owned table dies with the
// agent's socket, which would make restarts disruptive.
bool KernelHasTablePersist() {
  utsname u{};
  if (uname(&u) != 0) return false;
  std::vector<std::string> parts = absl::StrSplit(u.release, absl::ByAnyChar(".-"));
  int major = 0, minor = 0;
  if (parts.size() < 2 || !absl::SimpleAtoi(parts[0], &major) || !absl::SimpleAtoi(parts[1], &minor)) return false;
  return major > 6 || (major == 6 && minor >= 9);
}

int Main() {
  absl::StatusOr<v1::AgentConfig> cfg = LoadConfig();
  if (!cfg.ok()) {
    LOG(ERROR) << "bad configuration: " << cfg.status().message();
    std::fprintf(stderr, "ruleplane-agent: bad configuration: %s\n", std::string(cfg.status().message()).c_str());
    return 2;
  }

  // Signals are handled by sigwait on the main thread only; block them
  // before any thread exists so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  metrics::Registry registry;
  auto port = kernel::nft::NetlinkNftPort::Create({});
  if (!port.ok()) {
    std::fprintf(stderr, "ruleplane-agent: %s\n", std::string(port.status().message()).c_str());
    return 1;
  }
  if (absl::Status probe = (*port)->Probe(); !probe.ok()) {
    std::fprintf(stderr, "ruleplane-agent: %s\n", std::string(probe.message()).c_str());
    return 1;
  }

  txn::EngineOptions opts;
  opts.state_dir = cfg->state_dir();
  opts.layout.table = cfg->table();
  if (cfg->has_dnat_priority()) opts.layout.dnat_priority = cfg->dnat_priority();
  if (cfg->has_snat_priority()) opts.layout.snat_priority = cfg->snat_priority();
  bool owner = cfg->table_owner() == "on" || (cfg->table_owner() == "auto" && KernelHasTablePersist());
  if (cfg->table_owner() == "on" && !KernelHasTablePersist()) {
    std::fprintf(stderr, "ruleplane-agent: table_owner: \"on\" needs NFT_TABLE_F_PERSIST (Linux 6.9+)\n");
    return 2;
  }
  if (owner) opts.layout.table_flags = kernel::nft::kTableFlagOwner | kernel::nft::kTableFlagPersist;

  auto engine = txn::Engine::Create(opts, std::move(*port), &registry);
  if (!engine.ok()) {
    std::fprintf(stderr, "ruleplane-agent: %s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  std::unique_ptr<api::ApiServer> api_server;
  if (!absl::GetFlag(FLAGS_exit_after_start)) {
    // Serve (health NOT_SERVING) before converging, so probes see "starting"
    // rather than "connection refused".
    auto read_port = kernel::nft::NetlinkNftPort::Create({});
    if (!read_port.ok()) {
      std::fprintf(stderr, "ruleplane-agent: %s\n", std::string(read_port.status().message()).c_str());
      return 1;
    }
    api::ApiOptions api_opts;
    api_opts.socket_path = cfg->socket();
    api_opts.socket_gid = cfg->socket_gid();
    api_opts.mutation_uids.assign(cfg->mutation_uids().begin(), cfg->mutation_uids().end());
    api_opts.mutation_gids.assign(cfg->mutation_gids().begin(), cfg->mutation_gids().end());
    api_opts.table = cfg->table();
    api_opts.table_owner = owner;
    api_opts.version = RULEPLANE_VERSION;
    auto srv = api::ApiServer::Start(std::move(api_opts), engine->get(), std::move(*read_port));
    if (!srv.ok()) {
      std::fprintf(stderr, "ruleplane-agent: %s\n", std::string(srv.status().message()).c_str());
      return 1;
    }
    api_server = std::move(*srv);
  }
  if (absl::Status s = (*engine)->Start(); !s.ok()) {
    std::fprintf(stderr, "ruleplane-agent: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  LOG(INFO) << "ruleplane-agent ready: table=inet " << cfg->table() << " state_dir=" << cfg->state_dir()
            << " socket=" << cfg->socket() << " owner=" << owner;
  if (absl::GetFlag(FLAGS_exit_after_start)) {
    std::printf("ready: table inet %s converged\n", cfg->table().c_str());
    return 0;
  }
  api_server->SetReady(true);

  std::unique_ptr<metrics::MetricsServer> metrics_server;
  if (!cfg->metrics_address().empty()) {
    auto ms = metrics::MetricsServer::Start(cfg->metrics_address(), &registry);
    if (!ms.ok()) {
      std::fprintf(stderr, "ruleplane-agent: metrics_address: %s\n", std::string(ms.status().message()).c_str());
      return 2;
    }
    metrics_server = std::move(*ms);
    LOG(INFO) << "metrics on http://" << cfg->metrics_address() << "/metrics (port " << metrics_server->port() << ")";
  }
  std::unique_ptr<txn::DriftMonitor> drift;
  if (cfg->drift_repair()) {
    auto dm = txn::DriftMonitor::Start(engine->get(), "", cfg->table(), &registry);
    if (!dm.ok()) {
      LOG(WARNING) << "drift repair disabled: " << dm.status();
    } else {
      drift = std::move(*dm);
    }
  }

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      absl::StatusOr<v1::AgentConfig> next = LoadConfig();
      if (!next.ok()) {
        LOG(ERROR) << "SIGHUP: config rejected, keeping the running one: " << next.status().message();
        continue;
      }
      if (next->table() != cfg->table() || next->state_dir() != cfg->state_dir() ||
          next->socket() != cfg->socket() || next->metrics_address() != cfg->metrics_address()) {
        LOG(WARNING) << "SIGHUP: table, state_dir, socket and metrics_address take effect on restart";
      }
      // Reload goes through the queue: the writer swaps the layout and
      // converges the kernel in one diff transaction.
      render::Layout layout = opts.layout;
      layout.dnat_priority = next->has_dnat_priority() ? next->dnat_priority() : render::kDnatPriority;
      layout.snat_priority = next->has_snat_priority() ? next->snat_priority() : render::kSnatPriority;
      if (absl::Status s = (*engine)->Reconfigure(layout); !s.ok()) {
        LOG(ERROR) << "SIGHUP: reload failed, keeping the running configuration: " << s;
        continue;
      }
      opts.layout = layout;
      *cfg = *next;
      LOG(INFO) << "SIGHUP: configuration reloaded";
      continue;
    }
    LOG(INFO) << "signal " << sig << ": stopping (kernel state stays in place)";
    break;
  }
  api_server->SetReady(false, "shutting down");
  api_server->Shutdown();
  drift.reset();
  metrics_server.reset();
  (*engine)->Stop();
  return 0;
}

}  // namespace
}  // namespace ruleplane

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "ruleplane-agent: the node dataplane agent. One transaction queue commits every rule change "
      "as an atomic nftables batch.");
  // The public flag names are dashed (--state-dir, --metrics-address);
  // absl flags are identifiers, so accept both spellings by normalising.
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& arg = args[i];
    if (arg == "--") break;
    size_t start = arg.find_first_not_of('-');
    if (start == 0 || start == std::string::npos) continue;
    size_t end = std::min(arg.find('='), arg.size());
    std::replace(arg.begin() + static_cast<long>(start), arg.begin() + static_cast<long>(end), '-', '_');
    std::string name = arg.substr(start, end - start);
    if (name.rfind("no", 0) == 0 && absl::FindCommandLineFlag(name.substr(2)) != nullptr) name = name.substr(2);
    ruleplane::GivenFlags().insert(name);
  }
  std::vector<char*> argv2;
  for (std::string& a : args) argv2.push_back(a.data());
  argc = static_cast<int>(argv2.size());
  argv2.push_back(nullptr);
  argv = argv2.data();
  absl::ParseCommandLine(argc, argv);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  return ruleplane::Main();
}
