// ruleplanectl: the operator's view of a running ruleplane-agent over its
// gRPC socket. Human tables by default, --json for machines.
//
// Exit codes (stable; scripts and probes rely on them):
//   0  ok / healthy
//   1  the agent answered with an error, or is not ready/healthy; `diff`:
//      differences; `locks`: lock path not a file, mixed iptables backends
//      or monitor off; `bringup`: not ready; `snat`: not available, an
//      egress address exhausted for a destination, an incomplete snapshot,
//      or SNAT waiting for its egress interface
//   2  usage error
//   3  the agent is not reachable (socket missing, refused, timeout)
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "ruleplane/v1/cni.grpc.pb.h"
#include "ruleplane/v1/diagnostics.grpc.pb.h"
#include "tools/ruleplanectl/bringup_svg.h"

ABSL_FLAG(std::string, socket, "/run/ruleplane/ruleplane.sock", "the agent's unix socket");
ABSL_FLAG(bool, json, false, "print JSON (protobuf JSON mapping) instead of tables");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(5), "deadline for each call");
ABSL_FLAG(uint32_t, limit, 50, "txns: how many transactions");
ABSL_FLAG(bool, follow, false, "txns: after the last --limit ones, print transactions as they finish");
ABSL_FLAG(uint32_t, count, 0, "txns --follow: stop after this many (0 = until interrupted)");
ABSL_FLAG(std::string, svg, "", "bringup: also write the phase waterfall as an SVG file");
ABSL_FLAG(uint32_t, previous, 5, "bringup: previous starts to show/compare");
ABSL_FLAG(uint32_t, recent, 10, "locks: recent holds to show");

namespace {

constexpr int kOk = 0, kFailed = 1, kUsage = 2, kUnreachable = 3;

std::shared_ptr<grpc::Channel> Dial() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_SERVICE_CONFIG_DISABLE_RESOLUTION, 1);
  return grpc::CreateCustomChannel("unix:" + absl::GetFlag(FLAGS_socket), grpc::InsecureChannelCredentials(), args);
}

void SetDeadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() +
                    absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_timeout)));
}

int Report(const grpc::Status& s) {
  if (s.ok()) return kOk;
  bool unreachable = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                     s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
  std::fprintf(stderr, "ruleplanectl: %s: %s (%s)\n",
               unreachable ? "agent not reachable" : "agent error", s.error_message().c_str(),
               absl::GetFlag(FLAGS_socket).c_str());
  return unreachable ? kUnreachable : kFailed;
}

void PrintJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.always_print_primitive_fields = true;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  std::cout << out;
}

int Status() {
  auto stub = ruleplane::v1::Diagnostics::NewStub(Dial());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  ruleplane::v1::GetStatusResponse r;
  if (int rc = Report(stub->GetStatus(&ctx, {}, &r)); rc) return rc;
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(r);
  } else {
    absl::PrintF("ready:          %s%s\n", r.ready() ? "yes" : "NO", r.ready() ? "" : " (" + r.reason() + ")");
    absl::PrintF("version:        %s (kernel %s)\n", r.version(), r.kernel());
    absl::PrintF("table:          inet %s%s\n", r.table(), r.table_owner() ? " (owner, persist)" : "");
    absl::PrintF("snat backend:   %s%s\n", r.snat_backend(),
                 r.snat_egress_waiting().empty() ? "" : " (WAITING: " + r.snat_egress_waiting() + ")");
    absl::PrintF("attachments:    %d\n", r.attachments());
    absl::PrintF("elements:       %d%s\n", r.elements(),
                 r.orphan_elements() ? absl::StrCat(" (", r.orphan_elements(), " adopted orphans until GC)") : "");
    absl::PrintF("queue depth:    %d\n", r.queue_depth());
    absl::PrintF("commits:        %d\n", r.commits());
    absl::PrintF("drift repairs:  %d\n", r.drift_repairs());
    absl::PrintF("uptime:         %.1fs\n", r.uptime_seconds());
  }
  return r.ready() ? kOk : kFailed;
}

int Attachments() {
  auto stub = ruleplane::v1::Diagnostics::NewStub(Dial());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  ruleplane::v1::ListAttachmentsResponse r;
  if (int rc = Report(stub->ListAttachments(&ctx, {}, &r)); rc) return rc;
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(r);
    return kOk;
  }
  absl::PrintF("%-14s %-6s %-32s %-28s %s\n", "CONTAINER", "IF", "POD", "IPS", "HOST PORTS");
  for (const auto& a : r.attachments()) {
    std::string ips, ports;
    for (const auto& ip : a.ips()) absl::StrAppend(&ips, ips.empty() ? "" : ",", ip);
    for (const auto& p : a.port_mappings()) {
      absl::StrAppend(&ports, ports.empty() ? "" : ",", p.host_ip().empty() ? "" : p.host_ip() + ":", p.host_port(),
                      "->", p.container_port(), "/", p.protocol());
    }
    absl::PrintF("%-14s %-6s %-32s %-28s %s\n", a.container_id().substr(0, 12), a.ifname(),
                 a.pod_namespace() + "/" + a.pod_name(), ips, ports);
  }
  return kOk;
}

int Txns() {
  auto stub = ruleplane::v1::Diagnostics::NewStub(Dial());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  ruleplane::v1::ListTransactionsRequest req;
  req.set_limit(absl::GetFlag(FLAGS_limit));
  ruleplane::v1::ListTransactionsResponse r;
  if (int rc = Report(stub->ListTransactions(&ctx, req, &r)); rc) return rc;
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(r);
    return kOk;
  }
  absl::PrintF("%-6s %-10s %-9s %-8s %-5s %-9s %-11s %-10s %-10s %s\n", "ID", "KIND", "MUTATIONS", "REJECTED", "MSGS",
               "ELEMENTS", "QUEUE_WAIT", "COMMIT", "RESULT", "DETAIL");
  for (const auto& t : r.transactions()) {
    std::string detail = t.failing_op().empty() ? t.reason() : t.failing_op() + ": " + t.error();
    absl::PrintF("%-6d %-10s %-9d %-8d %-5d %-9d %-11s %-10s %-10s %s\n", t.id(), t.kind(), t.mutations(),
                 t.rejected(), t.messages(), t.elements(), absl::StrCat(t.queue_wait_max_us() / 1000.0, "ms"),
                 absl::StrCat(t.commit_us() / 1000.0, "ms"), t.result(), detail);
  }
  return kOk;
}

int Ruleset() {
  auto stub = ruleplane::v1::Diagnostics::NewStub(Dial());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  ruleplane::v1::DumpRulesetResponse r;
  if (int rc = Report(stub->DumpRuleset(&ctx, {}, &r)); rc) return rc;
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(r);
  } else {
    std::cout << r.text();
  }
  return kOk;
}

int Diff() {
  auto stub = ruleplane::v1::Diagnostics::NewStub(Dial());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  ruleplane::v1::DiffDesiredActualResponse r;
  if (int rc = Report(stub->DiffDesiredActual(&ctx, {}, &r)); rc) return rc;
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(r);
  } else if (r.differences().empty()) {
    std::cout << "kernel matches the desired state (generation " << r.generation() << ")\n";
  } else {
    for (const auto& d : r.differences()) std::cout << d << "\n";
  }
  return r.differences().empty() ? kOk : kFailed;
}

std::string TxnLine(const ruleplane::v1::Transaction& t) {
  std::string detail = t.failing_op().empty() ? t.reason() : t.failing_op() + ": " + t.error();
  return absl::StrFormat("%-6d %-10s %-9d %-8d %-5d %-9d %-11s %-10s %-10s %s", t.id(), t.kind(), t.mutations(),
                         t.rejected(), t.messages(), t.elements(), absl::StrCat(t.queue_wait_max_us() / 1000.0, "ms"),
                         absl::StrCat(t.commit_us() / 1000.0, "ms"), t.result(), detail);
}

// txns --follow: the last --limit, then each new one as it finishes.
int TxnsFollow() {
  auto stub = ruleplane::v1::Diagnostics::NewStub(Dial());
  grpc::ClientContext ctx;  // no deadline: follows until interrupted or --count
  ruleplane::v1::WatchTransactionsRequest req;
  req.set_backlog(absl::GetFlag(FLAGS_limit));
  auto reader = stub->WatchTransactions(&ctx, req);
  const bool json = absl::GetFlag(FLAGS_json);
  const uint32_t count = absl::GetFlag(FLAGS_count);
  if (!json) {
    absl::PrintF("%-6s %-10s %-9s %-8s %-5s %-9s %-11s %-10s %-10s %s\n", "ID", "KIND", "MUTATIONS", "REJECTED",
                 "MSGS", "ELEMENTS", "QUEUE_WAIT", "COMMIT", "RESULT", "DETAIL");
  }
  ruleplane::v1::Transaction t;
  uint32_t seen = 0;
  while (reader->Read(&t)) {
    if (json) {
      std::string out;
      google::protobuf::util::JsonPrintOptions o;
      o.preserve_proto_field_names = true;
      (void)google::protobuf::util::MessageToJsonString(t, &out, o);  // a parsed message always prints
      std::cout << out << std::endl;
    } else {
      std::cout << TxnLine(t) << std::endl;  // flushed: followed live, often through a pipe
    }
    if (count && ++seen >= count) {
      ctx.TryCancel();
      while (reader->Read(&t)) {
      }
      reader->Finish().IgnoreError();  // cancelled by us: not an error
      return kOk;
    }
  }
  return Report(reader->Finish());
}

std::string ProcessText(const ruleplane::v1::LockProcess& p) {
  if (p.pid() < 0) return "an open-file-description lock";
  if (!p.known()) return absl::StrCat("pid ", p.pid(), " (gone)");
  return absl::StrCat(p.name(), " (pid ", p.pid(), ")",
                      p.parent_pid() > 0 ? absl::StrCat(" child of ", p.parent_name(), " (pid ", p.parent_pid(), ")")
                                         : "");
}

int Locks() {
  auto stub = ruleplane::v1::Diagnostics::NewStub(Dial());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  ruleplane::v1::GetLockStatsRequest req;
  req.set_recent(absl::GetFlag(FLAGS_recent));
  ruleplane::v1::GetLockStatsResponse r;
  if (int rc = Report(stub->GetLockStats(&ctx, req, &r)); rc) return rc;
  const bool problem = !r.monitoring() || r.file_state() != "file" || r.backends().mixed();
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(r);
    return problem ? kFailed : kOk;
  }
  if (!r.monitoring()) {
    std::cout << "xtables lock monitor: off (config xtables_lock.enabled)\n";
    return kFailed;
  }
  absl::PrintF("lock file:     %s (%s)%s\n", r.path(), r.file_state(),
               r.file_detail().empty() ? "" : "\n               " + r.file_detail());
  if (r.has_current()) {
    absl::PrintF("held now:      %s for %s, %d waiting\n", ProcessText(r.current().holder()),
                 ruleplane::tools::HumanSeconds(r.current().held_seconds()), r.waiters_size());
  } else {
    absl::PrintF("held now:      no\n");
  }
  for (const auto& w : r.waiters()) absl::PrintF("  waiting:     %s\n", ProcessText(w));
  absl::PrintF("holds:         %d seen, %d >= %s, longest %s, %d opens\n", r.holds(), r.long_holds(),
               ruleplane::tools::HumanSeconds(r.long_hold_threshold_seconds()),
               ruleplane::tools::HumanSeconds(r.longest_hold_seconds()), r.opens());
  absl::PrintF("backends:      %s%s\n", r.backends().summary(),
               r.backends().error().empty() ? "" : " (nf_tables unreadable: " + r.backends().error() + ")");
  if (r.backends().mixed()) std::cout << "WARNING: both iptables backends hold tables on this node\n";
  if (!r.recent().empty()) {
    absl::PrintF("\n%-24s %-10s %-8s %s\n", "STARTED (UTC)", "HELD", "WAITERS", "HOLDER");
    for (const auto& h : r.recent()) {
      absl::PrintF("%-24s %-10s %-8d %s\n",
                   absl::FormatTime("%Y-%m-%d %H:%M:%E3S", absl::FromUnixMicros(h.start_unix_us()), absl::UTCTimeZone()),
                   ruleplane::tools::HumanSeconds(h.held_seconds()), h.max_waiters(), ProcessText(h.holder()));
    }
  }
  if (!r.holders().empty()) {
    absl::PrintF("\n%-20s %-7s %-10s %-10s %s\n", "HOLDER", "HOLDS", "TOTAL", "LONGEST", "LATEST");
    for (const auto& h : r.holders()) {
      absl::PrintF("%-20s %-7d %-10s %-10s %s\n", h.holder(), h.holds(),
                   ruleplane::tools::HumanSeconds(h.total_seconds()), ruleplane::tools::HumanSeconds(h.longest_seconds()),
                   h.example());
    }
  }
  return problem ? kFailed : kOk;
}

int Bringup() {
  auto stub = ruleplane::v1::Diagnostics::NewStub(Dial());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  ruleplane::v1::GetBringupReportRequest req;
  req.set_previous(absl::GetFlag(FLAGS_previous));
  ruleplane::v1::GetBringupReportResponse r;
  if (int rc = Report(stub->GetBringupReport(&ctx, req, &r)); rc) return rc;
  const std::string svg_path = absl::GetFlag(FLAGS_svg);
  if (!svg_path.empty()) {
    std::vector<ruleplane::v1::BringupReport> previous(r.previous().begin(), r.previous().end());
    std::ofstream out(svg_path);
    out << ruleplane::tools::BringupSvg(r.current(), previous);
    out.close();
    if (!out) {
      std::fprintf(stderr, "ruleplanectl: write %s failed\n", svg_path.c_str());
      return kFailed;
    }
  }
  const auto& c = r.current();
  const int rc = c.outcome() == "ready" ? kOk : kFailed;
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(r);
    return rc;
  }
  absl::PrintF("bring-up %s: pid %d, %s, %s%s\n", c.id(), c.pid(),
               c.first_since_boot() ? "first start since boot" : "restart", c.outcome(),
               c.ready_seconds() > 0 ? ", ready after " + ruleplane::tools::HumanSeconds(c.ready_seconds()) : "");
  absl::PrintF("process started %.2fs after boot (%s UTC)\n\n", c.process_start_since_boot_seconds(),
               absl::FormatTime("%Y-%m-%d %H:%M:%E3S", absl::FromUnixMicros(c.process_start_unix_us()),
                                absl::UTCTimeZone()));
  absl::PrintF("%-26s %-8s %-10s %-10s %s\n", "PHASE", "STATUS", "AT", "TOOK", "DETAIL");
  for (const auto& p : c.phases()) {
    absl::PrintF("%-26s %-8s %-10s %-10s %s\n", p.name(), p.status(),
                 "+" + ruleplane::tools::HumanSeconds(p.start_seconds()),
                 p.end_seconds() == p.start_seconds()
                     ? "-"
                     : ruleplane::tools::HumanSeconds(p.end_seconds() - p.start_seconds()) +
                           (p.status() == "running" ? " so far" : ""),
                 p.detail());
  }
  if (!r.previous().empty()) {
    absl::PrintF("\nprevious starts (oldest first):\n");
    for (const auto& p : r.previous()) {
      absl::PrintF("  %s  %-8s %s%s\n",
                   absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMicros(p.process_start_unix_us()),
                                    absl::UTCTimeZone()),
                   p.outcome(), p.ready_seconds() > 0 ? "ready after " + ruleplane::tools::HumanSeconds(p.ready_seconds()) : "",
                   p.first_since_boot() ? " (first since boot)" : "");
    }
  }
  if (!svg_path.empty()) absl::PrintF("\nwaterfall: %s\n", svg_path);
  return rc;
}

// SNAT saturation from Diagnostics/GetSnatStats. An agent without it
// (older, or built without SNAT) answers UNIMPLEMENTED: "not available".
int Snat() {
  auto stub = ruleplane::v1::Diagnostics::NewStub(Dial());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  ruleplane::v1::GetSnatStatsResponse r;
  grpc::Status st = stub->GetSnatStats(&ctx, {}, &r);
  if (st.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    std::fprintf(stderr, "ruleplanectl: snat: not available: this agent has no Diagnostics/GetSnatStats (%s)\n",
                 st.error_message().c_str());
    return kFailed;
  }
  if (int rc = Report(st); rc) return rc;
  // Exit 1 when something is exhausted, the snapshot is incomplete or SNAT
  // waits for its egress interface, so a script can alert on it.
  bool alert = !r.error().empty() || r.exhausted_destinations() > 0 || !r.egress_waiting().empty();
  for (const auto& t : r.busiest()) alert = alert || t.utilization() >= 1.0;
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(r);
    return alert ? kFailed : kOk;
  }
  absl::PrintF("mode:           %s\n", r.mode());
  if (!r.egress_waiting().empty()) absl::PrintF("WAITING:        %s\n", r.egress_waiting());
  if (r.mode() == "off") return alert ? kFailed : kOk;
  absl::PrintF("settings:       %s\n", r.settings());
  if (!r.bpf_hook().empty()) absl::PrintF("tc hook:        %s\n", r.bpf_hook());
  if (!r.bpf_l4_checksum().empty()) {
    absl::PrintF("datapath:       l4 checksums %s, clock %s, exclusions %s\n", r.bpf_l4_checksum(), r.bpf_clock(),
                 r.bpf_exclusions());
  }
  absl::PrintF("translations:   %d (capacity %d per destination and egress address: ports %s)\n",
               r.translations(), r.port_capacity(), r.port_range());
  if (r.node_socket_skips() > 0) {
    absl::PrintF("node sockets:   %d candidate ports skipped because a node socket held them towards the same "
                 "remote\n",
                 r.node_socket_skips());
  }
  if (r.ports_shared_with_node() > 0) {
    absl::PrintF("WARNING:        %d of these ports are also the node's ephemeral ports (net.ipv4.ip_local_port_range "
                 "%s): a node connection from an egress address and a translated flow can take the same port; set "
                 "snat_port_range outside it or reserve it in net.ipv4.ip_local_reserved_ports\n",
                 r.ports_shared_with_node(), r.node_ephemeral_ports());
  }
  if (r.flow_table_capacity() > 0) {
    absl::PrintF("flow table:     %d of %d (%.0f%%; when full, new flows evict the least recently used: raise "
                 "snat_bpf_max_flows)\n",
                 r.translations(), r.flow_table_capacity(), 100.0 * r.translations() / r.flow_table_capacity());
  }
  absl::PrintF("failovers:      %d (steered destinations %d, exhausted %d)\n", r.failovers(),
               r.steered_destinations(), r.exhausted_destinations());
  if (!r.error().empty()) absl::PrintF("WARNING:        %s\n", r.error());
  if (!r.egress().empty()) {
    absl::PrintF("\n%-5s %-40s %-8s %-13s %-8s %-12s %s\n", "SLOT", "EGRESS", "IN POOL", "TRANSLATIONS", "BUSIEST",
                 "ALLOCATIONS", "EXHAUSTED");
    for (const auto& e : r.egress()) {
      absl::PrintF("%-5d %-40s %-8s %-13d %-8d %-12d %d\n", e.slot(), e.address(), e.in_pool() ? "yes" : "no",
                   e.translations(), e.busiest_translations(), e.allocations(), e.exhausted());
    }
  }
  if (!r.busiest().empty()) {
    absl::PrintF("\n%-40s %-46s %-6s %-13s %s\n", "EGRESS", "DESTINATION", "PROTO", "TRANSLATIONS", "USED");
    for (const auto& t : r.busiest()) {
      absl::PrintF("%-40s %-46s %-6s %-13s %.1f%%\n", t.egress_ip(), absl::StrCat(t.dst_ip(), ":", t.dst_port()),
                   t.proto(), absl::StrCat(t.translations(), "/", t.capacity()), t.utilization() * 100);
    }
  }
  if (!r.drops().empty()) {
    std::map<std::string, uint64_t> drops(r.drops().begin(), r.drops().end());
    absl::PrintF("\ndrops:");
    for (const auto& [reason, n] : drops) absl::PrintF(" %s=%d", reason, n);
    absl::PrintF("\n");
  }
  return alert ? kFailed : kOk;
}

// Usable as an exec probe: 0 when SERVING.
int Health() {
  auto stub = grpc::health::v1::Health::NewStub(Dial());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("ruleplane");
  grpc::health::v1::HealthCheckResponse r;
  if (int rc = Report(stub->Check(&ctx, req, &r)); rc) return rc;
  bool serving = r.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(r);
  } else {
    std::cout << (serving ? "SERVING" : "NOT_SERVING") << "\n";
  }
  return serving ? kOk : kFailed;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "ruleplanectl [--socket PATH] [--json] COMMAND\n"
      "commands: status | attachments | txns [--limit N] [--follow [--count N]] | locks [--recent N] |\n"
      "          ruleset | diff | snat | bringup [--svg FILE] [--previous N] | health\n"
      "exit codes: 0 ok, 1 agent error or not ready, 2 usage, 3 agent not reachable");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() != 2) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return kUsage;
  }
  std::string cmd = rest[1];
  if (cmd == "status") return Status();
  if (cmd == "attachments") return Attachments();
  if (cmd == "txns") return absl::GetFlag(FLAGS_follow) ? TxnsFollow() : Txns();
  if (cmd == "locks") return Locks();
  if (cmd == "bringup") return Bringup();
  if (cmd == "snat") return Snat();
  if (cmd == "ruleset") return Ruleset();
  if (cmd == "diff") return Diff();
  if (cmd == "health") return Health();
  std::fprintf(stderr, "ruleplanectl: unknown command \"%s\"\n%s\n", cmd.c_str(), absl::ProgramUsageMessage().data());
  return kUsage;
}
