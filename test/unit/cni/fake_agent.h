// FakeAgent: an in-process ruleplane.v1.Cni server on a fresh unix socket in
// a private temp directory. Records every request; answers with a
// configurable status after an optional delay (the delay ends early when the
// client cancels, so teardown is quick). Thread-safe: gRPC threads call the
// handlers, the test thread configures and reads.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <system_error>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ruleplane/v1/cni.grpc.pb.h"

namespace ruleplane::cni::testing {

// A private directory under /tmp (short enough for sun_path), removed with
// everything in it when the object goes away.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/rpcni.XXXXXX";
    if (mkdtemp(tmpl) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;  // best effort: a leftover temp dir is harmless
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class FakeAgent final : public v1::Cni::Service {
 public:
  FakeAgent() : socket_path_(dir_.path() + "/agent.sock") {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket_path_, grpc::InsecureServerCredentials());
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~FakeAgent() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  bool started() const { return server_ != nullptr; }
  const std::string& socket_path() const { return socket_path_; }

  void SetReply(grpc::Status s) {
    absl::MutexLock l(&mu_);
    reply_ = std::move(s);
  }
  void SetDelay(absl::Duration d) {
    absl::MutexLock l(&mu_);
    delay_ = d;
  }
  void SetReady(bool ready, std::string reason) {
    absl::MutexLock l(&mu_);
    ready_ = ready;
    reason_ = std::move(reason);
  }

  std::vector<v1::CniRequest> adds() const { return Get(&FakeAgent::adds_); }
  std::vector<v1::CniRequest> dels() const { return Get(&FakeAgent::dels_); }
  std::vector<v1::CniRequest> checks() const { return Get(&FakeAgent::checks_); }
  std::vector<v1::CniGcRequest> gcs() const { return Get(&FakeAgent::gcs_); }
  int status_calls() const {
    absl::MutexLock l(&mu_);
    return status_calls_;
  }

  grpc::Status Add(grpc::ServerContext* ctx, const v1::CniRequest* req, v1::CniResponse*) override {
    return Record(ctx, *req, &adds_);
  }
  grpc::Status Del(grpc::ServerContext* ctx, const v1::CniRequest* req, v1::CniResponse*) override {
    return Record(ctx, *req, &dels_);
  }
  grpc::Status Check(grpc::ServerContext* ctx, const v1::CniRequest* req, v1::CniResponse*) override {
    return Record(ctx, *req, &checks_);
  }
  grpc::Status Gc(grpc::ServerContext* ctx, const v1::CniGcRequest* req, v1::CniResponse*) override {
    return Record(ctx, *req, &gcs_);
  }
  grpc::Status Status(grpc::ServerContext* ctx, const v1::CniStatusRequest*, v1::CniStatusResponse* resp) override {
    grpc::Status reply;
    {
      absl::MutexLock l(&mu_);
      ++status_calls_;
      resp->set_ready(ready_);
      resp->set_reason(reason_);
      reply = reply_;
    }
    Wait(ctx);
    return reply;
  }

 private:
  template <typename T>
  std::vector<T> Get(std::vector<T> FakeAgent::*field) const {
    absl::MutexLock l(&mu_);
    return this->*field;
  }

  template <typename T>
  grpc::Status Record(grpc::ServerContext* ctx, const T& req, std::vector<T>* log) {
    grpc::Status reply;
    {
      absl::MutexLock l(&mu_);
      log->push_back(req);
      reply = reply_;
    }
    Wait(ctx);
    return reply;
  }

  void Wait(grpc::ServerContext* ctx) {
    absl::Duration delay;
    {
      absl::MutexLock l(&mu_);
      delay = delay_;
    }
    absl::Time end = absl::Now() + delay;
    while (absl::Now() < end && !ctx->IsCancelled()) absl::SleepFor(absl::Milliseconds(5));
  }

  TempDir dir_;
  std::string socket_path_;
  std::unique_ptr<grpc::Server> server_;

  mutable absl::Mutex mu_;
  grpc::Status reply_ ABSL_GUARDED_BY(mu_);
  absl::Duration delay_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  bool ready_ ABSL_GUARDED_BY(mu_) = true;
  std::string reason_ ABSL_GUARDED_BY(mu_);
  int status_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::CniRequest> adds_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::CniRequest> dels_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::CniRequest> checks_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::CniGcRequest> gcs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ruleplane::cni::testing
