// ruleplane-agent-bench: the two timing-critical pieces of the agent scale
// benchmark (tools/bench/startup.py orchestrates them).
//
//   ruleplane-agent-bench load --socket=S --n=N [--concurrency=64] [--prefix=p]
//       Registers N attachments through the agent's public Cni.Add RPC, the
//       way the plugin does (one IPv4 address each, no host ports), from
//       --concurrency client threads. Prints one JSON object: seconds, adds/s,
//       errors. Exit 1 if any Add failed.
//
//   ruleplane-agent-bench startup --socket=S [--netns=NAME] [--timeout=30s] -- AGENT ARGV...
//       Spawns the agent (inside network namespace NAME when given: this
//       tool enters it first, so the timed child is the agent itself, no
//       `ip netns exec` in between), then polls grpc.health.v1 Check
//       (service "ruleplane") every --poll until SERVING. Prints one JSON
//       object: start_to_socket_ms (socket file appears), start_to_serving_ms,
//       VmRSS/VmHWM at serving and after --settle, the agent's attachment
//       count (Diagnostics.GetStatus), pid. The agent is left running
//       (--stop sends SIGTERM and waits for exit after measuring).
//
//   ruleplane-agent-bench gaps --socket=S [--gaps=0.5,1.0,1.05] [--repeats=5]
//       For each repeat and each gap: stay idle for the gap, then open a new
//       connection (as every CNI plugin exec does) and time a grpc.health.v1
//       Check (service "ruleplane") from channel creation to the answer.
//       Prints one JSON object: {"gaps_s": [...], "ms": [[per repeat]...]}.
//       Shows a server that answers late after idle periods
//       (tools/bench/idle_gap.py; agent/api/poller_keeper.h).
//
// The socket's stale file is the caller's to remove before `startup`: a
// stale file would be connected to and refused, which only costs polls.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "ruleplane/v1/cni.grpc.pb.h"
#include "ruleplane/v1/diagnostics.grpc.pb.h"

extern char** environ;

ABSL_FLAG(std::string, socket, "/run/ruleplane/ruleplane.sock", "the agent's unix socket");
ABSL_FLAG(int, n, 1000, "load: attachments to add");
ABSL_FLAG(int, concurrency, 64, "load: client threads, one Add in flight each");
ABSL_FLAG(std::string, prefix, "bench", "load: container id prefix (ids are <prefix>-<i>)");
ABSL_FLAG(int, first, 0, "load: index of the first attachment (addresses derive from it)");
ABSL_FLAG(std::string, netns, "", "startup: network namespace name (/run/netns/NAME) to start the agent in");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(60), "startup: give up waiting for SERVING after this");
ABSL_FLAG(absl::Duration, poll, absl::Milliseconds(1), "startup: health poll interval");
ABSL_FLAG(absl::Duration, settle, absl::Seconds(1), "startup: second RSS reading this long after SERVING");
ABSL_FLAG(std::vector<std::string>, gaps, std::vector<std::string>({"0.5", "1.0", "1.05"}),
          "gaps: idle seconds before each call");
ABSL_FLAG(int, repeats, 5, "gaps: rounds over all gaps");
ABSL_FLAG(bool, stop, false, "startup: SIGTERM the agent after measuring and wait for it to exit");

namespace {

std::shared_ptr<grpc::Channel> Dial(const std::string& socket) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_SERVICE_CONFIG_DISABLE_RESOLUTION, 1);
  // A private subchannel with a tiny reconnect backoff: the default pool and
  // backoff (1 s) would hide the moment the agent starts listening.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 1);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 1);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5);
  return grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args);
}

void Deadline(grpc::ClientContext* c, absl::Duration d) {
  c->set_deadline(std::chrono::system_clock::now() + absl::ToChronoMicroseconds(d));
}

// 10.128.0.0/9 holds 8M addresses: index i -> 10.(128 + i/65536).(i/256%256).(i%256).
std::string AddressOf(int i) {
  return absl::StrFormat("10.%d.%d.%d", 128 + (i >> 16), (i >> 8) & 255, i & 255);
}

int Load() {
  const std::string socket = absl::GetFlag(FLAGS_socket);
  const int n = absl::GetFlag(FLAGS_n);
  const int threads = std::max(1, std::min(absl::GetFlag(FLAGS_concurrency), n));
  const std::string prefix = absl::GetFlag(FLAGS_prefix);
  const int first = absl::GetFlag(FLAGS_first);
  std::atomic<int> next{0}, errors{0};
  std::string first_error;
  std::atomic<bool> have_error{false};
  auto channel = Dial(socket);
  absl::Time t0 = absl::Now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      auto stub = ruleplane::v1::Cni::NewStub(channel);
      for (int i = next++; i < n; i = next++) {
        const int k = first + i;
        ruleplane::v1::CniRequest req;
        req.set_command("ADD");
        req.set_container_id(absl::StrCat(prefix, "-", k));
        req.set_netns(absl::StrCat("/run/netns/", prefix, "-", k));
        req.set_ifname("eth0");
        req.set_args(absl::StrCat("K8S_POD_NAMESPACE=bench;K8S_POD_NAME=", prefix, "-", k, ";K8S_POD_UID=uid-", k));
        req.set_cni_version("1.0.0");
        req.set_network_name("bench");
        ruleplane::v1::Attachment* a = req.mutable_attachment();
        a->set_container_id(req.container_id());
        a->set_ifname("eth0");
        a->set_netns(req.netns());
        a->set_pod_namespace("bench");
        a->set_pod_name(absl::StrCat(prefix, "-", k));
        a->set_pod_uid(absl::StrCat("uid-", k));
        a->add_ips(AddressOf(k));
        ruleplane::v1::CniResponse resp;
        grpc::ClientContext ctx;
        Deadline(&ctx, absl::Seconds(30));
        grpc::Status s = stub->Add(&ctx, req, &resp);
        if (!s.ok()) {
          ++errors;
          bool expected = false;
          if (have_error.compare_exchange_strong(expected, true)) {
            first_error = absl::StrCat(s.error_code(), ": ", s.error_message());
          }
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  double secs = absl::ToDoubleSeconds(absl::Now() - t0);
  absl::PrintF("{\"n\": %d, \"concurrency\": %d, \"seconds\": %.3f, \"adds_per_s\": %.1f, \"errors\": %d%s}\n", n,
               threads, secs, n / secs, errors.load(),
               have_error ? absl::StrCat(", \"first_error\": \"", absl::CEscape(first_error), "\"") : "");
  return errors.load() ? 1 : 0;
}

// Reads "VmRSS:" / "VmHWM:" (kB) from /proc/<pid>/status.
std::pair<long, long> Rss(pid_t pid) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  long rss = -1, hwm = -1;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::atol(line.c_str() + 6);
    if (line.rfind("VmHWM:", 0) == 0) hwm = std::atol(line.c_str() + 6);
  }
  return {rss, hwm};
}

int Startup(const std::vector<std::string>& argv) {
  const std::string socket = absl::GetFlag(FLAGS_socket);
  if (const std::string ns = absl::GetFlag(FLAGS_netns); !ns.empty()) {
    int fd = ::open(absl::StrCat("/run/netns/", ns).c_str(), O_RDONLY | O_CLOEXEC);
    // This tool is single-threaded here (gRPC has not started threads yet),
    // so setns moves the whole process and the agent inherits it.
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
      std::fprintf(stderr, "agent-bench: enter netns %s: %s\n", ns.c_str(), std::strerror(errno));
      return 1;
    }
    ::close(fd);
  }
  std::vector<char*> cargv;
  for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  pid_t pid = 0;
  const absl::Time t0 = absl::Now();
  if (int err = posix_spawn(&pid, cargv[0], nullptr, nullptr, cargv.data(), environ); err != 0) {
    std::fprintf(stderr, "agent-bench: spawn %s: %s\n", cargv[0], std::strerror(err));
    return 1;
  }
  const absl::Time give_up = t0 + absl::GetFlag(FLAGS_timeout);
  const absl::Duration poll = absl::GetFlag(FLAGS_poll);
  double socket_ms = -1, serving_ms = -1;
  int polls = 0;
  std::shared_ptr<grpc::Channel> channel;
  std::string failure;
  while (absl::Now() < give_up) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      failure = absl::StrCat("agent exited before SERVING (status ", status, ")");
      pid = 0;
      break;
    }
    struct stat st {};
    if (::stat(socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      if (socket_ms < 0) socket_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
      if (!channel) channel = Dial(socket);
      auto stub = grpc::health::v1::Health::NewStub(channel);
      grpc::ClientContext ctx;
      Deadline(&ctx, absl::Milliseconds(200));
      grpc::health::v1::HealthCheckRequest req;
      req.set_service("ruleplane");
      grpc::health::v1::HealthCheckResponse r;
      ++polls;
      grpc::Status s = stub->Check(&ctx, req, &r);
      if (s.ok() && r.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
        serving_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
        break;
      }
      if (!s.ok()) channel.reset();  // not listening yet: dial afresh next time
    }
    absl::SleepFor(poll);
  }
  std::pair<long, long> at_serving{-1, -1}, settled{-1, -1};
  int64_t attachments = -1;  // from Diagnostics.GetStatus
  if (serving_ms >= 0) {
    at_serving = Rss(pid);
    absl::SleepFor(absl::GetFlag(FLAGS_settle));
    settled = Rss(pid);
    auto diag = ruleplane::v1::Diagnostics::NewStub(channel);
    grpc::ClientContext ctx;
    Deadline(&ctx, absl::Seconds(10));
    ruleplane::v1::GetStatusResponse st;
    if (diag->GetStatus(&ctx, {}, &st).ok()) attachments = static_cast<int64_t>(st.attachments());
  } else if (failure.empty()) {
    failure = "timeout waiting for SERVING";
  }
  double stop_ms = -1;
  if (pid != 0 && (absl::GetFlag(FLAGS_stop) || serving_ms < 0)) {
    absl::Time ts = absl::Now();
    ::kill(pid, serving_ms < 0 ? SIGKILL : SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    stop_ms = absl::ToDoubleMilliseconds(absl::Now() - ts);
    pid = 0;
  }
  absl::PrintF(
      "{\"pid\": %d, \"start_to_socket_ms\": %.3f, \"start_to_serving_ms\": %.3f, \"health_polls\": %d, "
      "\"rss_kb_at_serving\": %d, \"hwm_kb_at_serving\": %d, \"rss_kb_settled\": %d, \"hwm_kb_settled\": %d, "
      "\"attachments\": %d, \"stop_ms\": %.1f, \"error\": \"%s\"}\n",
      pid, socket_ms, serving_ms, polls, at_serving.first, at_serving.second, settled.first, settled.second,
      attachments, stop_ms, absl::CEscape(failure));
  return serving_ms >= 0 ? 0 : 1;
}

int Gaps() {
  const std::string socket = absl::GetFlag(FLAGS_socket);
  std::vector<double> gaps;
  for (const std::string& g : absl::GetFlag(FLAGS_gaps)) {
    double v = 0;
    if (!absl::SimpleAtod(g, &v) || v < 0 || v > 60) {
      std::fprintf(stderr, "gaps: bad gap \"%s\" (seconds, 0-60)\n", g.c_str());
      return 2;
    }
    gaps.push_back(v);
  }
  const int repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  std::vector<std::vector<double>> ms(gaps.size());
  int failures = 0;
  for (int r = 0; r < repeats; ++r) {
    for (size_t i = 0; i < gaps.size(); ++i) {
      absl::SleepFor(absl::Seconds(gaps[i]));
      const absl::Time t0 = absl::Now();
      auto stub = grpc::health::v1::Health::NewStub(Dial(socket));
      grpc::ClientContext ctx;
      Deadline(&ctx, absl::Seconds(5));
      grpc::health::v1::HealthCheckRequest req;
      req.set_service("ruleplane");
      grpc::health::v1::HealthCheckResponse resp;
      const grpc::Status st = stub->Check(&ctx, req, &resp);
      if (!st.ok()) ++failures;
      ms[i].push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
    }
  }
  std::string out = "{\"gaps_s\": [";
  for (size_t i = 0; i < gaps.size(); ++i) absl::StrAppendFormat(&out, "%s%g", i ? ", " : "", gaps[i]);
  out += "], \"ms\": [";
  for (size_t i = 0; i < gaps.size(); ++i) {
    out += i ? ", [" : "[";
    for (size_t j = 0; j < ms[i].size(); ++j) absl::StrAppendFormat(&out, "%s%.3f", j ? ", " : "", ms[i][j]);
    out += "]";
  }
  absl::StrAppendFormat(&out, "], \"failures\": %d}\n", failures);
  std::fputs(out.c_str(), stdout);
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "agent scale benchmark helpers\n"
      "  ruleplane-agent-bench load --socket=S --n=N [--concurrency=64] [--prefix=p]\n"
      "  ruleplane-agent-bench startup --socket=S [--netns=NAME] [--stop] -- AGENT ARGS...\n"
      "  ruleplane-agent-bench gaps --socket=S [--gaps=0.5,1.0,1.05] [--repeats=5]");
  // Everything after "--" is the agent's command line, untouched.
  std::vector<std::string> agent;
  int ours = argc;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--") {
      ours = i;
      for (int j = i + 1; j < argc; ++j) agent.emplace_back(argv[j]);
      break;
    }
  }
  std::vector<char*> positional = absl::ParseCommandLine(ours, argv);
  if (positional.size() != 2) {
    std::fprintf(stderr, "usage: ruleplane-agent-bench load|startup|gaps [flags] (see --help)\n");
    return 2;
  }
  const std::string cmd = positional[1];
  if (cmd == "load") return Load();
  if (cmd == "gaps") return Gaps();
  if (cmd == "startup") {
    if (agent.empty()) {
      std::fprintf(stderr, "startup: give the agent command after --\n");
      return 2;
    }
    return Startup(agent);
  }
  std::fprintf(stderr, "unknown command %s\n", cmd.c_str());
  return 2;
}
