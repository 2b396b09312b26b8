// ruleplane-agent: flag parsing and wiring only.
#include <net/if.h>
#include <signal.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <array>
#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/api/commit_hub.h"
#include "agent/api/server.h"
#include "agent/bringup/api_server_probe.h"
#include "agent/bringup/cni_conflist.h"
#include "agent/bringup/recorder.h"
#include "agent/bringup/uninstall.h"
#include "agent/coexist/node_rules.h"
#include "agent/coexist/xtables_lock_monitor.h"
#include "agent/common/metrics.h"
#include "agent/common/metrics_server.h"
#include "agent/common/status_macros.h"
#include "agent/config/snat_config.h"
#include "agent/kernel/nft/list.h"
#include "agent/kernel/nl/addresses.h"
#include "agent/kernel/nft/netlink_nft_port.h"
#include "agent/render/render.h"
#include "agent/txn/drift_monitor.h"
#include "agent/txn/egress_watch.h"
#include "agent/txn/engine.h"
#include "agent/txn/snat_monitor.h"
#ifdef RULEPLANE_HAVE_BPF
#include "agent/kernel/bpf/bpf_snat_port.h"
#include "agent/kernel/bpf/snat_reader.h"
#endif
#include "glog/logging.h"
#include "google/protobuf/util/json_util.h"
#include "ruleplane/v1/config.pb.h"

ABSL_FLAG(std::string, config, "", "JSON config file (ruleplane.v1.AgentConfig); flags override it");
ABSL_FLAG(std::string, socket, "/run/ruleplane/ruleplane.sock", "unix socket for the gRPC services");
ABSL_FLAG(std::string, state_dir, "/var/lib/ruleplane", "directory for the checkpoint and journal");
ABSL_FLAG(bool, journal_fsync, false,
          "fdatasync the journal before acknowledging each commit (default: written, not synced; it must "
          "survive the agent's death, and the kernel state it mirrors does not survive a reboot)");
ABSL_FLAG(std::string, table, "ruleplane", "name of the agent's nftables table (family inet)");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9464",
          "host:port for Prometheus /metrics; empty disables");
ABSL_FLAG(std::string, table_owner, "auto",
          "auto|on|off: mark the table NFT_TABLE_F_OWNER|PERSIST (auto: when the kernel has persist)");
ABSL_FLAG(bool, drift_repair, true, "re-assert the table when another process changes it");
ABSL_FLAG(uint32_t, socket_gid, 0, "group owning the socket (read-only access for its members)");
// Operations (agent/coexist, agent/bringup); the config file has more.
ABSL_FLAG(std::string, xtables_lock_path, "/run/xtables.lock",
          "xtables lock file to monitor (never locked by the agent); config xtables_lock.path");
ABSL_FLAG(bool, xtables_lock_monitor, true, "watch the xtables lock (holders, hold times, waiters)");
ABSL_FLAG(double, xtables_lock_long_hold, 1.0, "log xtables lock holds at least this many seconds long");
ABSL_FLAG(bool, allow_priority_collision, false,
          "start even if another table has a base chain at one of our hook priorities");
ABSL_FLAG(std::string, api_server, "",
          "direct API server endpoint for the bring-up report (https://host:port); never the Service VIP");
ABSL_FLAG(std::string, kubeconfig, "", "kubeconfig whose server is probed when --api-server is empty");
ABSL_FLAG(std::string, cni_conf_dir, "", "CNI config dir to install the conflist into once ready (e.g. /etc/cni/net.d)");
ABSL_FLAG(std::string, cni_conflist_file, "", "the conflist to install (main plugin + ruleplane)");
ABSL_FLAG(bool, uninstall, false,
          "remove the CNI conflist, the nftables table and the state files, then exit (never done on a plain stop)");
// Pod egress SNAT (agent/backend/README.md); the config file has more.
ABSL_FLAG(std::string, snat_mode, "off", "nftables|bpf|off: how pod egress is translated; config snat_mode");
ABSL_FLAG(std::string, snat_egress_interface, "", "IF[,IF]: interfaces pod egress leaves through");
ABSL_FLAG(std::string, snat_egress_ips, "",
          "IP[,IP]: ordered egress address pool (default: primary IPv4 of the first egress interface)");
ABSL_FLAG(std::string, snat_exclude, "", "CIDR[,CIDR]: destinations that keep the pod source address");
ABSL_FLAG(std::string, snat_port_range, "", "LO-HI: source ports of translated flows (default per backend)");
ABSL_FLAG(bool, snat_fully_random, true, "random source port per translated flow");
ABSL_FLAG(bool, snat_ipv6, false, "translate IPv6 pods too (nftables mode)");
ABSL_FLAG(std::string, snat_egress_ipv6_ips, "", "IP[,IP]: IPv6 egress addresses (the first is used)");
ABSL_FLAG(std::string, bpf_pin_dir, "/sys/fs/bpf/ruleplane", "bpffs directory for the BPF maps (ours alone)");
ABSL_FLAG(int32_t, grpc_poller_keepalive_ms, 400,
          "0, or 1-900: in-process ping period that keeps gRPC's callback pollers awake, so a request after an "
          "idle second is not held up to 100 ms (agent/api/poller_keeper.h); 0 turns it off");
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

// The egress interface's default SNAT addresses, best first, from rtnetlink
// (kernel::nl::PreferredSourceAddresses: the IPv4 primary; IPv6 neither
// tentative nor failed DAD, preferably neither deprecated nor temporary).
absl::StatusOr<std::vector<core::IpAddress>> KernelInterfaceAddresses(const std::string& ifname, int family) {
  absl::StatusOr<std::vector<kernel::nl::InterfaceAddress>> all = kernel::nl::DumpInterfaceAddresses(ifname, family);
  if (!all.ok()) return all.status();
  std::vector<core::IpAddress> out;
  for (const kernel::nl::InterfaceAddress& a : kernel::nl::PreferredSourceAddresses(*all, family)) {
    if (a.bytes.size() == 4) {
      out.push_back(core::IpAddress::V4({a.bytes[0], a.bytes[1], a.bytes[2], a.bytes[3]}));
    } else {
      std::array<uint8_t, 16> b;
      std::copy(a.bytes.begin(), a.bytes.end(), b.begin());
      out.push_back(core::IpAddress::V6(b));
    }
  }
  return out;
}

absl::StatusOr<core::SnatSettings> SnatFromConfig(const v1::AgentConfig& cfg) {
  return config::SnatSettingsFromConfig(cfg, KernelInterfaceAddresses);
}

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
  // SNAT: a list flag given on the command line replaces the file's list.
  auto pick_list = [](const std::string& flag, const std::string& value, google::protobuf::RepeatedPtrField<std::string>* f) {
    if (!FlagSet(flag)) return;
    f->Clear();
    for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
      f->Add(std::string(absl::StripAsciiWhitespace(item)));
    }
  };
  pick("snat_mode", absl::GetFlag(FLAGS_snat_mode), cfg.mutable_snat_mode());
  pick_list("snat_egress_interface", absl::GetFlag(FLAGS_snat_egress_interface), cfg.mutable_snat_egress_interfaces());
  pick_list("snat_egress_ips", absl::GetFlag(FLAGS_snat_egress_ips), cfg.mutable_snat_egress_ips());
  pick_list("snat_exclude", absl::GetFlag(FLAGS_snat_exclude), cfg.mutable_snat_exclude());
  pick_list("snat_egress_ipv6_ips", absl::GetFlag(FLAGS_snat_egress_ipv6_ips), cfg.mutable_snat_egress_ipv6_ips());
  if (FlagSet("snat_port_range")) cfg.set_snat_port_range(absl::GetFlag(FLAGS_snat_port_range));
  if (FlagSet("snat_fully_random")) cfg.set_snat_fully_random(absl::GetFlag(FLAGS_snat_fully_random));
  if (FlagSet("snat_ipv6")) cfg.set_snat_ipv6(absl::GetFlag(FLAGS_snat_ipv6));
  if (FlagSet("bpf_pin_dir") || !cfg.has_bpf_pin_dir()) cfg.set_bpf_pin_dir(absl::GetFlag(FLAGS_bpf_pin_dir));
  if (absl::StatusOr<core::SnatSettings> snat = SnatFromConfig(cfg); !snat.ok()) return snat.status();
  // Operations: flags given on the command line win over the file.
  v1::XtablesLockConfig* lock = cfg.mutable_xtables_lock();
  pick("xtables_lock_path", absl::GetFlag(FLAGS_xtables_lock_path), lock->mutable_path());
  if (FlagSet("xtables_lock_monitor") || !lock->has_enabled()) lock->set_enabled(absl::GetFlag(FLAGS_xtables_lock_monitor));
  if (FlagSet("xtables_lock_long_hold") || !lock->has_long_hold_seconds()) {
    lock->set_long_hold_seconds(absl::GetFlag(FLAGS_xtables_lock_long_hold));
  }
  if (FlagSet("allow_priority_collision") || !cfg.has_allow_priority_collision()) {
    cfg.set_allow_priority_collision(absl::GetFlag(FLAGS_allow_priority_collision));
  }
  if (FlagSet("api_server")) cfg.mutable_api_server()->set_endpoint(absl::GetFlag(FLAGS_api_server));
  if (FlagSet("kubeconfig")) cfg.mutable_api_server()->set_kubeconfig(absl::GetFlag(FLAGS_kubeconfig));
  if (!cfg.api_server().has_wait_seconds()) cfg.mutable_api_server()->set_wait_seconds(120);
  if (FlagSet("cni_conf_dir")) cfg.mutable_cni()->set_conf_dir(absl::GetFlag(FLAGS_cni_conf_dir));
  if (FlagSet("cni_conflist_file")) cfg.mutable_cni()->set_conflist_file(absl::GetFlag(FLAGS_cni_conflist_file));
  if (cfg.cni().conflist_name().empty()) cfg.mutable_cni()->set_conflist_name("10-ruleplane.conflist");
  if (!cfg.has_bringup_history()) cfg.set_bringup_history(10);
  if (FlagSet("journal_fsync") || !cfg.has_journal_fsync()) cfg.set_journal_fsync(absl::GetFlag(FLAGS_journal_fsync));
  if (lock->path().empty() || lock->path()[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("xtables_lock.path: \"", lock->path(), "\" must be an absolute path"));
  }
  if (!(lock->long_hold_seconds() > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("xtables_lock.long_hold_seconds: ", lock->long_hold_seconds(),
                                                   " must be > 0"));
  }
  if (!(cfg.api_server().wait_seconds() >= 0)) {
    return absl::InvalidArgumentError("api_server.wait_seconds: must be >= 0");
  }
  if (!cfg.cni().conf_dir().empty() && cfg.cni().conflist_file().empty()) {
    return absl::InvalidArgumentError("cni.conflist_file: required when cni.conf_dir is set (the conflist to install)");
  }
  if (cfg.cni().conflist_name().find('/') != std::string::npos ||
      !(absl::EndsWith(cfg.cni().conflist_name(), ".conflist"))) {
    return absl::InvalidArgumentError(absl::StrCat("cni.conflist_name: \"", cfg.cni().conflist_name(),
                                                   "\" must be a file name ending in .conflist"));
  }
  if (!cfg.cni().conflist_file().empty()) {
    // Validated now, so a bad file is a config error at start, not a
    // surprise once the agent is ready.
    absl::StatusOr<std::string> conflist = bringup::LoadConflist(cfg.cni().conflist_file());
    if (!conflist.ok()) return absl::InvalidArgumentError(absl::StrCat("cni.conflist_file: ", conflist.status().message()));
  }

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

// Base chains of other tables (nf_tables, and legacy x_tables by their fixed
// priorities) at one of `layout`'s hook priorities. Read-only.
absl::StatusOr<std::vector<coexist::PriorityCollision>> PriorityCollisions(const render::Layout& layout) {
  ASSIGN_OR_RETURN(std::vector<kernel::nft::ChainListing> chains, kernel::nft::ListChains(std::string()));
  std::vector<coexist::NftChainRef> refs;
  for (auto& c : chains) refs.push_back({c.family, std::move(c.table), std::move(c.name), c.base});
  std::vector<coexist::HookedChain> present = coexist::NftHooks(refs);
  std::vector<coexist::HookedChain> legacy = coexist::LegacyHooks(coexist::ReadLegacyTables());
  present.insert(present.end(), legacy.begin(), legacy.end());
  render::BaseRuleset base = render::RenderBase(layout);
  return coexist::FindPriorityCollisions(base.table.family, base.table.name, coexist::HooksOf(base.table, base.chains),
                                         present);
}

absl::StatusOr<std::vector<coexist::NftChainRef>> ListNftChainsForBackends() {
  ASSIGN_OR_RETURN(std::vector<kernel::nft::ChainListing> chains, kernel::nft::ListChains(std::string()));
  std::vector<coexist::NftChainRef> refs;
  for (auto& c : chains) refs.push_back({c.family, std::move(c.table), std::move(c.name), c.base});
  return refs;
}

int RunUninstall(const v1::AgentConfig& cfg) {
  auto port = kernel::nft::NetlinkNftPort::Create({});
  if (!port.ok()) {
    std::fprintf(stderr, "ruleplane-agent: uninstall: %s\n", std::string(port.status().message()).c_str());
    return 1;
  }
#ifdef RULEPLANE_HAVE_BPF
  // The BPF SNAT dataplane first: its hook record lives in the state dir.
  kernel::bpf::BpfSnatPort bpf_port({cfg.state_dir(), cfg.bpf_pin_dir(), nullptr});
  if (absl::Status s = bpf_port.Converge(render::BpfSnatPlan{}, {}); !s.ok()) {
    std::fprintf(stderr, "ruleplane-agent: uninstall bpf snat: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("uninstall: bpf snat filters and pins in %s removed\n", cfg.bpf_pin_dir().c_str());
#endif
  bringup::UninstallOptions o{cfg.table(), cfg.state_dir(), cfg.socket(), cfg.cni().conf_dir(),
                              cfg.cni().conflist_name()};
  absl::StatusOr<std::vector<std::string>> done = bringup::Uninstall(o, port->get());
  if (!done.ok()) {
    std::fprintf(stderr, "ruleplane-agent: %s\n", std::string(done.status().message()).c_str());
    return 1;
  }
  for (const std::string& line : *done) std::printf("uninstall: %s\n", line.c_str());
  return 0;
}

int Main() {
  const double main_start = bringup::BootSecondsNow();
  absl::StatusOr<v1::AgentConfig> cfg = LoadConfig();
  if (!cfg.ok()) {
    LOG(ERROR) << "bad configuration: " << cfg.status().message();
    std::fprintf(stderr, "ruleplane-agent: bad configuration: %s\n", std::string(cfg.status().message()).c_str());
    return 2;
  }
  if (const int32_t ms = absl::GetFlag(FLAGS_grpc_poller_keepalive_ms); ms < 0 || ms > 900) {
    // Checked before anything is touched (state dir, tables, pins).
    std::fprintf(stderr,
                 "ruleplane-agent: bad flag: --grpc_poller_keepalive_ms=%d: must be 0 (off) or 1-900 (below gRPC's "
                 "1 s poll deadline)\n",
                 ms);
    return 2;
  }
  if (absl::GetFlag(FLAGS_uninstall)) return RunUninstall(*cfg);

  // Signals are handled by sigwait on the main thread only; block them
  // before any thread exists so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  metrics::Registry registry;
  // Bring-up timeline: every return below leaves it in the history with
  // its outcome ("failed" names the phase that did not finish).
  bringup::BringupRecorder bringup({RULEPLANE_VERSION, "/proc", &registry});
  bringup.Record(bringup::kConfigLoaded, bringup::PhaseStatus::kOk,
                 absl::GetFlag(FLAGS_config).empty() ? "flags only" : absl::GetFlag(FLAGS_config), main_start,
                 bringup::BootSecondsNow());
  if (absl::Status s = bringup.AttachStateDir(cfg->state_dir(), cfg->bringup_history()); !s.ok()) LOG(WARNING) << s;
  struct SaveHistoryOnExit {
    bringup::BringupRecorder* r;
    ~SaveHistoryOnExit() {
      r->MarkFinished();
      if (absl::Status s = r->Save(); !s.ok()) LOG(WARNING) << s;
    }
  } save_history_on_exit{&bringup};
  // Runs beside the rest; never delays readiness (agent/bringup/api_server_probe.h).
  std::unique_ptr<bringup::ApiServerProber> api_probe = bringup::ApiServerProber::Start(
      bringup::ChooseApiServerEndpoint(cfg->api_server().endpoint(), cfg->api_server().kubeconfig(),
                                       [](const char* name) -> std::optional<std::string> {
                                         const char* v = std::getenv(name);
                                         return v ? std::optional<std::string>(v) : std::nullopt;
                                       }),
      absl::Seconds(cfg->api_server().wait_seconds()), &bringup);

  const int probes = bringup.Begin(bringup::kKernelProbes);
  auto port = kernel::nft::NetlinkNftPort::Create({});
  if (!port.ok()) {
    bringup.End(probes, bringup::PhaseStatus::kFailed, std::string(port.status().message()));
    std::fprintf(stderr, "ruleplane-agent: %s\n", std::string(port.status().message()).c_str());
    return 1;
  }
  if (absl::Status probe = (*port)->Probe(); !probe.ok()) {
    bringup.End(probes, bringup::PhaseStatus::kFailed, std::string(probe.message()));
    std::fprintf(stderr, "ruleplane-agent: %s\n", std::string(probe.message()).c_str());
    return 1;
  }
  bringup.End(probes, bringup::PhaseStatus::kOk, "nf_tables usable");

  txn::EngineOptions opts;
  opts.state_dir = cfg->state_dir();
  opts.journal_fsync = cfg->journal_fsync();
  opts.layout.table = cfg->table();
  if (cfg->has_dnat_priority()) opts.layout.dnat_priority = cfg->dnat_priority();
  if (cfg->has_snat_priority()) opts.layout.snat_priority = cfg->snat_priority();
  bool owner = cfg->table_owner() == "on" || (cfg->table_owner() == "auto" && KernelHasTablePersist());
  if (cfg->table_owner() == "on" && !KernelHasTablePersist()) {
    std::fprintf(stderr, "ruleplane-agent: table_owner: \"on\" needs NFT_TABLE_F_PERSIST (Linux 6.9+)\n");
    return 2;
  }
  if (owner) opts.layout.table_flags = kernel::nft::kTableFlagOwner | kernel::nft::kTableFlagPersist;
  // SNAT: the backend's nftables objects join the base ruleset; the BPF
  // dataplane port is there in every mode, so leaving bpf mode (even across
  // a restart) removes what a bpf-mode agent left behind.
  absl::StatusOr<core::SnatSettings> snat_settings = SnatFromConfig(*cfg);
  if (!snat_settings.ok()) {
    std::fprintf(stderr, "ruleplane-agent: bad configuration: %s\n", std::string(snat_settings.status().message()).c_str());
    return 2;
  }
  opts.layout.snat = *snat_settings;
#ifdef RULEPLANE_HAVE_BPF
  // A restart while the bpf egress address is missing: the previous agent's
  // pinned maps hold that address and the flows through it. Keep them, as a
  // running agent keeps a vanished address, instead of starting in mode off,
  // which would remove the maps (the flows would not survive the address
  // coming back).
  if (opts.layout.snat.waiting_mode == core::SnatMode::kBpf) {
    absl::StatusOr<kernel::bpf::SnatMapsSnapshot> maps = kernel::bpf::ReadPinnedSnatMaps(opts.layout.snat.bpf_pin_dir);
    if (maps.ok()) {
      core::SnatSettings previous = opts.layout.snat;
      previous.mode = core::SnatMode::kBpf;
      previous.waiting_mode = core::SnatMode::kOff;
      previous.egress_waiting.clear();
      previous.egress_ipv4.clear();
      for (const kernel::bpf::EgressUsage& e : maps->egress) {
        if (e.live && !e.address.draining && !e.address.addr.IsUnspecified()) {
          previous.egress_ipv4.push_back(core::IpAddress::V4(e.address.addr.bytes()));
        }
      }
      if (!previous.egress_ipv4.empty()) {
        opts.layout.snat = core::FollowEgressAddresses(previous, opts.layout.snat);
        LOG(WARNING) << "snat: the egress interface has no address; keeping "
                     << previous.egress_ipv4.front().ToString() << " from the maps pinned in " << previous.bpf_pin_dir;
      }
    }
  }
#endif
  // The bring-up report shows how long SNAT waited for its address.
  int egress_wait_phase = -1;
  if (opts.layout.snat.waiting_mode != core::SnatMode::kOff || opts.layout.snat.waiting_ipv6) {
    egress_wait_phase = bringup.Begin(bringup::kWaitingForEgressAddress, opts.layout.snat.egress_waiting);
  }
  auto end_egress_wait = [&bringup, &egress_wait_phase](const core::SnatSettings& now) {
    if (egress_wait_phase < 0 || now.waiting_mode != core::SnatMode::kOff || now.waiting_ipv6) return;
    std::vector<std::string> took;
    for (const core::IpAddress& ip : now.egress_ipv4) took.push_back(ip.ToString());
    if (now.ipv6 && !now.egress_ipv6.empty()) took.push_back(now.egress_ipv6.front().ToString());
    bringup.End(egress_wait_phase, bringup::PhaseStatus::kOk,
                absl::StrCat(now.mode == core::SnatMode::kOff ? "snat_mode off" : absl::StrJoin(took, ","), " on ",
                             absl::StrJoin(now.egress_interfaces, ",")));
    egress_wait_phase = -1;
    if (absl::Status s = bringup.Save(); !s.ok()) LOG(WARNING) << s;
  };
  // How the loaded bpf programs run: the port publishes, the monitor reads.
  auto bpf_datapath = std::make_shared<txn::BpfDatapathBoard>();
#ifdef RULEPLANE_HAVE_BPF
  opts.dataplane = std::make_shared<kernel::bpf::BpfSnatPort>(
      kernel::bpf::BpfSnatPortOptions{cfg->state_dir(), cfg->bpf_pin_dir(), bpf_datapath});
#endif
  for (const std::string& w : config::SnatConfigWarnings(*cfg, opts.layout.snat)) LOG(WARNING) << w;
  if (opts.layout.snat.egress_waiting.empty()) {
    LOG(INFO) << "snat " << core::DescribeSnat(opts.layout.snat);
  } else {
    // Not an error: the egress watcher below takes the address once the
    // interface has one (boot: DHCP, SLAAC, a bond still forming).
    LOG(WARNING) << "snat " << core::DescribeSnat(opts.layout.snat);
  }
  // Published for the gRPC threads once the monitor runs (after Start()).
  std::unique_ptr<txn::SnatMonitor> snat_monitor;
  std::atomic<txn::SnatMonitor*> snat_monitor_ptr{nullptr};

  // Coexistence: hook priorities shared with other tables refuse the start
  // (unless allowed); the xtables lock monitor starts watching.
  const int coexist_phase = bringup.Begin(bringup::kCoexistence);
  metrics::Gauge* collisions_gauge = registry.GetGauge(
      "ruleplane_priority_collisions", "Base chains of other tables at one of our hook priorities (same hook).");
  absl::StatusOr<std::vector<coexist::PriorityCollision>> collisions = PriorityCollisions(opts.layout);
  if (!collisions.ok()) {
    bringup.End(coexist_phase, bringup::PhaseStatus::kFailed, std::string(collisions.status().message()));
    std::fprintf(stderr, "ruleplane-agent: list chains for the hook priority check: %s\n",
                 std::string(collisions.status().message()).c_str());
    return 1;
  }
  collisions_gauge->Set(static_cast<double>(collisions->size()));
  for (const coexist::PriorityCollision& c : *collisions) {
    if (cfg->allow_priority_collision()) {
      LOG(WARNING) << "hook priority collision (allowed by allow_priority_collision): " << c.message;
    } else {
      std::string why = absl::StrCat("hook priority collision: ", c.message,
                                     "; choose another dnat_priority/snat_priority or set allow_priority_collision");
      bringup.End(coexist_phase, bringup::PhaseStatus::kFailed, why);
      std::fprintf(stderr, "ruleplane-agent: %s\n", why.c_str());
      return 1;
    }
  }
  std::unique_ptr<coexist::XtablesLockMonitor> lock_monitor;
  if (cfg->xtables_lock().enabled()) {
    coexist::XtablesLockMonitorOptions lo;
    lo.path = cfg->xtables_lock().path();
    lo.long_hold = absl::Seconds(cfg->xtables_lock().long_hold_seconds());
    lo.list_nft_chains = ListNftChainsForBackends;
    auto lm = coexist::XtablesLockMonitor::Start(std::move(lo), &registry);
    if (lm.ok()) {
      lock_monitor = std::move(*lm);
    } else {
      LOG(WARNING) << "xtables lock monitor disabled: " << lm.status();
    }
  }
  bringup.End(coexist_phase, bringup::PhaseStatus::kOk,
              absl::StrCat(collisions->size(), " priority collisions; xtables lock monitor ",
                           lock_monitor ? "on " + cfg->xtables_lock().path() : std::string("off")));

  // Transactions stream to WatchTransactions clients; Start() reports its
  // steps to the bring-up timeline.
  api::CommitHub commit_hub;
  opts.on_commit = [&commit_hub](const txn::CommitInfo& c) { commit_hub.Publish(c); };
  double step_start = bringup::BootSecondsNow();
  opts.on_start_phase = [&bringup, &step_start](const std::string& phase, bool ok, const std::string& detail) {
    const double now = bringup::BootSecondsNow();
    bringup.Record(phase, ok ? bringup::PhaseStatus::kOk : bringup::PhaseStatus::kFailed, detail, step_start, now);
    step_start = now;
  };

  auto engine = txn::Engine::Create(opts, std::move(*port), &registry);
  if (!engine.ok()) {
    std::fprintf(stderr, "ruleplane-agent: %s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  std::unique_ptr<api::ApiServer> api_server;
  if (!absl::GetFlag(FLAGS_exit_after_start)) {
    // Serve (health NOT_SERVING) before converging, so probes see "starting"
    // rather than "connection refused".
    const int serving = bringup.Begin(bringup::kGrpcServing, "unix:" + cfg->socket());
    auto read_port = kernel::nft::NetlinkNftPort::Create({});
    if (!read_port.ok()) {
      std::fprintf(stderr, "ruleplane-agent: %s\n", std::string(read_port.status().message()).c_str());
      return 1;
    }
    api::ApiOptions api_opts;
    api_opts.poller_keepalive = absl::Milliseconds(absl::GetFlag(FLAGS_grpc_poller_keepalive_ms));
    api_opts.socket_path = cfg->socket();
    api_opts.socket_gid = cfg->socket_gid();
    api_opts.mutation_uids.assign(cfg->mutation_uids().begin(), cfg->mutation_uids().end());
    api_opts.mutation_gids.assign(cfg->mutation_gids().begin(), cfg->mutation_gids().end());
    api_opts.table = cfg->table();
    api_opts.table_owner = owner;
    api_opts.version = RULEPLANE_VERSION;
    if (lock_monitor) {
      coexist::XtablesLockMonitor* lm = lock_monitor.get();
      api_opts.lock_stats = [lm]() -> std::optional<coexist::LockStats> { return lm->Snapshot(); };
    }
    api_opts.bringup = &bringup;
    api_opts.commits = &commit_hub;
    api_opts.snat_stats = [&snat_monitor_ptr]() -> std::optional<backend::SnatStats> {
      txn::SnatMonitor* m = snat_monitor_ptr.load();
      if (m == nullptr) return std::nullopt;
      return m->Latest();
    };
    api_opts.snat_settings = [&snat_monitor_ptr]() -> std::string {
      txn::SnatMonitor* m = snat_monitor_ptr.load();
      return m == nullptr ? "" : core::DescribeSnat(m->Settings());
    };
    auto srv = api::ApiServer::Start(std::move(api_opts), engine->get(), std::move(*read_port));
    if (!srv.ok()) {
      bringup.End(serving, bringup::PhaseStatus::kFailed, std::string(srv.status().message()));
      std::fprintf(stderr, "ruleplane-agent: %s\n", std::string(srv.status().message()).c_str());
      return 1;
    }
    api_server = std::move(*srv);
    bringup.End(serving, bringup::PhaseStatus::kOk, "unix:" + cfg->socket() + " (health NOT_SERVING until ready)");
  }
  step_start = bringup::BootSecondsNow();
  if (absl::Status s = (*engine)->Start(); !s.ok()) {
    std::fprintf(stderr, "ruleplane-agent: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  LOG(INFO) << "ruleplane-agent ready: table=inet " << cfg->table() << " state_dir=" << cfg->state_dir()
            << " socket=" << cfg->socket() << " owner=" << owner;
  if (absl::GetFlag(FLAGS_exit_after_start)) {
    bringup.MarkReady();  // converged is this mode's "ready"; the history then says "stopped"
    std::printf("ready: table inet %s converged\n", cfg->table().c_str());
    return 0;
  }
  api_server->SetReady(true);
  if (opts.layout.snat.mode == core::SnatMode::kBpf) {
    bringup.Instant(bringup::kBpfAttached, bringup::PhaseStatus::kOk,
                    "tc snat on " + absl::StrJoin(opts.layout.snat.egress_interfaces, ",") + ", maps pinned in " +
                        opts.layout.snat.bpf_pin_dir);
  } else {
    bringup.Instant(bringup::kBpfAttached, bringup::PhaseStatus::kSkipped,
                    opts.layout.snat.egress_waiting.empty()
                        ? absl::StrCat("snat_mode ", core::SnatModeName(opts.layout.snat.mode))
                        : opts.layout.snat.egress_waiting);
  }
  txn::SnatMonitorOptions monitor_opts;
  monitor_opts.table = cfg->table();
  if (cfg->has_snat_stats_interval_ms()) monitor_opts.interval = absl::Milliseconds(cfg->snat_stats_interval_ms());
  if (cfg->has_snat_stats_top_k()) monitor_opts.top_k = cfg->snat_stats_top_k();
  monitor_opts.bpf_datapath = bpf_datapath;
  snat_monitor = txn::SnatMonitor::Start(engine->get(), monitor_opts, opts.layout.snat, &registry);
  snat_monitor_ptr.store(snat_monitor.get());

  // SNAT follows its egress interfaces: an egress address that defaults to
  // the interface's follows it (taken when it first appears, replaced when
  // it changes, kept when it goes without a successor), and in bpf mode a
  // device deleted and created again under its name gets our hooks again.
  // Reconfigurations (SIGHUP and these) take `reconfig_mu`, one at a time.
  std::mutex reconfig_mu;
  std::map<std::string, unsigned> egress_ifindex;  // as last seen, by name
  auto note_ifindexes = [&] {
    egress_ifindex.clear();
    for (const std::string& name : opts.layout.snat.egress_interfaces) {
      egress_ifindex[name] = ::if_nametoindex(name.c_str());
    }
  };
  note_ifindexes();
  // What follows a change of the running SNAT settings (SIGHUP or the
  // interfaces), besides the engine's reconfiguration.
  auto settings_applied = [&](const core::SnatSettings& now) {
    if (snat_monitor) snat_monitor->SetSettings(now);
    end_egress_wait(now);
  };
  auto follow_egress = [&](const kernel::nl::LinkChanges& changes) {
    std::lock_guard<std::mutex> lock(reconfig_mu);
    std::vector<std::string> changed;
    bool device_changed = false;  // another device (or none) under an egress name
    for (const std::string& name : cfg->snat_egress_interfaces()) {
      // A rename away from `name` only carries the new name: the ifindex
      // the name now has tells.
      auto seen = egress_ifindex.find(name);
      const bool moved = seen != egress_ifindex.end() && ::if_nametoindex(name.c_str()) != seen->second;
      device_changed = device_changed || moved;
      if (changes.overflow || moved || changes.interfaces.count(name) > 0) changed.push_back(name);
    }
    if (changed.empty()) return;
    const std::string why = absl::StrCat("egress interface ", absl::StrJoin(changed, ","),
                                         changes.overflow ? " (maybe: link notifications were lost or not yet subscribed)" : "",
                                         " changed");
    const core::SnatSettings running = opts.layout.snat;  // a copy: opts.layout changes below
    absl::StatusOr<core::SnatSettings> resolved = SnatFromConfig(*cfg);
    if (!resolved.ok()) {
      LOG(ERROR) << why << ": snat settings not updated: " << resolved.status().message();
      return;
    }
    core::SnatSettings next = core::FollowEgressAddresses(running, *std::move(resolved));
    core::SnatSettings same_but_note = running;
    same_but_note.egress_waiting = next.egress_waiting;
    const bool rules_change = next != same_but_note;
    if (rules_change) {
      render::Layout layout = opts.layout;
      layout.snat = next;
      if (absl::Status s = (*engine)->Reconfigure(layout); !s.ok()) {
        LOG(ERROR) << why << ": snat not updated, keeping the running configuration: " << s;
        note_ifindexes();  // the engine retries its dataplane; do not retry this on every link event
        return;
      }
      opts.layout = std::move(layout);
    } else {
      // Only what diagnostics say changed (an address kept, a wait over):
      // nothing for the kernel.
      opts.layout.snat.egress_waiting = next.egress_waiting;
    }
    if (next != running) {
      settings_applied(opts.layout.snat);
      if (next.egress_waiting.empty()) {
        LOG(INFO) << why << ": snat " << core::DescribeSnat(next);
      } else {
        LOG(WARNING) << why << ": snat " << core::DescribeSnat(next);
      }
    }
    if (!rules_change && device_changed && running.mode == core::SnatMode::kBpf) {
      // Same settings, another device (or none): the writer's converge
      // re-hooks it, or takes our hooks off a device renamed away.
      (*engine)->RequestResync(why);
    }
    note_ifindexes();
  };
  std::unique_ptr<txn::EgressWatcher> egress_watcher;
  {
    txn::EgressWatchOptions wo;
    wo.on_change = follow_egress;
    absl::StatusOr<std::unique_ptr<txn::EgressWatcher>> w = txn::EgressWatcher::Start(std::move(wo));
    if (w.ok()) {
      egress_watcher = std::move(*w);
      // The settings were resolved before the subscription existed: an
      // address that arrived in between (DHCP finishing while the agent
      // starts) sent its notification to nobody. Look once more.
      follow_egress(kernel::nl::LinkChanges{.interfaces = {}, .overflow = true});
    } else {
      LOG(WARNING) << "egress interfaces are not followed (SIGHUP re-reads them): " << w.status();
    }
  }
  bringup.MarkReady();

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
  // Only now may the runtime call us: the conflist appears once pod setup
  // can succeed, and stays in place across restarts.
  if (cfg->cni().conf_dir().empty()) {
    bringup.Instant(bringup::kCniConfigInstalled, bringup::PhaseStatus::kSkipped, "no cni.conf_dir configured");
  } else {
    const int cni_phase = bringup.Begin(bringup::kCniConfigInstalled);
    const std::string where = cfg->cni().conf_dir() + "/" + cfg->cni().conflist_name();
    absl::StatusOr<std::string> conflist = bringup::LoadConflist(cfg->cni().conflist_file());
    absl::StatusOr<bool> written = conflist.ok() ? bringup::InstallConflist(cfg->cni().conf_dir(),
                                                                            cfg->cni().conflist_name(), *conflist)
                                                 : absl::StatusOr<bool>(conflist.status());
    if (written.ok()) {
      bringup.End(cni_phase, bringup::PhaseStatus::kOk, where + (*written ? " written" : " already up to date"));
      LOG(INFO) << "CNI config " << where << (*written ? " installed" : " already up to date");
    } else {
      // The agent keeps serving; the node stays NotReady until this is fixed.
      bringup.End(cni_phase, bringup::PhaseStatus::kFailed, std::string(written.status().message()));
      LOG(ERROR) << "CNI config " << where << " not installed: " << written.status();
    }
  }
  if (absl::Status s = bringup.Save(); !s.ok()) LOG(WARNING) << s;

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      std::lock_guard<std::mutex> lock(reconfig_mu);
      absl::StatusOr<v1::AgentConfig> next = LoadConfig();
      if (!next.ok()) {
        LOG(ERROR) << "SIGHUP: config rejected, keeping the running one: " << next.status().message();
        continue;
      }
      if (next->table() != cfg->table() || next->state_dir() != cfg->state_dir() ||
          next->socket() != cfg->socket() || next->metrics_address() != cfg->metrics_address() ||
          next->journal_fsync() != cfg->journal_fsync()) {
        LOG(WARNING) << "SIGHUP: table, state_dir, socket, metrics_address and journal_fsync take effect on restart";
      }
      // Reload goes through the queue: the writer swaps the layout and
      // converges the kernel in one diff transaction.
      render::Layout layout = opts.layout;
      layout.dnat_priority = next->has_dnat_priority() ? next->dnat_priority() : render::kDnatPriority;
      layout.snat_priority = next->has_snat_priority() ? next->snat_priority() : render::kSnatPriority;
      absl::StatusOr<core::SnatSettings> next_snat = SnatFromConfig(*next);
      if (!next_snat.ok()) {
        LOG(ERROR) << "SIGHUP: config rejected, keeping the running one: " << next_snat.status().message();
        continue;
      }
      layout.snat = core::FollowEgressAddresses(opts.layout.snat, *std::move(next_snat));
      if (!next->allow_priority_collision()) {
        absl::StatusOr<std::vector<coexist::PriorityCollision>> c = PriorityCollisions(layout);
        if (!c.ok() || !c->empty()) {
          LOG(ERROR) << "SIGHUP: reload refused, keeping the running configuration: "
                     << (c.ok() ? "hook priority collision: " + c->front().message : std::string(c.status().message()));
          continue;
        }
      }
      if (absl::Status s = (*engine)->Reconfigure(layout); !s.ok()) {
        LOG(ERROR) << "SIGHUP: reload failed, keeping the running configuration: " << s;
        continue;
      }
      opts.layout = layout;
      *cfg = *next;
      settings_applied(layout.snat);
      note_ifindexes();
      for (const std::string& w : config::SnatConfigWarnings(*next, layout.snat)) LOG(WARNING) << "SIGHUP: " << w;
      LOG(INFO) << "SIGHUP: snat " << core::DescribeSnat(layout.snat);
      LOG(INFO) << "SIGHUP: configuration reloaded";
      continue;
    }
    LOG(INFO) << "signal " << sig << ": stopping (kernel state stays in place)";
    break;
  }
  api_server->SetReady(false, "shutting down");
  api_server->Shutdown();
  egress_watcher.reset();
  drift.reset();
  snat_monitor_ptr.store(nullptr);
  snat_monitor.reset();
  metrics_server.reset();
  (*engine)->Stop();
  return 0;
}

}  // namespace
}  // namespace ruleplane

int main(int argc, char** argv) {
  // Debian's abseil is built with Mutex deadlock detection on: a lock-order
  // graph update on every contended acquire, in production. The unit tests,
  // which link the same libraries without this main(), keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
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
