#include "agent/api/cni_service.h"

#include <linux/netfilter.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "agent/api/grpc_status.h"
#include "agent/render/render.h"
#include "agent/txn/state_proto.h"
#include "glog/logging.h"

namespace ruleplane::api {
namespace {

constexpr size_t kMaxIdLen = 256;       // container ids are 64 hex chars in practice
constexpr size_t kMaxIfnameLen = 15;    // IFNAMSIZ - 1
constexpr size_t kMaxPathLen = 4096;
constexpr int kMaxIps = 16;
constexpr int kMaxPortMappings = 1024;

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* c, const absl::Status& s) {
  grpc::ServerUnaryReactor* r = c->DefaultReactor();
  r->Finish(ToGrpcStatus(s));
  return r;
}

absl::Status CheckLimits(const v1::CniRequest& req) {
  if (req.container_id().empty()) return absl::InvalidArgumentError("container_id: empty (CNI_CONTAINERID)");
  if (req.container_id().size() > kMaxIdLen) {
    return absl::InvalidArgumentError(absl::StrCat("container_id: longer than ", kMaxIdLen, " bytes"));
  }
  if (req.ifname().empty() || req.ifname().size() > kMaxIfnameLen) {
    return absl::InvalidArgumentError(
        absl::StrCat("ifname: \"", req.ifname(), "\" must be 1-", kMaxIfnameLen, " bytes (CNI_IFNAME)"));
  }
  if (req.netns().size() > kMaxPathLen) return absl::InvalidArgumentError("netns: path too long");
  if (req.attachment().ips_size() > kMaxIps) {
    return absl::InvalidArgumentError(absl::StrCat("attachment.ips: more than ", kMaxIps, " addresses"));
  }
  if (req.attachment().port_mappings_size() > kMaxPortMappings) {
    return absl::InvalidArgumentError(
        absl::StrCat("attachment.port_mappings: more than ", kMaxPortMappings, " mappings"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CniService::Admit(grpc::CallbackServerContext* c, const v1::CniRequest& req, bool mutating,
                               const char* method) const {
  if (absl::Status s = ctx_->Authorize(c, mutating, method); !s.ok()) return s;
  if (!ctx_->ready()) {
    return absl::UnavailableError(absl::StrCat("agent not ready: ", ctx_->not_ready_reason()));
  }
  return CheckLimits(req);
}

void CniService::SubmitAndFinish(grpc::ServerUnaryReactor* reactor, core::Mutation m, v1::CniResponse* resp,
                                 bool is_add) {
  ServiceContext* ctx = ctx_;
  ctx_->engine()->Submit(std::move(m), [reactor, resp, ctx, is_add](const txn::MutationResult& r) {
    if (is_add && r.status.ok() && ctx->options().bringup != nullptr &&
        ctx->options().bringup->InstantOnce(
            bringup::kFirstCniAdd, bringup::PhaseStatus::kOk,
            absl::StrCat("commit ", r.commit_id, " queue_wait=", absl::ToDoubleMilliseconds(r.queue_wait), "ms"))) {
      // The history file is written off the writer thread (fsync).
      ctx->reader()->Post([ctx](bool) {
        if (absl::Status s = ctx->options().bringup->Save(); !s.ok()) LOG(WARNING) << s;
      });
    }
    resp->set_commit_id(r.commit_id);
    resp->set_queue_wait_us(static_cast<uint64_t>(absl::ToInt64Microseconds(r.queue_wait)));
    resp->set_commit_us(static_cast<uint64_t>(absl::ToInt64Microseconds(r.commit)));
    reactor->Finish(ToGrpcStatus(r.status));
  });
}

grpc::ServerUnaryReactor* CniService::Add(grpc::CallbackServerContext* c, const v1::CniRequest* req,
                                          v1::CniResponse* resp) {
  if (absl::Status s = Admit(c, *req, true, "Cni/Add"); !s.ok()) return FinishNow(c, s);
  if (req->netns().empty()) return FinishNow(c, absl::InvalidArgumentError("netns: empty (CNI_NETNS) on ADD"));
  absl::StatusOr<core::Attachment> a = txn::FromProto(req->attachment());
  if (!a.ok()) {
    return FinishNow(c, absl::InvalidArgumentError(absl::StrCat("attachment.", a.status().message())));
  }
  // The CNI environment is the identity; the parsed attachment carries the rest.
  a->key = {req->container_id(), req->ifname()};
  a->netns = req->netns();
  grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
  SubmitAndFinish(reactor, core::Mutation::Upsert(*std::move(a)), resp, /*is_add=*/true);
  return reactor;
}

grpc::ServerUnaryReactor* CniService::Del(grpc::CallbackServerContext* c, const v1::CniRequest* req,
                                          v1::CniResponse* resp) {
  if (absl::Status s = Admit(c, *req, true, "Cni/Del"); !s.ok()) return FinishNow(c, s);
  grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
  SubmitAndFinish(reactor, core::Mutation::Delete({req->container_id(), req->ifname()}), resp);
  return reactor;
}

grpc::ServerUnaryReactor* CniService::Gc(grpc::CallbackServerContext* c, const v1::CniGcRequest* req,
                                         v1::CniResponse* resp) {
  if (absl::Status s = ctx_->Authorize(c, true, "Cni/Gc"); !s.ok()) return FinishNow(c, s);
  if (!ctx_->ready()) return FinishNow(c, absl::UnavailableError("agent not ready: " + ctx_->not_ready_reason()));
  std::vector<core::AttachmentKey> keep;
  keep.reserve(req->valid_attachments_size());
  for (const v1::AttachmentKey& k : req->valid_attachments()) keep.push_back({k.container_id(), k.ifname()});
  grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
  SubmitAndFinish(reactor, core::Mutation::Retain(std::move(keep)), resp);
  return reactor;
}

grpc::ServerUnaryReactor* CniService::Check(grpc::CallbackServerContext* c, const v1::CniRequest* req,
                                            v1::CniResponse*) {
  if (absl::Status s = Admit(c, *req, false, "Cni/Check"); !s.ok()) return FinishNow(c, s);
  grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
  core::AttachmentKey key{req->container_id(), req->ifname()};
  ServiceContext* ctx = ctx_;
  ctx_->reader()->Post([ctx, reactor, key](bool cancelled) {
    if (cancelled) {
      reactor->Finish(ToGrpcStatus(absl::UnavailableError("agent is shutting down")));
      return;
    }
    std::optional<core::Attachment> attachment;
    absl::Status inspected = ctx->engine()->Inspect(
        [&attachment, &key](const core::DesiredState& s, const render::ElementIndex&) {
          if (const core::Attachment* a = s.Find(key)) attachment = *a;
        });
    if (!inspected.ok()) return reactor->Finish(ToGrpcStatus(inspected));
    if (!attachment) {
      return reactor->Finish(ToGrpcStatus(absl::NotFoundError(
          absl::StrCat("attachment ", key.ToString(), " is not known to the agent (no ADD, or DEL/GC removed it)"))));
    }
    absl::StatusOr<txn::KernelTable> table = ctx->read_port()->Dump(ctx->options().table, NFPROTO_INET);
    if (!table.ok()) return reactor->Finish(ToGrpcStatus(table.status()));
    if (!table->exists) {
      return reactor->Finish(ToGrpcStatus(
          absl::NotFoundError(absl::StrCat("table inet ", ctx->options().table, " is missing from the kernel"))));
    }
    for (const render::SetElement& se : render::ElementsOf(*attachment)) {
      auto set = table->sets.find(se.set);
      bool found = false;
      if (set != table->sets.end()) {
        for (const txn::KernelElement& k : set->second.elements) {
          if (k.key == se.element.key) {
            found = k.data == se.element.data;
            break;
          }
        }
      }
      if (!found) {
        return reactor->Finish(ToGrpcStatus(absl::NotFoundError(absl::StrCat(
            "attachment ", key.ToString(), ": element ", se.element.text, " missing from set ", se.set,
            " of table inet ", ctx->options().table))));
      }
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* CniService::Status(grpc::CallbackServerContext* c, const v1::CniStatusRequest*,
                                             v1::CniStatusResponse* resp) {
  if (absl::Status s = ctx_->Authorize(c, false, "Cni/Status"); !s.ok()) return FinishNow(c, s);
  resp->set_ready(ctx_->ready());
  if (!ctx_->ready()) resp->set_reason(ctx_->not_ready_reason());
  return FinishNow(c, absl::OkStatus());
}

}  // namespace ruleplane::api
