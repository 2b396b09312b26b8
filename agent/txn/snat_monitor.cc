#include "agent/txn/snat_monitor.h"

// glibc's netinet/in.h first: the uapi headers then skip their own in_addr.
#include <netinet/in.h>
#include <arpa/inet.h>
#include <linux/netfilter/nf_conntrack_common.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "agent/backend/nft_snat_backend.h"
#include "agent/coexist/proc_info.h"
#ifdef RULEPLANE_HAVE_BPF
#include "agent/kernel/bpf/snat_reader.h"
#endif
#include "agent/kernel/ct/conntrack.h"
#include "agent/kernel/nft/counters.h"
#include "glog/logging.h"

namespace ruleplane::txn {
namespace {

using backend::SnatTupleUsage;

const char* ProtoName(uint8_t proto) {
  switch (proto) {
    case IPPROTO_TCP: return "tcp";
    case IPPROTO_UDP: return "udp";
    case IPPROTO_ICMP: return "icmp";
    default: return "other";
  }
}

core::IpAddress V4(const uint8_t* b) { return core::IpAddress::V4({b[0], b[1], b[2], b[3]}); }

[[maybe_unused]] core::IpAddress V4(uint32_t be) {
  uint8_t b[4];
  std::memcpy(b, &be, 4);
  return V4(b);
}

#ifdef RULEPLANE_HAVE_BPF
// Reason names of the BPF datapath's drop counters (bpf/include/ruleplane/
// reasons.h); the same strings label ruleplane_snat_drops_total.
struct BpfDropReason {
  uint32_t reason;
  const char* name;
};
constexpr BpfDropReason kBpfDrops[] = {
    {RP_DROP_NO_PORT, "no_port"},
    {RP_DROP_NO_EGRESS_ADDR, "no_egress_addr"},
    {RP_DROP_UNSUPPORTED_PROTO, "unsupported_proto"},
    {RP_DROP_FRAGMENT, "fragment"},
    {RP_DROP_CSUM, "checksum"},
    {RP_DROP_MALFORMED, "malformed"},
};
#endif

bool SameSteering(const std::vector<render::SetElement>& a, const std::vector<render::SetElement>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].set != b[i].set || !(a[i].element == b[i].element)) return false;
  }
  return true;
}

}  // namespace

std::unique_ptr<SnatMonitor> SnatMonitor::Start(Engine* engine, SnatMonitorOptions options,
                                                core::SnatSettings settings, metrics::Registry* registry) {
  std::unique_ptr<SnatMonitor> m(new SnatMonitor(engine, std::move(options), std::move(settings), registry));
  m->thread_ = std::thread([raw = m.get()] { raw->Run(); });
  return m;
}

SnatMonitor::SnatMonitor(Engine* engine, SnatMonitorOptions options, core::SnatSettings settings,
                         metrics::Registry* registry)
    : engine_(engine), options_(std::move(options)), registry_(registry), settings_(std::move(settings)) {
  scan_errors_ = registry_->GetCounter("ruleplane_snat_scan_errors_total",
                                       "SNAT statistics collections that failed (conntrack, BPF maps, rule counters)");
  scan_seconds_ = registry_->GetHistogram("ruleplane_snat_scan_seconds", "Time one SNAT statistics collection took",
                                          metrics::ExponentialBuckets(0.0005, 2, 16));
  steering_changes_ = registry_->GetCounter(
      "ruleplane_snat_steering_changes_total",
      "Commits of nftables failover steering (destinations moved to another egress address or marked exhausted)");
}

SnatMonitor::~SnatMonitor() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

void SnatMonitor::SetSettings(core::SnatSettings settings) {
  absl::MutexLock lock(&mu_);
  settings_ = std::move(settings);
  settings_changed_ = true;
  cv_.SignalAll();
}

core::SnatSettings SnatMonitor::Settings() const {
  absl::MutexLock lock(&mu_);
  return settings_;
}

backend::SnatStats SnatMonitor::Latest() const {
  absl::MutexLock lock(&mu_);
  return latest_;
}

absl::Duration NextSnatScanWait(absl::Duration interval, absl::Duration last_scan) {
  const absl::Duration stretched = last_scan * (kSnatScanDutyDivisor - 1);
  return std::max(interval, std::min(stretched, std::max(interval, kSnatScanMaxWait)));
}

void SnatMonitor::Run() {
  absl::Duration wait = options_.interval;
  for (;;) {
    core::SnatSettings settings;
    bool changed = false;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time until = absl::Now() + wait;
      while (!stopping_ && !settings_changed_ && absl::Now() < until) cv_.WaitWithDeadline(&mu_, until);
      if (stopping_) return;
      settings = settings_;
      changed = settings_changed_;
      settings_changed_ = false;
    }
    if (changed) applied_steering_.reset();  // re-derive against the new ruleset
    const absl::Time t0 = absl::Now();
    backend::SnatStats stats = Collect(settings);
    stats.collect_duration = absl::Now() - t0;
    scan_seconds_->Observe(absl::ToDoubleSeconds(stats.collect_duration));
    wait = NextSnatScanWait(options_.interval, stats.collect_duration);
    if (wait > options_.interval) {
      LOG_EVERY_T(INFO, 300) << "snat statistics: a scan took " << absl::FormatDuration(stats.collect_duration)
                             << ", next in " << absl::FormatDuration(wait) << " (scans use at most 1/"
                             << kSnatScanDutyDivisor << " of a CPU)";
    }
    if (!stats.error.empty()) {
      scan_errors_->Increment();
      LOG_EVERY_T(WARNING, 30) << "snat statistics: " << stats.error;
    }
    Publish(stats);
    {
      absl::MutexLock lock(&mu_);
      latest_ = std::move(stats);
    }
    scans_.fetch_add(1);
  }
}

backend::SnatStats SnatMonitor::Collect(const core::SnatSettings& settings) {
  backend::SnatStats stats;
  switch (settings.mode) {
    case core::SnatMode::kNftables: CollectNft(settings, stats); break;
    case core::SnatMode::kBpf: CollectBpf(settings, stats); break;
    case core::SnatMode::kOff:
      stats.mode = core::SnatMode::kOff;
      break;
  }
  if (settings.mode != core::SnatMode::kOff) stats.port_range = settings.EffectivePorts().ToString();
  stats.egress_waiting = settings.egress_waiting;
  if (settings.mode == core::SnatMode::kBpf) {
    CheckEphemeralPorts(settings, stats);
  } else {
    logged_shared_ports_.reset();
  }
  stats.collected_at = absl::Now();
  return stats;
}

void SnatMonitor::CheckEphemeralPorts(const core::SnatSettings& settings, backend::SnatStats& stats) {
  const std::string range_path = options_.ipv4_sysctl_dir + "/ip_local_port_range";
  std::optional<std::string> range = coexist::ReadSmallFile(range_path, 64);
  // Absent on kernels without the knob: nothing is reserved then.
  std::optional<std::string> reserved =
      coexist::ReadSmallFile(options_.ipv4_sysctl_dir + "/ip_local_reserved_ports", 1 << 20);
  absl::StatusOr<core::EphemeralPortOverlap> shared =
      range ? core::SharedEphemeralPorts(settings.EffectivePorts(), *range, reserved.value_or(""))
            : absl::StatusOr<core::EphemeralPortOverlap>(absl::UnavailableError(absl::StrCat("cannot read ", range_path)));
  if (!shared.ok()) {
    absl::StrAppend(&stats.error, stats.error.empty() ? "" : "; ", "node ephemeral ports: ", shared.status().message());
    return;
  }
  stats.ports_shared_with_node = shared->ports;
  stats.node_ephemeral_ports = shared->node.ToString();
  if (logged_shared_ports_ != shared->ports) {
    if (shared->ports > 0) {
      LOG(WARNING) << "snat: " << shared->ports << " ports of the bpf SNAT range " << stats.port_range
                   << " (from " << shared->first.ToString() << ") are also the node's ephemeral ports "
                   << "(net.ipv4.ip_local_port_range " << stats.node_ephemeral_ports
                   << ", minus ip_local_reserved_ports): the node's connect() does not see the translated flows, "
                   << "so a node connection from an egress address can be given a port a translated flow holds "
                   << "towards the same remote address and port; set snat_port_range outside it or reserve it in "
                   << "net.ipv4.ip_local_reserved_ports";
    } else if (logged_shared_ports_) {
      LOG(INFO) << "snat: the bpf SNAT range " << stats.port_range << " no longer shares ports with the node's "
                << "ephemeral ports";
    }
    logged_shared_ports_ = shared->ports;
  }
}

void SnatMonitor::CollectNft(const core::SnatSettings& settings, backend::SnatStats& stats) {
  std::vector<std::string> errors;
  std::vector<SnatTupleUsage> usage;
  const std::vector<core::IpAddress>& pool = settings.egress_ipv4;
  absl::StatusOr<std::vector<kernel::ct::CtEntry>> entries =
      kernel::ct::DumpConntrack({.family = AF_INET, .status_bits = IPS_SRC_NAT});
  if (entries.ok()) {
    // After SNAT the reply tuple reads remote:rport -> egress:port. Every
    // source-NATed entry on a pool address counts, whoever made it (a
    // masquerade by kube-proxy to the same address uses the same ports).
    std::map<std::tuple<core::IpAddress, core::IpAddress, uint16_t, uint8_t>, uint32_t> counts;
    for (const kernel::ct::CtEntry& e : *entries) {
      const core::IpAddress egress = V4(e.reply.dst.data());
      if (std::find(pool.begin(), pool.end(), egress) == pool.end()) continue;
      const uint16_t rport = e.reply.proto == IPPROTO_ICMP ? 0 : e.reply.sport;
      ++counts[{egress, V4(e.reply.src.data()), rport, e.reply.proto}];
    }
    for (const auto& [key, n] : counts) {
      const auto& [egress, remote, port, proto] = key;
      usage.push_back(SnatTupleUsage{egress, remote, port, proto, n});
    }
  } else {
    errors.push_back(absl::StrCat("conntrack: ", entries.status().message()));
  }
  const uint32_t capacity = settings.EffectivePorts().size();
  backend::SnatStats summary = backend::SummarizeUsage(core::SnatMode::kNftables, usage, pool, capacity, options_.top_k);
  stats = std::move(summary);

  // Failover steering: only from a complete picture.
  backend::NftSnatBackend nft(settings);
  if (entries.ok()) {
    std::vector<render::SetElement> steering = nft.PlanSteering(usage);
    if (!applied_steering_ || !SameSteering(*applied_steering_, steering)) {
      absl::Status s = engine_->SetDynamicElements(steering);
      if (s.ok()) {
        if (applied_steering_) steering_changes_->Increment();
        applied_steering_ = steering;
      } else {
        errors.push_back(absl::StrCat("failover steering: ", s.message()));
      }
    }
    for (const render::SetElement& se : steering) {
      if (se.set == backend::kMapSnatSteerV4) ++stats.steered_destinations;
      if (se.set == backend::kSetSnatFullV4) ++stats.exhausted_destinations;
    }
  }

  absl::StatusOr<std::map<std::string, kernel::nft::RuleCounter>> counters =
      kernel::nft::ReadRuleCounters(options_.table);
  if (counters.ok()) {
    auto packets = [&](const char* rule) -> uint64_t {
      auto it = counters->find(rule);
      return it == counters->end() ? 0 : it->second.packets;
    };
    // NAT chains see the first packet of a flow only: packets = new flows.
    stats.failovers = packets(backend::kRuleSnatFailoverV4);
    stats.drops["no_port"] = packets(backend::kRuleSnatExhaustedV4);
  } else {
    errors.push_back(absl::StrCat("rule counters: ", counters.status().message()));
  }
  // Flows that met a full address before the steering caught up are
  // dropped by conntrack (tuple clash at confirm); node-wide counter.
  absl::StatusOr<kernel::ct::CtStats> ct = kernel::ct::ReadConntrackStats();
  if (ct.ok()) {
    stats.drops["conntrack_insert_failed"] = ct->insert_failed;
  } else {
    errors.push_back(absl::StrCat("conntrack statistics: ", ct.status().message()));
  }
  for (const std::string& e : errors) absl::StrAppend(&stats.error, stats.error.empty() ? "" : "; ", e);
}

void SnatMonitor::CollectBpf(const core::SnatSettings& settings, backend::SnatStats& stats) {
#ifndef RULEPLANE_HAVE_BPF
  stats.mode = core::SnatMode::kBpf;
  stats.error = "built without BPF support";
#else
  std::optional<kernel::bpf::SnatMapsGeneration> known;
  if (bpf_usage_) known = kernel::bpf::SnatMapsGeneration{bpf_usage_->flow_map_id, bpf_usage_->generation};
  absl::StatusOr<kernel::bpf::SnatMapsSnapshot> maps = kernel::bpf::ReadPinnedSnatMaps(settings.bpf_pin_dir, known);
  const uint32_t capacity = settings.EffectivePorts().size();
  if (!maps.ok()) {
    bpf_usage_.reset();
    stats = backend::SummarizeUsage(core::SnatMode::kBpf, {}, settings.egress_ipv4, capacity, options_.top_k);
    stats.error = absl::StrCat("bpf maps in ", settings.bpf_pin_dir, ": ", maps.status().message());
    return;
  }
  // Not read only when `known` (from bpf_usage_) is still current.
  if (maps->translations) {
    std::map<std::tuple<core::IpAddress, core::IpAddress, uint16_t, uint8_t>, uint32_t> counts;
    for (const rp_rnat_key& k : *maps->translations) {
      ++counts[{V4(k.egress_addr), V4(k.remote_addr), ntohs(k.remote_port), k.proto}];
    }
    std::vector<SnatTupleUsage> usage;
    for (const auto& [key, n] : counts) {
      const auto& [egress, remote, port, proto] = key;
      usage.push_back(SnatTupleUsage{egress, remote, port, proto, n});
    }
    bpf_usage_ = BpfUsageCache{maps->flow_map_id, maps->generation, std::move(usage)};
  }
  stats = backend::SummarizeUsage(core::SnatMode::kBpf, bpf_usage_->usage, settings.egress_ipv4, capacity,
                                  options_.top_k);
  for (const kernel::bpf::EgressUsage& u : maps->egress) {
    if (u.address.addr.IsUnspecified()) continue;
    const core::IpAddress addr = V4(u.address.addr.network_order());
    for (backend::SnatEgressStat& e : stats.egress) {
      if (e.addr != addr) continue;
      e.allocations += u.allocs;
      e.exhausted += u.exhausted;
    }
  }
  stats.flow_table_capacity = maps->flow_capacity;
  stats.bpf_hook = kernel::bpf::HasPinnedTcxLinks(settings.bpf_pin_dir) ? "tcx" : "clsact";
  // Only for the map the numbers came from: not during a reload or resize.
  if (std::optional<BpfDatapath> dp =
          options_.bpf_datapath ? options_.bpf_datapath->For(maps->flow_map_id) : std::nullopt) {
    stats.bpf_l4_checksum = dp->l4_checksum;
    stats.bpf_clock = dp->clock;
  }
  stats.bpf_exclusions = maps->exclusions_in_array ? "array" : "trie";
  stats.failovers = maps->reasons[RP_FAILOVER];
  stats.node_socket_skips = maps->reasons[RP_NAT_NODE_SOCKET];
  for (const BpfDropReason& d : kBpfDrops) stats.drops[d.name] = maps->reasons[d.reason];
#endif
}

void SnatMonitor::Publish(const backend::SnatStats& stats) {
  const std::string mode(core::SnatModeName(stats.mode));
  registry_->ReplaceGauges("ruleplane_snat_mode", "SNAT backend in use (the series with value 1)",
                           {{{{"mode", mode}}, 1.0}});
  std::map<metrics::Labels, double> datapath;
  if (!stats.bpf_l4_checksum.empty()) {
    datapath[{{"l4_checksum", stats.bpf_l4_checksum},
              {"clock", stats.bpf_clock},
              {"exclusions", stats.bpf_exclusions}}] = 1.0;
  }
  registry_->ReplaceGauges("ruleplane_snat_bpf_datapath_info",
                           "bpf: how the loaded programs run on this kernel (the series with value 1): l4_checksum "
                           "direct|helper, clock jiffies|ktime, exclusions array|trie",
                           datapath);
  std::map<metrics::Labels, double> translations;
  for (const backend::SnatEgressStat& e : stats.egress) {
    translations[{{"egress_ip", e.addr.ToString()}}] = static_cast<double>(e.translations);
  }
  registry_->ReplaceGauges("ruleplane_snat_translations",
                           "Translations in use per egress address (conntrack entries or BPF reverse-NAT entries)",
                           translations);
  registry_->GetGauge("ruleplane_snat_port_capacity",
                      "Translations one (egress address, destination address, port, protocol) tuple can hold")
      ->Set(stats.capacity_per_tuple);
  registry_->GetGauge("ruleplane_snat_egress_waiting",
                      "1 while SNAT waits for its egress interface (it does not exist yet, or has no address: the "
                      "mode waits, nothing is translated) or runs with a default address the interface no longer "
                      "has; GetSnatStats egress_waiting says which")
      ->Set(stats.egress_waiting.empty() ? 0 : 1);
  registry_->GetGauge("ruleplane_snat_ports_shared_with_node",
                      "bpf: ports of the SNAT range the node's own sockets may also be given as ephemeral ports "
                      "(net.ipv4.ip_local_port_range minus ip_local_reserved_ports); keep it 0. 0 for nftables")
      ->Set(stats.ports_shared_with_node);
  registry_->GetGauge("ruleplane_snat_flow_table_capacity",
                      "bpf: translations the NAT maps hold; at sum(ruleplane_snat_translations) equal to it, new flows "
                      "evict the least recently used (raise snat_bpf_max_flows). 0 for nftables")
      ->Set(static_cast<double>(stats.flow_table_capacity));
  std::map<metrics::Labels, double> in_use, ratio;
  for (size_t i = 0; i < stats.top.size(); ++i) {
    const backend::SnatTupleStat& t = stats.top[i];
    metrics::Labels l = {{"rank", absl::StrCat(i + 1)},
                         {"egress_ip", t.egress.ToString()},
                         {"dst_ip", t.remote.ToString()},
                         {"dst_port", absl::StrCat(t.remote_port)},
                         {"proto", ProtoName(t.proto)}};
    in_use[l] = t.in_use;
    ratio[l] = t.utilization;
  }
  registry_->ReplaceGauges("ruleplane_snat_busiest_translations",
                           "Translations in use on the busiest (egress ip, dst ip, dst port, proto) tuples (top-k)",
                           in_use);
  registry_->ReplaceGauges("ruleplane_snat_busiest_utilization_ratio",
                           "In-use share of the port range on the busiest tuples (top-k); 1 = exhausted", ratio);
  registry_->GetGauge("ruleplane_snat_steered_destinations",
                      "nftables: destinations whose new flows go to a later egress address")
      ->Set(stats.steered_destinations);
  registry_->GetGauge("ruleplane_snat_exhausted_destinations",
                      "nftables: destinations for which every egress address is full (new flows dropped)")
      ->Set(stats.exhausted_destinations);

  // Kernel counters -> monotonic Prometheus counters (a kernel-side reset,
  // e.g. new maps or replaced rules, restarts from the new value).
  auto advance = [this](const std::string& key, uint64_t now, metrics::Counter* c) {
    auto [it, fresh] = last_kernel_.emplace(key, now);
    const uint64_t before = fresh ? 0 : it->second;
    c->Increment(static_cast<double>(now >= before ? now - before : now));
    it->second = now;
  };
  if (stats.mode == core::SnatMode::kOff) return;
  advance(mode + "/failovers", stats.failovers,
          registry_->GetCounter("ruleplane_snat_failovers_total",
                                "New flows placed on an egress address other than the first", {{"backend", mode}}));
  if (stats.mode == core::SnatMode::kBpf) {
    advance("bpf/node_socket_skips", stats.node_socket_skips,
            registry_->GetCounter("ruleplane_snat_bpf_node_socket_skips_total",
                                  "bpf: candidate ports skipped because a socket of the node holds them towards the "
                                  "same remote (the node uses ports of the SNAT range)"));
  }
  for (const auto& [reason, n] : stats.drops) {
    advance(mode + "/drop/" + reason, n,
            registry_->GetCounter("ruleplane_snat_drops_total", "Packets dropped by SNAT, by backend and reason",
                                  {{"backend", mode}, {"reason", reason}}));
  }
}

}  // namespace ruleplane::txn
