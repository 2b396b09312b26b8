#include "agent/api/diagnostics_service.h"

#include <linux/netfilter.h>
#include <sys/utsname.h>

#include "absl/strings/str_cat.h"
#include "agent/api/grpc_status.h"
#include "agent/api/ruleset_text.h"
#include "agent/txn/reconcile.h"
#include "agent/txn/state_proto.h"

namespace ruleplane::api {
namespace {

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* c, const absl::Status& s) {
  grpc::ServerUnaryReactor* r = c->DefaultReactor();
  r->Finish(ToGrpcStatus(s));
  return r;
}

std::string KernelRelease() {
  utsname u{};
  return uname(&u) == 0 ? u.release : "";
}

std::string ElementsText(const std::vector<render::Element>& els, size_t max = 20) {
  std::string out;
  for (size_t i = 0; i < els.size() && i < max; ++i) {
    absl::StrAppend(&out, i ? ", " : "", els[i].text.empty() ? absl::StrCat(els[i].key.size(), "-byte key") : els[i].text);
  }
  if (els.size() > max) absl::StrAppend(&out, ", ... (", els.size() - max, " more)");
  return out;
}

}  // namespace

grpc::ServerUnaryReactor* DiagnosticsService::GetStatus(grpc::CallbackServerContext* c, const v1::GetStatusRequest*,
                                                        v1::GetStatusResponse* resp) {
  if (absl::Status s = ctx_->Authorize(c, false, "Diagnostics/GetStatus"); !s.ok()) return FinishNow(c, s);
  resp->set_ready(ctx_->ready());
  if (!ctx_->ready()) resp->set_reason(ctx_->not_ready_reason());
  resp->set_version(ctx_->options().version);
  resp->set_kernel(KernelRelease());
  resp->set_table(ctx_->options().table);
  resp->set_table_owner(ctx_->options().table_owner);
  resp->set_snat_backend(std::string(core::SnatModeName(ctx_->engine()->snat_mode())));
  if (ctx_->options().snat_stats) {
    if (std::optional<backend::SnatStats> stats = ctx_->options().snat_stats()) {
      resp->set_snat_egress_waiting(stats->egress_waiting);
    }
  }
  resp->set_queue_depth(ctx_->engine()->QueueDepth());
  resp->set_drift_repairs(ctx_->engine()->drift_repairs());
  resp->set_uptime_seconds(absl::ToDoubleSeconds(absl::Now() - ctx_->started()));
  std::vector<txn::CommitInfo> commits = ctx_->engine()->RecentCommits();
  resp->set_commits(commits.empty() ? 0 : commits.back().id);
  // Counts come from the writer's view; a short inspection is enough here.
  grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
  ServiceContext* ctx = ctx_;
  ctx_->reader()->Post([ctx, reactor, resp](bool cancelled) {
    if (!cancelled && ctx->ready()) {
      absl::Status s = ctx->engine()->Inspect([resp](const core::DesiredState& st, const render::ElementIndex& idx) {
        resp->set_attachments(st.size());
        resp->set_elements(idx.size());
        resp->set_orphan_elements(idx.orphans());
      });
      if (!s.ok()) resp->set_reason(std::string(s.message()));
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* DiagnosticsService::ListAttachments(grpc::CallbackServerContext* c,
                                                              const v1::ListAttachmentsRequest* req,
                                                              v1::ListAttachmentsResponse* resp) {
  if (absl::Status s = ctx_->Authorize(c, false, "Diagnostics/ListAttachments"); !s.ok()) return FinishNow(c, s);
  grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
  ServiceContext* ctx = ctx_;
  v1::ListAttachmentsRequest filter = *req;
  ctx_->reader()->Post([ctx, reactor, resp, filter](bool cancelled) {
    if (cancelled) return reactor->Finish(ToGrpcStatus(absl::UnavailableError("agent is shutting down")));
    absl::Status s = ctx->engine()->Inspect([&](const core::DesiredState& st, const render::ElementIndex&) {
      for (const auto& [key, a] : st.attachments()) {
        if (!filter.pod_namespace().empty() && a.pod_namespace != filter.pod_namespace()) continue;
        if (!filter.container_id().empty() && key.container_id.rfind(filter.container_id(), 0) != 0) continue;
        *resp->add_attachments() = txn::ToProto(a);
      }
    });
    reactor->Finish(ToGrpcStatus(s));
  });
  return reactor;
}

grpc::ServerUnaryReactor* DiagnosticsService::ListTransactions(grpc::CallbackServerContext* c,
                                                               const v1::ListTransactionsRequest* req,
                                                               v1::ListTransactionsResponse* resp) {
  if (absl::Status s = ctx_->Authorize(c, false, "Diagnostics/ListTransactions"); !s.ok()) return FinishNow(c, s);
  std::vector<txn::CommitInfo> commits = ctx_->engine()->RecentCommits();
  size_t limit = req->limit() ? req->limit() : 50;
  size_t first = commits.size() > limit ? commits.size() - limit : 0;
  for (size_t i = first; i < commits.size(); ++i) {
    *resp->add_transactions() = TransactionToProto(commits[i]);  // commit_hub.h: one conversion for list and watch
  }
  return FinishNow(c, absl::OkStatus());
}

grpc::ServerUnaryReactor* DiagnosticsService::DumpRuleset(grpc::CallbackServerContext* c,
                                                          const v1::DumpRulesetRequest*, v1::DumpRulesetResponse* resp) {
  if (absl::Status s = ctx_->Authorize(c, false, "Diagnostics/DumpRuleset"); !s.ok()) return FinishNow(c, s);
  grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
  ServiceContext* ctx = ctx_;
  ctx_->reader()->Post([ctx, reactor, resp](bool cancelled) {
    if (cancelled) return reactor->Finish(ToGrpcStatus(absl::UnavailableError("agent is shutting down")));
    absl::StatusOr<txn::KernelTable> t = ctx->read_port()->Dump(ctx->options().table, NFPROTO_INET);
    if (!t.ok()) return reactor->Finish(ToGrpcStatus(t.status()));
    resp->set_text(KernelTableToText(ctx->options().table, *t));
    resp->set_generation(t->generation);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* DiagnosticsService::DiffDesiredActual(grpc::CallbackServerContext* c,
                                                                const v1::DiffDesiredActualRequest*,
                                                                v1::DiffDesiredActualResponse* resp) {
  if (absl::Status s = ctx_->Authorize(c, false, "Diagnostics/DiffDesiredActual"); !s.ok()) return FinishNow(c, s);
  grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
  ServiceContext* ctx = ctx_;
  ctx_->reader()->Post([ctx, reactor, resp](bool cancelled) {
    if (cancelled) return reactor->Finish(ToGrpcStatus(absl::UnavailableError("agent is shutting down")));
    txn::DesiredElements desired;
    render::BaseRuleset base;
    absl::Status s = ctx->engine()->Inspect([&](const core::DesiredState&, const render::ElementIndex&) {
      base = ctx->engine()->base();  // copied on the writer: Reconfigure() may replace it
      // Pods plus configuration (SNAT exclusions, interfaces) and dynamic
      // (failover steering) elements.
      desired = ctx->engine()->DesiredElementsNow();
    });
    if (!s.ok()) return reactor->Finish(ToGrpcStatus(s));
    absl::StatusOr<txn::KernelTable> t = ctx->read_port()->Dump(ctx->options().table, NFPROTO_INET);
    if (!t.ok()) return reactor->Finish(ToGrpcStatus(t.status()));
    // The differences are exactly what a resync would commit.
    std::vector<render::Op> ops = txn::Reconcile(base, desired, *t, nullptr);
    for (const render::Op& o : ops) {
      std::string line = render::OpSummary(o);
      if (const auto* a = std::get_if<render::op::AddElements>(&o)) {
        line = absl::StrCat("missing in kernel: ", a->set, " { ", ElementsText(a->elements), " }");
      } else if (const auto* d = std::get_if<render::op::DeleteElements>(&o)) {
        std::vector<render::Element> els = d->elements;
        for (auto& e : els) {
          auto set = t->sets.find(d->set);
          if (set != t->sets.end()) {
            e.text = DecodeTyped(set->second.key_type, e.key);
          }
        }
        line = absl::StrCat("not desired but in kernel: ", d->set, " { ", ElementsText(els), " }");
      } else {
        line = absl::StrCat("kernel differs: would ", line);
      }
      resp->add_differences(std::move(line));
    }
    resp->set_generation(t->generation);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace ruleplane::api
