// ruleplanectl: the operator's view of a running ruleplane-agent over its
// gRPC socket. Human tables by default, --json for machines.
//
// Exit codes (stable; scripts and probes rely on them):
//   0  ok / healthy
//   1  the agent answered with an error, or is not ready/healthy
//   2  usage error
//   3  the agent is not reachable (socket missing, refused, timeout)
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <iostream>
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

ABSL_FLAG(std::string, socket, "/run/ruleplane/ruleplane.sock", "the agent's unix socket");
ABSL_FLAG(bool, json, false, "print JSON (protobuf JSON mapping) instead of tables");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(5), "deadline for each call");
ABSL_FLAG(uint32_t, limit, 50, "txns: how many transactions");

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
    absl::PrintF("snat backend:   %s\n", r.snat_backend());
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
      "commands: status | attachments | txns [--limit N] | ruleset | diff | health\n"
      "exit codes: 0 ok, 1 agent error or not ready, 2 usage, 3 agent not reachable");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() != 2) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return kUsage;
  }
  std::string cmd = rest[1];
  if (cmd == "status") return Status();
  if (cmd == "attachments") return Attachments();
  if (cmd == "txns") return Txns();
  if (cmd == "ruleset") return Ruleset();
  if (cmd == "diff") return Diff();
  if (cmd == "health") return Health();
  std::fprintf(stderr, "ruleplanectl: unknown command \"%s\"\n%s\n", cmd.c_str(), absl::ProgramUsageMessage().data());
  return kUsage;
}
