#include "agent/api/context.h"

#include <grpcpp/server_context.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace ruleplane::api {

absl::Status ServiceContext::Authorize(grpc::CallbackServerContext* ctx, bool mutating, const char* method) const {
  std::optional<PeerCred> cred = listener_ ? listener_->Lookup(ctx->peer()) : std::nullopt;
  if (!cred) {
    return absl::PermissionDeniedError(absl::StrCat(method, ": unknown peer ", ctx->peer(), " (no credentials)"));
  }
  if (!mutating) return absl::OkStatus();
  const auto& uids = options_.mutation_uids;
  const auto& gids = options_.mutation_gids;
  if (std::find(uids.begin(), uids.end(), cred->uid) != uids.end() ||
      std::find(gids.begin(), gids.end(), cred->gid) != gids.end()) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(method, ": uid ", cred->uid, " gid ", cred->gid, " (pid ", cred->pid,
                                                  ") may not mutate; allowed uids/gids are configured by "
                                                  "mutation_uids/mutation_gids"));
}

void ServiceContext::SetReady(bool ready, std::string reason) {
  absl::MutexLock lock(&mu_);
  reason_ = std::move(reason);
  ready_.store(ready);
}

std::string ServiceContext::not_ready_reason() const {
  absl::MutexLock lock(&mu_);
  return reason_;
}

}  // namespace ruleplane::api
