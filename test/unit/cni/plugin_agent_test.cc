// RunPlugin against an in-process fake agent (a real gRPC server on a temp
// unix socket), plus agent-down and agent-hung cases that must end within
// the configured timeout. No privileges.
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/common/unique_fd.h"
#include "cni/plugin.h"
#include "test/unit/cni/fake_agent.h"
#include "test/unit/cni/plugin_test_util.h"

namespace ruleplane::cni {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::Conf;
using testing::EnvFor;
using testing::FakeAgent;
using testing::kBridgePrevResult;
using testing::RunCni;
using testing::RunResult;
using testing::TempDir;

class PluginAgentTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(agent_.started()) << "fake agent did not start on " << agent_.socket_path(); }

  std::string AddConf(const std::string& version = "1.0.0", const std::string& extra = "") {
    return Conf(version, agent_.socket_path(), extra + R"(,"prevResult":)" + kBridgePrevResult);
  }

  FakeAgent agent_;
};

TEST_F(PluginAgentTest, AddForwardsAttachmentAndPrintsPrevResult) {
  std::string in = AddConf("1.0.0", R"(,"runtimeConfig":{"portMappings":[)"
                                    R"({"hostPort":8080,"containerPort":80,"protocol":"tcp"},)"
                                    R"({"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"fd00::1"}]})");
  RunResult r = RunCni(EnvFor("ADD"), in);
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_EQ(r.out, kBridgePrevResult);
  EXPECT_THAT(r.err, IsEmpty());

  std::vector<v1::CniRequest> adds = agent_.adds();
  ASSERT_EQ(adds.size(), 1u);
  const v1::CniRequest& req = adds[0];
  EXPECT_EQ(req.command(), "ADD");
  EXPECT_EQ(req.container_id(), "ctr-1");
  EXPECT_EQ(req.netns(), "/var/run/netns/cni-1234");
  EXPECT_EQ(req.ifname(), "eth0");
  EXPECT_EQ(req.args(), EnvFor("ADD")["CNI_ARGS"]);
  EXPECT_EQ(req.path(), "/opt/cni/bin");
  EXPECT_EQ(req.config(), in);
  EXPECT_EQ(req.cni_version(), "1.0.0");
  EXPECT_EQ(req.network_name(), "podnet");
  const v1::Attachment& a = req.attachment();
  EXPECT_EQ(a.container_id(), "ctr-1");
  EXPECT_EQ(a.ifname(), "eth0");
  EXPECT_EQ(a.netns(), "/var/run/netns/cni-1234");
  EXPECT_EQ(a.pod_namespace(), "ns1");
  EXPECT_EQ(a.pod_name(), "web-0");
  EXPECT_EQ(a.pod_uid(), "0b5c-uid");
  EXPECT_THAT(a.ips(), ElementsAre("10.22.0.5", "fd00::5"));
  ASSERT_EQ(a.port_mappings_size(), 2);
  EXPECT_EQ(a.port_mappings(0).host_port(), 8080u);
  EXPECT_EQ(a.port_mappings(0).container_port(), 80u);
  EXPECT_EQ(a.port_mappings(0).protocol(), "tcp");
  EXPECT_EQ(a.port_mappings(1).protocol(), "udp");
  EXPECT_EQ(a.port_mappings(1).host_ip(), "fd00::1");
}

TEST_F(PluginAgentTest, PrevResultPassesThroughByteForByte) {
  // Odd whitespace, escapes that a re-serializer would rewrite (\/, \u00e9,
  // surrogate pair), raw UTF-8, number formats, key order, a nested
  // "prevResult" key and a later top-level key.
  const std::string prev =
      "{ \"ips\" :\t[ {\"address\":\"10.22.0.5/16\" , \"interface\":0} ],\n"
      "  \"interfaces\":[{\"name\":\"eth0\",\"sandbox\":\"\\/var\\/run\\/netns\\/p\"}],\r\n"
      "  \"dns\":{\"domain\":\"caf\\u00e9.\xE2\x98\x83\",\"search\":[\"\\ud83d\\udc33\",\"a\\\"b\\\\\"]},"
      "\"zz\":1.50E+2, \"prevResult\":{} ,\"cniVersion\":\"1.0.0\"  }";
  std::string in = "\n{ \"type\" : \"ruleplane\",\"cniVersion\":\"1.0.0\", \"name\":\"podnet\",\"socket\":\"" +
                   agent_.socket_path() + "\",\n \"prevResult\" :  " + prev + "  \n, \"after\": [1,2] }\n";
  RunResult r = RunCni(EnvFor("ADD"), in);
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_EQ(r.out, prev);
  ASSERT_EQ(agent_.adds().size(), 1u);
  EXPECT_THAT(agent_.adds()[0].attachment().ips(), ElementsAre("10.22.0.5"));
}

TEST_F(PluginAgentTest, AgentErrorsMapToCniCodes) {
  struct Case {
    const char* command;
    grpc::StatusCode code;
    int want;
  };
  for (Case c : {Case{"ADD", grpc::StatusCode::ALREADY_EXISTS, 100},
                 Case{"ADD", grpc::StatusCode::PERMISSION_DENIED, 102},
                 Case{"ADD", grpc::StatusCode::INVALID_ARGUMENT, 7},
                 Case{"ADD", grpc::StatusCode::UNAVAILABLE, 11},
                 Case{"ADD", grpc::StatusCode::ABORTED, 11},
                 Case{"ADD", grpc::StatusCode::INTERNAL, 103},
                 Case{"ADD", grpc::StatusCode::NOT_FOUND, 103},
                 Case{"CHECK", grpc::StatusCode::NOT_FOUND, 101},
                 Case{"DEL", grpc::StatusCode::PERMISSION_DENIED, 102}}) {
    agent_.SetReply(grpc::Status(c.code, "agent says no"));
    RunResult r = RunCni(EnvFor(c.command), AddConf());
    EXPECT_EQ(r.rc, 1) << c.command;
    EXPECT_EQ(r.code(), c.want) << c.command << " grpc=" << c.code << " out=" << r.out;
    EXPECT_EQ(r.msg(), "agent says no") << c.command;  // the agent's words reach the runtime
    EXPECT_THAT(r.Error()["details"].get<std::string>(), HasSubstr(agent_.socket_path()));
  }
}

TEST_F(PluginAgentTest, AlreadyExistsIs100WithAgentMessage) {
  agent_.SetReply(grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "host port 8080/tcp already mapped by ns1/other"));
  RunResult r = RunCni(EnvFor("ADD"), AddConf());
  EXPECT_EQ(r.code(), 100);
  EXPECT_THAT(r.msg(), HasSubstr("8080/tcp"));
  EXPECT_THAT(r.Error()["details"].get<std::string>(), HasSubstr("ALREADY_EXISTS"));
}

TEST_F(PluginAgentTest, CheckForwardsAndPrintsNothing) {
  RunResult r = RunCni(EnvFor("CHECK"), AddConf("1.1.0"));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_THAT(r.out, IsEmpty());
  ASSERT_EQ(agent_.checks().size(), 1u);
  EXPECT_EQ(agent_.checks()[0].command(), "CHECK");
  EXPECT_THAT(agent_.checks()[0].attachment().ips(), ElementsAre("10.22.0.5", "fd00::5"));
}

TEST_F(PluginAgentTest, DelTwiceWithEmptyNetnsAndNoPrevResult) {
  auto env = EnvFor("DEL");
  env["CNI_NETNS"] = "";
  std::string in = Conf("1.0.0", agent_.socket_path());
  for (int i = 0; i < 2; ++i) {
    RunResult r = RunCni(env, in);
    EXPECT_EQ(r.rc, 0) << r.out;
    EXPECT_THAT(r.out, IsEmpty());
  }
  std::vector<v1::CniRequest> dels = agent_.dels();
  ASSERT_EQ(dels.size(), 2u);
  for (const v1::CniRequest& d : dels) {
    EXPECT_EQ(d.command(), "DEL");
    EXPECT_EQ(d.container_id(), "ctr-1");
    EXPECT_EQ(d.ifname(), "eth0");
    EXPECT_EQ(d.netns(), "");
    EXPECT_EQ(d.attachment().pod_name(), "web-0");
  }
}

TEST_F(PluginAgentTest, GcForwardsValidAttachments) {
  std::string in = Conf("1.1.0", agent_.socket_path(),
                        R"(,"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},)"
                        R"({"containerID":"c2","ifname":"net1"}])");
  RunResult r = RunCni({{"CNI_COMMAND", "GC"}, {"CNI_PATH", "/opt/cni/bin"}}, in);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_THAT(r.out, IsEmpty());
  std::vector<v1::CniGcRequest> gcs = agent_.gcs();
  ASSERT_EQ(gcs.size(), 1u);
  EXPECT_EQ(gcs[0].config(), in);
  EXPECT_EQ(gcs[0].cni_version(), "1.1.0");
  EXPECT_EQ(gcs[0].network_name(), "podnet");
  ASSERT_EQ(gcs[0].valid_attachments_size(), 2);
  EXPECT_EQ(gcs[0].valid_attachments(0).container_id(), "c1");
  EXPECT_EQ(gcs[0].valid_attachments(0).ifname(), "eth0");
  EXPECT_EQ(gcs[0].valid_attachments(1).container_id(), "c2");
  EXPECT_EQ(gcs[0].valid_attachments(1).ifname(), "net1");
}

TEST_F(PluginAgentTest, GcWithoutValidAttachmentsIsRefused) {
  RunResult r = RunCni({{"CNI_COMMAND", "GC"}}, Conf("1.1.0", agent_.socket_path()));
  EXPECT_EQ(r.code(), 7);
  EXPECT_THAT(r.msg(), HasSubstr("cni.dev/valid-attachments"));
  EXPECT_TRUE(agent_.gcs().empty());  // never asked the agent to delete everything
}

TEST_F(PluginAgentTest, StatusReadyAndNotReady) {
  std::string in = Conf("1.1.0", agent_.socket_path());
  RunResult ready = RunCni({{"CNI_COMMAND", "STATUS"}}, in);
  EXPECT_EQ(ready.rc, 0) << ready.out;
  EXPECT_THAT(ready.out, IsEmpty());

  agent_.SetReady(false, "adopting kernel state after restart");
  RunResult not_ready = RunCni({{"CNI_COMMAND", "STATUS"}}, in);
  EXPECT_EQ(not_ready.rc, 1);
  EXPECT_EQ(not_ready.code(), 50);
  EXPECT_THAT(not_ready.msg(), HasSubstr("adopting kernel state after restart"));
  EXPECT_EQ(agent_.status_calls(), 2);

  agent_.SetReply(grpc::Status(grpc::StatusCode::INTERNAL, "boom"));
  EXPECT_EQ(RunCni({{"CNI_COMMAND", "STATUS"}}, in).code(), 50);
}

// --- agent down or hung: always an answer within the timeout ---------------------

constexpr absl::Duration kSlack = absl::Milliseconds(700);

TEST(PluginNoAgentTest, MissingSocketIs11NamingThePath) {
  TempDir dir;
  std::string sock = dir.path() + "/absent.sock";
  for (const char* cmd : {"ADD", "DEL", "CHECK"}) {
    absl::Time start = absl::Now();
    RunResult r = RunCni(EnvFor(cmd), Conf("1.0.0", sock, std::string(R"(,"timeout":"1s","prevResult":)") + kBridgePrevResult));
    absl::Duration took = absl::Now() - start;
    EXPECT_EQ(r.rc, 1) << cmd;
    EXPECT_EQ(r.code(), 11) << cmd << " " << r.out;
    EXPECT_EQ(r.msg(), "ruleplane agent not reachable at " + sock) << cmd;
    EXPECT_THAT(r.Error()["details"].get<std::string>(), HasSubstr("UNAVAILABLE")) << cmd;
    EXPECT_LT(took, absl::Seconds(1) + kSlack) << cmd;
  }
  RunResult status = RunCni({{"CNI_COMMAND", "STATUS"}}, Conf("1.1.0", sock));
  EXPECT_EQ(status.code(), 50);
  EXPECT_EQ(status.msg(), "ruleplane agent not reachable at " + sock);
}

// A socket file left behind by a dead agent: bound, nobody listening.
TEST(PluginNoAgentTest, StaleSocketIs11) {
  TempDir dir;
  std::string sock = dir.path() + "/stale.sock";
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
  ASSERT_TRUE(fd.valid()) << std::strerror(errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
  absl::Time start = absl::Now();
  RunResult r = RunCni(EnvFor("ADD"), Conf("1.0.0", sock, std::string(R"(,"timeout":1,"prevResult":)") + kBridgePrevResult));
  EXPECT_EQ(r.code(), 11) << r.out;
  EXPECT_EQ(r.msg(), "ruleplane agent not reachable at " + sock);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1) + kSlack);
}

// Something accepts connections (kernel backlog) but never speaks HTTP/2:
// the call must end at the deadline.
TEST(PluginNoAgentTest, SilentListenerEndsAtDeadline) {
  TempDir dir;
  std::string sock = dir.path() + "/silent.sock";
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
  ASSERT_TRUE(fd.valid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd.get(), 16), 0);
  absl::Time start = absl::Now();
  RunResult r =
      RunCni(EnvFor("ADD"), Conf("1.0.0", sock, std::string(R"(,"timeout":"300ms","prevResult":)") + kBridgePrevResult));
  absl::Duration took = absl::Now() - start;
  EXPECT_EQ(r.code(), 11) << r.out;
  EXPECT_THAT(r.msg(), HasSubstr(sock));
  EXPECT_GE(took, absl::Milliseconds(250));
  EXPECT_LT(took, absl::Milliseconds(1500));
}

// A hung agent whose listen backlog is full: connect() itself would wait;
// the plugin's connect is bounded by the same deadline as the call.
TEST(PluginNoAgentTest, FullBacklogIs11AtDeadline) {
  TempDir dir;
  std::string sock = dir.path() + "/full.sock";
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM, 0));
  ASSERT_TRUE(listener.valid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener.get(), 0), 0);
  std::vector<UniqueFd> queued;  // never accepted
  bool full = false;
  for (int i = 0; i < 64 && !full; ++i) {
    UniqueFd c(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0));
    ASSERT_TRUE(c.valid());
    if (::connect(c.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
      full = true;
    }
    queued.push_back(std::move(c));
  }
  ASSERT_TRUE(full) << "could not fill the listen backlog";
  absl::Time start = absl::Now();
  RunResult r =
      RunCni(EnvFor("ADD"), Conf("1.0.0", sock, std::string(R"(,"timeout":"300ms","prevResult":)") + kBridgePrevResult));
  absl::Duration took = absl::Now() - start;
  EXPECT_EQ(r.code(), 11) << r.out;
  EXPECT_EQ(r.msg(), "ruleplane agent not reachable at " + sock);
  EXPECT_THAT(r.Error()["details"].get<std::string>(), HasSubstr("UNAVAILABLE")) << r.out;
  EXPECT_GE(took, absl::Milliseconds(250));
  EXPECT_LT(took, absl::Milliseconds(1500));
}

TEST_F(PluginAgentTest, SlowAgentIs11WithinTimeout) {
  agent_.SetDelay(absl::Seconds(5));
  for (const char* cmd : {"ADD", "DEL"}) {
    absl::Time start = absl::Now();
    RunResult r = RunCni(EnvFor(cmd), AddConf("1.0.0", R"(,"timeout":"300ms")"));
    absl::Duration took = absl::Now() - start;
    EXPECT_EQ(r.rc, 1) << cmd;
    EXPECT_EQ(r.code(), 11) << cmd << " " << r.out;
    EXPECT_THAT(r.msg(), HasSubstr("did not answer")) << cmd;
    EXPECT_THAT(r.msg(), HasSubstr("300ms")) << cmd;
    EXPECT_THAT(r.Error()["details"].get<std::string>(), HasSubstr("DEADLINE_EXCEEDED")) << cmd;
    EXPECT_GE(took, absl::Milliseconds(250)) << cmd;
    EXPECT_LT(took, absl::Milliseconds(1500)) << cmd;
  }
}

// --- the real binary: main.cc wiring (env, stdin, stdout, exit status) ------------

struct ExecResult {
  int status = -1;
  std::string out;
};

// Runs the built `ruleplane` with only `env` in its environment and `in` on
// stdin (through a temp file).
ExecResult Exec(const std::map<std::string, std::string>& env, const std::string& in) {
  TempDir dir;
  std::string input = dir.path() + "/stdin.json";
  FILE* f = std::fopen(input.c_str(), "w");
  if (f == nullptr) return {};
  std::fwrite(in.data(), 1, in.size(), f);
  std::fclose(f);
  std::string cmd = "env -i";
  for (const auto& [k, v] : env) cmd += " '" + k + "=" + v + "'";
  cmd += std::string(" '") + RULEPLANE_CNI_BINARY + "' < '" + input + "' 2>/dev/null";
  ExecResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TEST(PluginExecTest, Version) {
  ExecResult r = Exec({{"CNI_COMMAND", "VERSION"}}, R"({"cniVersion":"1.1.0"})");
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, VersionJson());
}

TEST(PluginExecTest, MissingCommand) {
  ExecResult r = Exec({}, "{}");
  EXPECT_EQ(r.status, 1);
  nlohmann::json e = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(e.is_object()) << r.out;
  EXPECT_EQ(e["code"], 4);
}

TEST_F(PluginAgentTest, ExecAddReadsStdinAndPrintsPrevResult) {
  ExecResult r = Exec(EnvFor("ADD"), AddConf());
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, kBridgePrevResult);
  ASSERT_EQ(agent_.adds().size(), 1u);
  EXPECT_EQ(agent_.adds()[0].attachment().pod_uid(), "0b5c-uid");
}

}  // namespace
}  // namespace ruleplane::cni
