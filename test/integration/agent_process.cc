#include "test/integration/agent_process.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"

namespace ruleplane::testing {

AgentProcess::AgentProcess(const TestNetns* ns, std::string dir,
                           std::vector<std::string> extra_args)
    : ns_(ns), dir_(std::move(dir)), extra_args_(std::move(extra_args)) {
  std::filesystem::create_directories(dir_);
}

AgentProcess::~AgentProcess() {
  if (pid_ > 0) Kill();
}

std::string AgentProcess::Log() const {
  std::ifstream in(dir_ + "/agent.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status AgentProcess::Start(absl::Duration timeout) {
  std::vector<std::string> args = {"ip",
                                   "netns",
                                   "exec",
                                   ns_->name(),
                                   RULEPLANE_AGENT_BIN,
                                   "--socket=" + socket(),
                                   "--state_dir=" + state_dir(),
                                   "--metrics_address="};
  for (const auto& a : extra_args_) args.push_back(a);
  std::string log = dir_ + "/agent.log";
  pid_ = fork();
  if (pid_ == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("agent exited with status ", WEXITSTATUS(status), ":\n", Log()));
    }
    // A fresh channel per attempt: a channel that saw "no such socket" would
    // otherwise sit in reconnect backoff after the agent is up.
    grpc::ChannelArguments cargs;
    cargs.SetInt(GRPC_ARG_SERVICE_CONFIG_DISABLE_RESOLUTION, 1);
    auto channel = grpc::CreateCustomChannel("unix:" + socket(), grpc::InsecureChannelCredentials(), cargs);
    auto diag = v1::Diagnostics::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    v1::GetStatusResponse r;
    if (diag->GetStatus(&ctx, {}, &r).ok() && r.ready()) {
      cni_ = v1::Cni::NewStub(channel);
      diag_ = std::move(diag);
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError("agent did not become ready:\n" + Log());
}

int AgentProcess::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void AgentProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

v1::CniRequest AddRequest(const std::string& cid, const std::string& ip, int host_port,
                          const std::string& netns) {
  v1::CniRequest req;
  req.set_command("ADD");
  req.set_container_id(cid);
  req.set_ifname("eth0");
  req.set_netns(netns);
  req.set_cni_version("1.0.0");
  req.set_network_name("test");
  v1::Attachment* a = req.mutable_attachment();
  a->set_container_id(cid);
  a->set_ifname("eth0");
  a->set_pod_namespace("default");
  a->set_pod_name("pod-" + cid);
  a->add_ips(ip);
  if (host_port) {
    v1::PortMapping* pm = a->add_port_mappings();
    pm->set_host_port(host_port);
    pm->set_container_port(80);
    pm->set_protocol("tcp");
  }
  return req;
}

grpc::Status CallAdd(v1::Cni::Stub* stub, const v1::CniRequest& req, absl::Duration timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  v1::CniResponse resp;
  return stub->Add(&ctx, req, &resp);
}

grpc::Status CallDel(v1::Cni::Stub* stub, const std::string& cid, absl::Duration timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  v1::CniRequest req;
  req.set_command("DEL");
  req.set_container_id(cid);
  req.set_ifname("eth0");
  v1::CniResponse resp;
  return stub->Del(&ctx, req, &resp);
}

}  // namespace ruleplane::testing
