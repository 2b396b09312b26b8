// Cni service: validates, translates proto -> Mutation, enqueues, and
// finishes the reactor from the engine's completion. Never blocks a gRPC
// thread on the kernel (CHECK reads on the ReaderThread).
#pragma once

#include "agent/api/context.h"
#include "ruleplane/v1/cni.grpc.pb.h"

namespace ruleplane::api {

class CniService final : public v1::Cni::CallbackService {
 public:
  explicit CniService(ServiceContext* ctx) : ctx_(ctx) {}

  grpc::ServerUnaryReactor* Add(grpc::CallbackServerContext* c, const v1::CniRequest* req,
                                v1::CniResponse* resp) override;
  grpc::ServerUnaryReactor* Del(grpc::CallbackServerContext* c, const v1::CniRequest* req,
                                v1::CniResponse* resp) override;
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* c, const v1::CniRequest* req,
                                  v1::CniResponse* resp) override;
  grpc::ServerUnaryReactor* Gc(grpc::CallbackServerContext* c, const v1::CniGcRequest* req,
                               v1::CniResponse* resp) override;
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* c, const v1::CniStatusRequest* req,
                                   v1::CniStatusResponse* resp) override;

 private:
  // Admission common to Add/Del/Check: authorization, readiness, limits.
  absl::Status Admit(grpc::CallbackServerContext* c, const v1::CniRequest& req, bool mutating,
                     const char* method) const;
  // `is_add`: a successful one may be the first ADD the agent served (bring-up report).
  void SubmitAndFinish(grpc::ServerUnaryReactor* reactor, core::Mutation m, v1::CniResponse* resp,
                       bool is_add = false);
  ServiceContext* ctx_;
};

}  // namespace ruleplane::api
