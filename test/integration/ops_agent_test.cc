// Privileged: the operations surface of the real agent in a throwaway netns.
//  - bring-up report: phases present, monotone, kept across restarts; the
//    CNI conflist appears only once the agent is ready, survives restarts,
//    and goes away only with --uninstall;
//  - every Diagnostics RPC called generically through server reflection
//    (what grpcurl does), including the WatchTransactions stream;
//  - every ruleplanectl command and its exit code.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "test/util/process.h"
#include "nlohmann/json.hpp"
#include "test/integration/agent_process.h"
#include "test/integration/netns_fixture.h"
#include "tools/grpc-reflect/reflection_client.h"

namespace ruleplane::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kConflist[] = R"({"cniVersion":"1.0.0","name":"podnet","plugins":[
  {"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.88.0.0/16"}},
  {"type":"ruleplane","capabilities":{"portMappings":true}}]})";

const v1::BringupPhase* FindPhase(const v1::BringupReport& r, const std::string& name) {
  for (const auto& p : r.phases()) {
    if (p.name() == name) return &p;
  }
  return nullptr;
}

class PrivilegedOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = PrivilegedSkipReason()) GTEST_SKIP() << *why;
    auto ns = TestNetns::Create();
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = std::move(*ns);
    // Short: unix socket paths are capped at 107 bytes.
    static int serial = 0;
    dir_ = fs::temp_directory_path() / absl::StrCat("rp-ops-", getpid(), "-", ++serial);
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "net.d");
    std::ofstream(dir_ / "podnet.conflist") << kConflist;
    conflist_ = dir_ / "net.d" / "10-ruleplane.conflist";
  }
  void TearDown() override {
    agent_.reset();
    if (listener_ > 0) {
      kill(listener_, SIGKILL);
      waitpid(listener_, nullptr, 0);
    }
    fs::remove_all(dir_);
  }
  std::vector<std::string> CniArgs() const {
    return {"--cni-conf-dir=" + (dir_ / "net.d").string(), "--cni-conflist-file=" + (dir_ / "podnet.conflist").string(),
            "--xtables-lock-path=" + (dir_ / "xtables.lock").string()};
  }
  AgentProcess* StartAgent(std::vector<std::string> args) {
    agent_ = std::make_unique<AgentProcess>(ns_.get(), (dir_ / "agent").string(), std::move(args));
    absl::Status s = agent_->Start();
    EXPECT_TRUE(s.ok()) << s;
    return agent_.get();
  }
  v1::GetBringupReportResponse Bringup() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::GetBringupReportResponse r;
    grpc::Status s = agent_->diag()->GetBringupReport(&ctx, {}, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r;
  }
  CommandResult Ctl(const std::string& args) {
    return RunShell(absl::StrCat(RULEPLANECTL_BIN, " --socket=", agent_->socket(), " ", args));
  }

  std::unique_ptr<TestNetns> ns_;
  fs::path dir_;
  fs::path conflist_;
  std::unique_ptr<AgentProcess> agent_;
  pid_t listener_ = -1;
};

TEST_F(PrivilegedOpsTest, BringupPhasesArePresentMonotoneAndKeptAcrossRestart) {
  // An "API server" that starts listening 1 s after the agent: the wait is a phase.
  timespec spawned{};
  clock_gettime(CLOCK_BOOTTIME, &spawned);
  listener_ = Spawn({"ip", "netns", "exec", ns_->name(), "python3", "-c",
                     "import socket,time\n"
                     "time.sleep(1.0)\n"
                     "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                     "s.bind(('127.0.0.1', 16443)); s.listen(8); time.sleep(60)\n"});
  ASSERT_GT(listener_, 0);
  std::vector<std::string> args = CniArgs();
  args.push_back("--api-server=https://127.0.0.1:16443");
  AgentProcess* a = StartAgent(args);
  ASSERT_TRUE(CallAdd(a->cni(), AddRequest("b1", "10.50.0.1", 9301)).ok());
  ASSERT_TRUE(WaitFor([&] { return FindPhase(Bringup().current(), "API server reachable") != nullptr; },
                      absl::Seconds(5)))
      << a->Log();

  v1::BringupReport r = Bringup().current();
  EXPECT_EQ(r.outcome(), "ready");
  EXPECT_GT(r.ready_seconds(), 0);
  EXPECT_EQ(r.pid(), a->pid());
  for (const char* name : {"config loaded", "kernel probes", "coexistence checks", "gRPC serving", "checkpoint loaded",
                           "kernel state adopted", "base ruleset committed", "BPF attached", "ready",
                           "CNI config installed", "waiting for API server", "API server reachable",
                           "first CNI ADD served"}) {
    const v1::BringupPhase* p = FindPhase(r, name);
    ASSERT_NE(p, nullptr) << name << " missing:\n" << r.DebugString();
    EXPECT_NE(p->status(), "running") << name;
    EXPECT_NE(p->status(), "failed") << name << ": " << p->detail();
    EXPECT_LE(p->start_seconds(), p->end_seconds()) << name;
    EXPECT_GE(p->start_seconds(), 0) << name;
    EXPECT_NEAR(p->start_since_boot_seconds(), r.process_start_since_boot_seconds() + p->start_seconds(), 1e-3);
  }
  for (int i = 1; i < r.phases_size(); ++i) {
    EXPECT_LE(r.phases(i - 1).start_seconds(), r.phases(i).start_seconds())
        << r.phases(i - 1).name() << " then " << r.phases(i).name();
  }
  // The engine's steps follow each other; the conflist comes after ready.
  EXPECT_LE(FindPhase(r, "checkpoint loaded")->end_seconds(), FindPhase(r, "kernel state adopted")->end_seconds());
  EXPECT_LE(FindPhase(r, "kernel state adopted")->end_seconds(), FindPhase(r, "base ruleset committed")->end_seconds());
  EXPECT_LE(FindPhase(r, "base ruleset committed")->end_seconds(), r.ready_seconds());
  EXPECT_GE(FindPhase(r, "CNI config installed")->start_seconds(), r.ready_seconds());
  EXPECT_GE(FindPhase(r, "first CNI ADD served")->start_seconds(), r.ready_seconds());
  const v1::BringupPhase* wait = FindPhase(r, "waiting for API server");
  // The wait ends no earlier than the listener could listen (1 s after it
  // was spawned, on the clock the phases use); how long it was depends on
  // how fast the agent got to it on a busy machine.
  EXPECT_GT(wait->end_seconds(), wait->start_seconds()) << wait->detail();
  EXPECT_GE(wait->start_since_boot_seconds() + (wait->end_seconds() - wait->start_seconds()),
            spawned.tv_sec + spawned.tv_nsec * 1e-9 + 1.0)
      << wait->detail();
  EXPECT_NE(wait->detail().find("127.0.0.1:16443"), std::string::npos) << wait->detail();
  EXPECT_EQ(FindPhase(r, "BPF attached")->status(), "skipped");

  const std::string first_id = r.id();
  ASSERT_EQ(a->Stop(), 0);
  EXPECT_TRUE(fs::exists(conflist_)) << "a plain stop keeps the CNI config";
  a = StartAgent(args);
  v1::GetBringupReportResponse again = Bringup();
  EXPECT_FALSE(again.current().first_since_boot());
  ASSERT_EQ(again.previous_size(), 1);
  EXPECT_EQ(again.previous(0).id(), first_id);
  EXPECT_EQ(again.previous(0).outcome(), "stopped");
  EXPECT_NE(FindPhase(again.previous(0), "first CNI ADD served"), nullptr);
  std::ifstream history(dir_ / "agent" / "state" / "bringup-history.json");
  EXPECT_TRUE(history.good());
}

TEST_F(PrivilegedOpsTest, ConflistAppearsOnlyOnceReadyStaysAcrossRestartsAndGoesOnlyWithUninstall) {
  // Watch the conf dir while the agent starts: when the file first exists,
  // the agent must already say it is ready.
  std::atomic<bool> stop{false}, seen{false}, ready_when_seen{false}, vanished{false};
  std::atomic<bool> watch_vanish{false};
  const std::string socket = (dir_ / "agent" / "ruleplane.sock").string();
  std::thread watcher([&] {
    while (!stop.load()) {
      bool exists = fs::exists(conflist_);
      if (exists && !seen.load()) {
        grpc::ChannelArguments cargs;
        cargs.SetInt(GRPC_ARG_SERVICE_CONFIG_DISABLE_RESOLUTION, 1);
        auto diag = v1::Diagnostics::NewStub(
            grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), cargs));
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
        v1::GetStatusResponse st;
        ready_when_seen = diag->GetStatus(&ctx, {}, &st).ok() && st.ready();
        seen = true;
      }
      if (watch_vanish.load() && !exists) vanished = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  AgentProcess* a = StartAgent(CniArgs());
  ASSERT_TRUE(WaitFor([&] { return seen.load(); }, absl::Seconds(3)));
  EXPECT_TRUE(ready_when_seen.load()) << "the conflist appeared before the agent was ready";
  std::ifstream in(conflist_);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), kConflist) << "written unchanged";

  // Restarts (SIGTERM, SIGKILL) never remove it, not even for a moment.
  watch_vanish = true;
  ASSERT_EQ(a->Stop(), 0);
  a = StartAgent(CniArgs());
  a->Kill();
  a = StartAgent(CniArgs());
  ASSERT_TRUE(CallAdd(a->cni(), AddRequest("u1", "10.51.0.1", 9401)).ok());
  EXPECT_FALSE(vanished.load()) << "the conflist disappeared during a restart";
  ASSERT_EQ(a->Stop(), 0);
  stop = true;
  watcher.join();

  // --uninstall while an agent runs is refused; after it stopped, it removes
  // the conflist, the table and the state.
  a = StartAgent(CniArgs());
  std::string uninstall = absl::StrCat(RULEPLANE_AGENT_BIN, " --socket=", a->socket(), " --state-dir=", a->state_dir(),
                                       " --cni-conf-dir=", (dir_ / "net.d").string(),
                                       " --cni-conflist-file=", (dir_ / "podnet.conflist").string(), " --uninstall");
  CommandResult refused = ns_->RunIn(uninstall);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.error.find("stop it first"), std::string::npos) << refused.error;
  EXPECT_TRUE(fs::exists(conflist_));
  ASSERT_EQ(a->Stop(), 0);
  CommandResult done = ns_->RunIn(uninstall);
  EXPECT_EQ(done.exit_code, 0) << done.error;
  EXPECT_NE(done.output.find("deleted table inet ruleplane"), std::string::npos) << done.output;
  EXPECT_FALSE(fs::exists(conflist_));
  EXPECT_NE(ns_->RunIn("nft list table inet ruleplane").exit_code, 0);
  EXPECT_FALSE(fs::exists(fs::path(a->state_dir()) / "bringup-history.json"));
}

TEST_F(PrivilegedOpsTest, NoConflistWhenTheAgentCannotStart) {
  ASSERT_EQ(ns_->RunIn("nft 'add table ip other; add chain ip other pre { type nat hook prerouting priority -105; }'")
                .exit_code,
            0);
  CommandResult r = ns_->RunIn(absl::StrCat(RULEPLANE_AGENT_BIN, " --socket=", dir_.string(), "/s.sock --state-dir=",
                                            dir_.string(), "/state --metrics-address= --cni-conf-dir=",
                                            (dir_ / "net.d").string(), " --cni-conflist-file=",
                                            (dir_ / "podnet.conflist").string()));
  EXPECT_EQ(r.exit_code, 1) << r.error;
  EXPECT_FALSE(fs::exists(conflist_));
}

// grpcurl's way: reflection -> descriptors -> DynamicMessage -> generic call.
TEST_F(PrivilegedOpsTest, EveryDiagnosticsRpcThroughServerReflectionIncludingTheStream) {
  AgentProcess* a = StartAgent(CniArgs());
  ASSERT_TRUE(CallAdd(a->cni(), AddRequest("r1", "10.52.0.1", 9501)).ok());
  tools::ReflectionClient client(tools::DialUnix(a->socket()), absl::Seconds(5));
  absl::StatusOr<std::vector<std::string>> services = client.ListServices();
  ASSERT_TRUE(services.ok()) << services.status();
  std::set<std::string> names(services->begin(), services->end());
  for (const char* s : {"ruleplane.v1.Diagnostics", "ruleplane.v1.Cni", "grpc.health.v1.Health",
                        "grpc.reflection.v1alpha.ServerReflection"}) {
    EXPECT_TRUE(names.count(s)) << s;
  }
  absl::StatusOr<const google::protobuf::ServiceDescriptor*> diag = client.FindService("ruleplane.v1.Diagnostics");
  ASSERT_TRUE(diag.ok()) << diag.status();
  std::set<std::string> called;
  for (int i = 0; i < (*diag)->method_count(); ++i) {
    const google::protobuf::MethodDescriptor* m = (*diag)->method(i);
    std::vector<json> responses;
    auto collect = [&](const std::string& j) {
      responses.push_back(json::parse(j));
      return true;
    };
    absl::Status s;
    if (m->server_streaming()) {
      // Two finished ones from the backlog, then one that happens now.
      std::thread later([&] {
        absl::SleepFor(absl::Milliseconds(300));
        EXPECT_TRUE(CallAdd(a->cni(), AddRequest("r2", "10.52.0.2")).ok());
      });
      s = client.Call(m, R"({"backlog": 2})", absl::Seconds(10), 3, collect);
      later.join();
      ASSERT_EQ(responses.size(), 3u) << m->full_name();
      // uint64 prints as a JSON string; backlog and live ones are consecutive.
      const uint64_t first = std::stoull(responses[0]["id"].get<std::string>());
      EXPECT_EQ(std::stoull(responses[1]["id"].get<std::string>()), first + 1);
      EXPECT_EQ(std::stoull(responses[2]["id"].get<std::string>()), first + 2);
      EXPECT_EQ(responses[2]["kind"], "mutations");
      EXPECT_EQ(responses[2]["result"], "OK");
    } else {
      s = client.Call(m, "{}", absl::Seconds(10), 0, collect);
      ASSERT_EQ(responses.size(), 1u) << m->full_name();
    }
    EXPECT_TRUE(s.ok()) << m->full_name() << ": " << s;
    called.insert(m->name());
    if (m->name() == "GetStatus") {
      EXPECT_EQ(responses[0]["ready"], true);
    }
    if (m->name() == "GetLockStats") {
      EXPECT_EQ(responses[0]["monitoring"], true);
    }
    if (m->name() == "GetBringupReport") {
      EXPECT_EQ(responses[0]["current"]["outcome"], "ready");
    }
    if (m->name() == "DumpRuleset") {
      EXPECT_NE(responses[0]["text"].get<std::string>().find("10.52.0.1"), std::string::npos);
    }
  }
  for (const char* must : {"GetStatus", "ListAttachments", "ListTransactions", "DumpRuleset", "DiffDesiredActual",
                           "WatchTransactions", "GetLockStats", "GetBringupReport"}) {
    EXPECT_TRUE(called.count(must)) << must;
  }

  // The CLI does the same.
  CommandResult list = RunShell(absl::StrCat(GRPC_REFLECT_BIN, " --socket=", a->socket(), " list"));
  EXPECT_EQ(list.exit_code, 0) << list.error;
  EXPECT_NE(list.output.find("ruleplane.v1.Diagnostics"), std::string::npos);
  CommandResult describe =
      RunShell(absl::StrCat(GRPC_REFLECT_BIN, " --socket=", a->socket(), " describe ruleplane.v1.Diagnostics"));
  EXPECT_EQ(describe.exit_code, 0) << describe.error;
  EXPECT_NE(describe.output.find("rpc WatchTransactions(ruleplane.v1.WatchTransactionsRequest) returns (stream "
                                 "ruleplane.v1.Transaction)"),
            std::string::npos)
      << describe.output;
  CommandResult call = RunShell(absl::StrCat(GRPC_REFLECT_BIN, " --socket=", a->socket(),
                                             " --data='{\"limit\": 1}' call ruleplane.v1.Diagnostics/ListTransactions"));
  EXPECT_EQ(call.exit_code, 0) << call.error;
  EXPECT_EQ(json::parse(call.output)["transactions"].size(), 1u) << call.output;
  CommandResult bad =
      RunShell(absl::StrCat(GRPC_REFLECT_BIN, " --socket=", a->socket(), " call ruleplane.v1.Diagnostics/Nope"));
  EXPECT_EQ(bad.exit_code, 1);
}

TEST_F(PrivilegedOpsTest, EveryRuleplanectlCommandAgainstTheRealAgent) {
  AgentProcess* a = StartAgent(CniArgs());
  ASSERT_TRUE(CallAdd(a->cni(), AddRequest("c1", "10.53.0.1", 9601)).ok());
  struct Case {
    std::string args;
    int exit_code;
    std::string contains;
  };
  const std::vector<Case> cases = {
      {"status", 0, "ready:          yes"},
      {"attachments", 0, "10.53.0.1"},
      {"txns", 0, "mutations"},
      {"ruleset", 0, "10.53.0.1"},
      {"diff", 0, "kernel matches the desired state"},
      // The lock file does not exist in this test dir: reported, exit 1.
      {"locks", 1, "(absent)"},
      {"bringup --svg=" + (dir_ / "bringup.svg").string(), 0, "CNI config installed"},
      {"health", 0, "SERVING"},
      {"nonsense", 2, ""},
  };
  for (const Case& c : cases) {
    CommandResult r = Ctl(c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << "\n" << r.output << r.error;
    EXPECT_NE(r.output.find(c.contains), std::string::npos) << c.args << "\n" << r.output;
  }
  // --json output parses for every read command.
  for (const char* cmd : {"status", "attachments", "txns", "ruleset", "diff", "locks", "bringup", "snat", "health"}) {
    CommandResult r = Ctl(absl::StrCat("--json ", cmd));
    EXPECT_TRUE(json::accept(r.output)) << cmd << ": " << r.output;
  }
  // The SVG is well-formed XML with one bar per phase.
  CommandResult xml = RunShell(absl::StrCat(
      "python3 -c \"import xml.etree.ElementTree as E, sys; r=E.parse(sys.argv[1]).getroot(); "
      "print(len([g for g in r.iter('{http://www.w3.org/2000/svg}g') if g.get('class')=='phase']))\" ",
      (dir_ / "bringup.svg").string()));
  ASSERT_EQ(xml.exit_code, 0) << xml.error;
  EXPECT_EQ(std::stoi(xml.output), Bringup().current().phases_size());

  // snat: GetSnatStats (SNAT is off in this agent: mode off, exit 0).
  CommandResult snat = Ctl("snat");
  EXPECT_EQ(snat.exit_code, 0) << snat.error;
  EXPECT_NE(snat.output.find("mode:           off"), std::string::npos) << snat.output;
  CommandResult snat_json = Ctl("--json snat");
  EXPECT_EQ(snat_json.exit_code, 0) << snat_json.error;
  EXPECT_EQ(json::parse(snat_json.output)["mode"], "off") << snat_json.output;

  // txns --follow: the backlog, then transactions as they happen.
  std::string out_file = (dir_ / "follow.txt").string();
  pid_t follower = Spawn({"sh", "-c",
                          absl::StrCat(RULEPLANECTL_BIN, " --socket=", a->socket(),
                                       " txns --follow --limit=1 --count=3 > ", out_file)});
  ASSERT_GT(follower, 0);
  absl::SleepFor(absl::Milliseconds(300));
  ASSERT_TRUE(CallAdd(a->cni(), AddRequest("c2", "10.53.0.2")).ok());
  ASSERT_TRUE(CallDel(a->cni(), "c2").ok());
  int status = 0;
  for (int i = 0; i < 100 && waitpid(follower, &status, WNOHANG) == 0; ++i) absl::SleepFor(absl::Milliseconds(50));
  ASSERT_TRUE(WIFEXITED(status)) << "txns --follow did not stop after --count";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::ifstream fin(out_file);
  std::stringstream follow;
  follow << fin.rdbuf();
  std::vector<std::string> lines = absl::StrSplit(follow.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << follow.str();  // header + 1 backlog + 2 live
  EXPECT_TRUE(absl::StartsWith(lines[0], "ID"));
  EXPECT_NE(lines[3].find("mutations"), std::string::npos) << follow.str();

  // Not reachable: 3 (probes rely on it).
  ASSERT_EQ(a->Stop(), 0);
  EXPECT_EQ(Ctl("health").exit_code, 3);
  EXPECT_EQ(Ctl("locks").exit_code, 3);
  EXPECT_EQ(Ctl("bringup").exit_code, 3);
  EXPECT_EQ(Ctl("snat").exit_code, 3);
}

}  // namespace
}  // namespace ruleplane::testing
