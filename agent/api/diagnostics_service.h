// Diagnostics service: read-only views for operators and ruleplanectl.
// Kernel reads run on the ReaderThread; model reads go through the engine's
// queue (Engine::Inspect) so they see a consistent state.
#pragma once

#include "agent/api/context.h"
#include "ruleplane/v1/diagnostics.grpc.pb.h"

namespace ruleplane::api {

class DiagnosticsService final : public v1::Diagnostics::CallbackService {
 public:
  explicit DiagnosticsService(ServiceContext* ctx) : ctx_(ctx) {}

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* c, const v1::GetStatusRequest* req,
                                      v1::GetStatusResponse* resp) override;
  grpc::ServerUnaryReactor* ListAttachments(grpc::CallbackServerContext* c, const v1::ListAttachmentsRequest* req,
                                            v1::ListAttachmentsResponse* resp) override;
  grpc::ServerUnaryReactor* ListTransactions(grpc::CallbackServerContext* c,
                                             const v1::ListTransactionsRequest* req,
                                             v1::ListTransactionsResponse* resp) override;
  grpc::ServerUnaryReactor* DumpRuleset(grpc::CallbackServerContext* c, const v1::DumpRulesetRequest* req,
                                        v1::DumpRulesetResponse* resp) override;
  grpc::ServerUnaryReactor* DiffDesiredActual(grpc::CallbackServerContext* c,
                                              const v1::DiffDesiredActualRequest* req,
                                              v1::DiffDesiredActualResponse* resp) override;
  // SNAT saturation snapshot (diagnostics_snat.cc).
  grpc::ServerUnaryReactor* GetSnatStats(grpc::CallbackServerContext* c, const v1::GetSnatStatsRequest* req,
                                         v1::GetSnatStatsResponse* resp) override;
  // Operations (diagnostics_ops.cc).
  grpc::ServerWriteReactor<v1::Transaction>* WatchTransactions(grpc::CallbackServerContext* c,
                                                               const v1::WatchTransactionsRequest* req) override;
  grpc::ServerUnaryReactor* GetLockStats(grpc::CallbackServerContext* c, const v1::GetLockStatsRequest* req,
                                         v1::GetLockStatsResponse* resp) override;
  grpc::ServerUnaryReactor* GetBringupReport(grpc::CallbackServerContext* c,
                                             const v1::GetBringupReportRequest* req,
                                             v1::GetBringupReportResponse* resp) override;

 private:
  ServiceContext* ctx_;
};

}  // namespace ruleplane::api
