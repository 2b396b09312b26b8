// The plugin's pure parts (CNI_ARGS, environment, config, prevResult,
// portMappings, code mapping, output shapes) and RunPlugin paths that fail
// before any agent call. No privileges, no sockets except a path that does
// not exist.
#include "cni/plugin.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test/unit/cni/plugin_test_util.h"

namespace ruleplane::cni {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::Conf;
using testing::EnvFor;
using testing::kBridgePrevResult;
using testing::RunCni;
using testing::RunResult;
using json = nlohmann::json;

// A socket path nobody listens on: commands that get past validation fail
// with 11, which is how these tests see that validation passed.
constexpr const char* kNoAgent = "/nonexistent/ruleplane-test/agent.sock";

// --- CNI_ARGS ---------------------------------------------------------------

TEST(ParseCniArgsTest, OrderIndependent) {
  for (const char* args : {"K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_UID=u1",
                           "K8S_POD_UID=u1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=ns1",
                           "K8S_POD_NAME=web-0;K8S_POD_UID=u1;K8S_POD_NAMESPACE=ns1"}) {
    absl::StatusOr<CniArgs> a = ParseCniArgs(args);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->pod_namespace, "ns1") << args;
    EXPECT_EQ(a->pod_name, "web-0") << args;
    EXPECT_EQ(a->pod_uid, "u1") << args;
  }
}

TEST(ParseCniArgsTest, IgnoresUnknownAndInfraKeys) {
  absl::StatusOr<CniArgs> a = ParseCniArgs(
      "IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID=abc;FOO=bar;K8S_POD_NAME=p;X=a=b;;K8S_POD_NAMESPACE=n;");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->pod_name, "p");
  EXPECT_EQ(a->pod_namespace, "n");
  EXPECT_EQ(a->pod_uid, "");
}

TEST(ParseCniArgsTest, EmptyIsFine) {
  absl::StatusOr<CniArgs> a = ParseCniArgs("");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->pod_name, "");
}

TEST(ParseCniArgsTest, ValueMayContainEquals) {
  absl::StatusOr<CniArgs> a = ParseCniArgs("K8S_POD_NAME=a=b");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->pod_name, "a=b");
}

TEST(ParseCniArgsTest, MalformedPairIsRejected) {
  for (const char* bad : {"K8S_POD_NAME", "K8S_POD_NAME=a;garbage", "=value"}) {
    absl::StatusOr<CniArgs> a = ParseCniArgs(bad);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(a.status().message()), HasSubstr("CNI_ARGS")) << bad;
  }
}

TEST(RunPluginTest, MalformedCniArgsIsCode4) {
  auto env = EnvFor("ADD");
  env["CNI_ARGS"] = "K8S_POD_NAME=a;oops";
  RunResult r = RunCni(env, Conf("1.0.0", kNoAgent, std::string(R"(,"prevResult":)") + kBridgePrevResult));
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.code(), 4);
  EXPECT_THAT(r.msg(), HasSubstr("\"oops\""));
}

// --- environment --------------------------------------------------------------

TEST(RunPluginTest, MissingCommandIsCode4) {
  auto env = EnvFor("ADD");
  env.erase("CNI_COMMAND");
  RunResult r = RunCni(env, Conf("1.0.0", kNoAgent));
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.code(), 4);
  EXPECT_THAT(r.msg(), HasSubstr("CNI_COMMAND"));
  EXPECT_THAT(r.err, HasSubstr("code=4"));
}

TEST(RunPluginTest, UnknownCommandIsCode4) {
  RunResult r = RunCni(EnvFor("FROB"), Conf("1.0.0", kNoAgent));
  EXPECT_EQ(r.code(), 4);
  EXPECT_THAT(r.msg(), HasSubstr("FROB"));
}

TEST(RunPluginTest, MissingRequiredVariableIsCode4NamingIt) {
  struct Case {
    const char* command;
    const char* unset;
  };
  for (Case c : {Case{"ADD", "CNI_CONTAINERID"}, Case{"ADD", "CNI_NETNS"}, Case{"ADD", "CNI_IFNAME"},
                 Case{"CHECK", "CNI_NETNS"}, Case{"DEL", "CNI_CONTAINERID"}, Case{"DEL", "CNI_IFNAME"}}) {
    auto env = EnvFor(c.command);
    env[c.unset] = "";
    RunResult r = RunCni(env, Conf("1.0.0", kNoAgent, std::string(R"(,"prevResult":)") + kBridgePrevResult));
    EXPECT_EQ(r.code(), 4) << c.command << " " << c.unset;
    EXPECT_THAT(r.msg(), HasSubstr(c.unset)) << c.command;
  }
}

TEST(ParseEnvTest, DelAllowsEmptyNetns) {
  auto env = EnvFor("DEL");
  env.erase("CNI_NETNS");
  absl::StatusOr<Env> e = ParseEnv(env);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->netns, "");
  EXPECT_EQ(e->cni_args.pod_name, "web-0");
}

TEST(ParseEnvTest, GcStatusVersionNeedOnlyTheCommand) {
  for (const char* cmd : {"GC", "STATUS", "VERSION"}) {
    absl::StatusOr<Env> e = ParseEnv({{"CNI_COMMAND", cmd}});
    EXPECT_TRUE(e.ok()) << cmd << ": " << e.status();
  }
}

TEST(ParseEnvTest, RejectsInvalidIfnameAndContainerId) {
  for (const char* ifname : {"eth0/1", "a:b", "has space", "0123456789abcdef", ".", ".."}) {
    auto env = EnvFor("ADD");
    env["CNI_IFNAME"] = ifname;
    absl::StatusOr<Env> e = ParseEnv(env);
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument) << ifname;
    EXPECT_THAT(std::string(e.status().message()), HasSubstr("CNI_IFNAME")) << ifname;
  }
  for (const char* id : {"-abc", "a/b", "a b"}) {
    auto env = EnvFor("ADD");
    env["CNI_CONTAINERID"] = id;
    EXPECT_THAT(std::string(ParseEnv(env).status().message()), HasSubstr("CNI_CONTAINERID")) << id;
  }
}

// --- VERSION, versions, config -------------------------------------------------

TEST(RunPluginTest, VersionOutput) {
  RunResult r = RunCni({{"CNI_COMMAND", "VERSION"}}, R"({"cniVersion":"0.3.1"})");
  EXPECT_EQ(r.rc, 0);
  EXPECT_EQ(r.out, R"({"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]})");
  EXPECT_EQ(RunCni({{"CNI_COMMAND", "VERSION"}}, "").out, VersionJson());
}

TEST(RunPluginTest, SupportedVersionsPassValidation) {
  for (const char* v : {"0.4.0", "1.0.0", "1.1.0"}) {
    RunResult r = RunCni(EnvFor("ADD"), Conf(v, kNoAgent, std::string(R"(,"prevResult":)") + kBridgePrevResult));
    EXPECT_EQ(r.code(), 11) << v << ": " << r.out;  // got as far as dialing the agent
    EXPECT_EQ(r.Error()["cniVersion"], v);          // and answered in the config's version
  }
}

TEST(RunPluginTest, UnsupportedVersionIsCode1) {
  for (const char* v : {"0.3.1", "0.1.0", "2.0.0", ""}) {
    RunResult r = RunCni(EnvFor("ADD"), Conf(v, kNoAgent, std::string(R"(,"prevResult":)") + kBridgePrevResult));
    EXPECT_EQ(r.code(), 1) << v;
    EXPECT_EQ(r.Error()["cniVersion"], "1.1.0") << v;
  }
  RunResult missing = RunCni(EnvFor("DEL"), R"({"name":"n","type":"ruleplane"})");
  EXPECT_EQ(missing.code(), 1);
  EXPECT_THAT(missing.msg(), HasSubstr("cniVersion"));
}

TEST(RunPluginTest, GcAndStatusNeed110) {
  for (const char* cmd : {"GC", "STATUS"}) {
    RunResult r = RunCni({{"CNI_COMMAND", cmd}}, Conf("1.0.0", kNoAgent, R"(,"cni.dev/valid-attachments":[])"));
    EXPECT_EQ(r.code(), 1) << cmd;
    EXPECT_THAT(r.msg(), HasSubstr("1.1.0")) << cmd;
  }
  RunResult r = RunCni({{"CNI_COMMAND", "GC"}}, Conf("1.1.0", kNoAgent, R"(,"cni.dev/valid-attachments":[])"));
  EXPECT_EQ(r.code(), 11);
}

TEST(RunPluginTest, ErrorJsonShape) {
  RunResult r = RunCni(EnvFor("ADD"), Conf("0.4.0", kNoAgent));  // no prevResult
  EXPECT_EQ(r.rc, 1);
  json e = json::parse(r.out);
  ASSERT_TRUE(e.is_object());
  EXPECT_EQ(e.size(), 4u) << r.out;
  EXPECT_EQ(e["cniVersion"], "0.4.0");
  EXPECT_TRUE(e["code"].is_number_integer());
  EXPECT_TRUE(e["msg"].is_string());
  EXPECT_TRUE(e["details"].is_string());
  // Keys in the documented order, for humans reading runtime logs.
  EXPECT_EQ(r.out.find("\"cniVersion\""), 1u);
  EXPECT_LT(r.out.find("\"code\""), r.out.find("\"msg\""));
  EXPECT_LT(r.out.find("\"msg\""), r.out.find("\"details\""));
}

TEST(FormatCniErrorTest, InvalidUtf8DoesNotThrow) {
  std::string s = FormatCniError("1.1.0", 103, "bad \xff byte", "\xc3");
  json e = json::parse(s);
  EXPECT_EQ(e["code"], 103);
}

TEST(RunPluginTest, UndecodableStdinIsCode6) {
  for (const char* in : {"", "{", "not json", "{\"cniVersion\":\"1.0.0\",}", "[1,2]", "\"str\""}) {
    RunResult r = RunCni(EnvFor("ADD"), in);
    EXPECT_EQ(r.rc, 1) << in;
    EXPECT_EQ(r.code(), 6) << in;
    EXPECT_EQ(r.Error()["cniVersion"], "1.1.0") << in;
  }
}

TEST(RunPluginTest, BadPluginKeysAreCode7NamingTheKey) {
  struct Case {
    std::string conf;
    const char* key;
  };
  for (const Case& c : {
           Case{R"({"cniVersion":"1.0.0","name":"n","type":"bridge"})", "type"},
           Case{R"({"cniVersion":"1.0.0","name":"n"})", "type"},
           Case{R"({"cniVersion":"1.0.0","name":"n","type":7})", "type"},
           Case{R"({"cniVersion":"1.0.0","type":"ruleplane"})", "name"},
           Case{R"({"cniVersion":"1.0.0","name":["x"],"type":"ruleplane"})", "name"},
           Case{R"({"cniVersion":1,"name":"n","type":"ruleplane"})", "cniVersion"},
           Case{R"({"cniVersion":"1.0.0","name":"n","type":"ruleplane","socket":5})", "socket"},
           Case{R"({"cniVersion":"1.0.0","name":"n","type":"ruleplane","socket":""})", "socket"},
           Case{R"({"cniVersion":"1.0.0","name":"n","type":"ruleplane","socket":"/)" + std::string(120, 'a') + "\"}",
                "socket"},
           Case{R"({"cniVersion":"1.0.0","name":"n","type":"ruleplane","timeout":"soon"})", "timeout"},
           Case{R"({"cniVersion":"1.0.0","name":"n","type":"ruleplane","timeout":{}})", "timeout"},
       }) {
    RunResult r = RunCni(EnvFor("DEL"), c.conf);
    EXPECT_EQ(r.code(), 7) << c.conf << " -> " << r.out;
    EXPECT_THAT(r.msg(), HasSubstr(c.key)) << c.conf;
  }
}

TEST(ParseNetConfTest, DefaultsAndUnknownKeys) {
  absl::StatusOr<NetConf> c =
      ParseNetConf(json::parse(R"({"cniVersion":"1.1.0","name":"n","type":"ruleplane","mystery":{"x":1}})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->socket, "/run/ruleplane/ruleplane.sock");
  EXPECT_EQ(c->timeout, absl::Seconds(2));
  EXPECT_EQ(c->name, "n");
  EXPECT_EQ(c->cni_version, "1.1.0");
}

TEST(ParseTimeoutTest, NumbersAndGoDurations) {
  struct Case {
    const char* json;
    absl::Duration want;
  };
  for (Case c : {Case{"3", absl::Seconds(3)}, Case{"0.25", absl::Milliseconds(250)},
                 Case{R"("500ms")", absl::Milliseconds(500)}, Case{R"("2s")", absl::Seconds(2)},
                 Case{R"("1m30s")", absl::Seconds(90)}, Case{R"("1.5s")", absl::Milliseconds(1500)}}) {
    absl::StatusOr<absl::Duration> d = ParseTimeout(json::parse(c.json));
    ASSERT_TRUE(d.ok()) << c.json << ": " << d.status();
    EXPECT_EQ(*d, c.want) << c.json;
  }
  for (const char* bad : {"0", "-1", R"("0s")", R"("-2s")", R"("5")", R"("inf")", R"("")", "true", "null", "[1]"}) {
    EXPECT_FALSE(ParseTimeout(json::parse(bad)).ok()) << bad;
  }
}

// --- prevResult ------------------------------------------------------------------

TEST(RunPluginTest, AddWithoutPrevResultIsCode7) {
  for (const std::string& conf : {Conf("1.0.0", kNoAgent), Conf("1.0.0", kNoAgent, R"(,"prevResult":null)")}) {
    RunResult r = RunCni(EnvFor("ADD"), conf);
    EXPECT_EQ(r.code(), 7);
    EXPECT_EQ(r.msg(),
              "ruleplane is a chained plugin: prevResult missing (put it after the main plugin in the conflist)");
  }
  EXPECT_EQ(RunCni(EnvFor("CHECK"), Conf("1.0.0", kNoAgent)).code(), 7);
  EXPECT_EQ(RunCni(EnvFor("ADD"), Conf("1.0.0", kNoAgent, R"(,"prevResult":[])")).code(), 7);
}

TEST(SelectIpsTest, KeepsOnlyThePodInterface) {
  absl::StatusOr<std::vector<std::string>> ips = SelectIps(json::parse(kBridgePrevResult), "eth0");
  ASSERT_TRUE(ips.ok()) << ips.status();
  EXPECT_THAT(*ips, ElementsAre("10.22.0.5", "fd00::5"));  // prefix dropped, v6 canonical
}

TEST(SelectIpsTest, FiltersHostSideAndOtherInterfaces) {
  json prev = json::parse(R"({
    "interfaces":[{"name":"cni0"},{"name":"eth0"},{"name":"eth0","sandbox":"/var/run/netns/x"},
                  {"name":"net1","sandbox":"/var/run/netns/x"}],
    "ips":[{"interface":0,"address":"10.22.0.1/16"},
           {"interface":1,"address":"10.22.0.2/16"},
           {"interface":2,"address":"10.22.0.3/16"},
           {"interface":3,"address":"10.99.0.3/16"},
           {"address":"10.22.0.4/16"},
           {"interface":9,"address":"10.22.0.9/16"}]})");
  absl::StatusOr<std::vector<std::string>> ips = SelectIps(prev, "eth0");
  ASSERT_TRUE(ips.ok()) << ips.status();
  // 0: host bridge; 1: no sandbox (host side); 3: another pod interface.
  // Without (usable) interface information an ip is kept, as portmap does.
  EXPECT_THAT(*ips, ElementsAre("10.22.0.3", "10.22.0.4", "10.22.0.9"));
  ips = SelectIps(prev, "net1");
  ASSERT_TRUE(ips.ok());
  EXPECT_THAT(*ips, ElementsAre("10.99.0.3", "10.22.0.4", "10.22.0.9"));
}

TEST(SelectIpsTest, NoInterfaceInfoKeepsAll) {
  absl::StatusOr<std::vector<std::string>> ips =
      SelectIps(json::parse(R"({"ips":[{"version":"4","address":"10.1.0.2/24"},{"address":"2001:db8::2/64"}]})"),
                "eth0");
  ASSERT_TRUE(ips.ok());
  EXPECT_THAT(*ips, ElementsAre("10.1.0.2", "2001:db8::2"));
  ips = SelectIps(json::parse(R"({"cniVersion":"1.0.0"})"), "eth0");
  ASSERT_TRUE(ips.ok());
  EXPECT_TRUE(ips->empty());
}

TEST(SelectIpsTest, MalformedIsRejectedNamingTheField) {
  struct Case {
    const char* prev;
    const char* field;
  };
  for (Case c : {Case{R"({"ips":{}})", "prevResult.ips"}, Case{R"({"ips":[{"address":"nope/24"}]})", "ips[0].address"},
                 Case{R"({"ips":[{"address":"10.0.0.1/24"},{}]})", "ips[1].address"},
                 Case{R"({"ips":[{"address":"10.0.0.1/24","interface":-1}]})", "ips[0].interface"},
                 Case{R"({"ips":[{"address":"10.0.0.1/24","interface":"0"}]})", "ips[0].interface"},
                 Case{R"({"ips":[],"interfaces":{}})", "prevResult.interfaces"}}) {
    absl::StatusOr<std::vector<std::string>> ips = SelectIps(json::parse(c.prev), "eth0");
    EXPECT_EQ(ips.status().code(), absl::StatusCode::kInvalidArgument) << c.prev;
    EXPECT_THAT(std::string(ips.status().message()), HasSubstr(c.field)) << c.prev;
  }
}

// --- portMappings ----------------------------------------------------------------

TEST(ParsePortMappingsTest, ParsesAllShapes) {
  absl::StatusOr<std::vector<v1::PortMapping>> pms = ParsePortMappings(json::parse(R"({"runtimeConfig":{
    "portMappings":[{"hostPort":8080,"containerPort":80},
                    {"hostPort":5353,"containerPort":53,"protocol":"UDP","hostIP":"192.168.1.10"},
                    {"hostPort":9000,"containerPort":9000,"protocol":"sctp","hostIP":"FD00:0:0:0::1"},
                    {"hostPort":443,"containerPort":8443,"protocol":"tcp","hostIP":""}]}})"));
  ASSERT_TRUE(pms.ok()) << pms.status();
  ASSERT_EQ(pms->size(), 4u);
  EXPECT_EQ((*pms)[0].host_port(), 8080u);
  EXPECT_EQ((*pms)[0].container_port(), 80u);
  EXPECT_EQ((*pms)[0].protocol(), "tcp");
  EXPECT_EQ((*pms)[0].host_ip(), "");
  EXPECT_EQ((*pms)[1].protocol(), "udp");
  EXPECT_EQ((*pms)[1].host_ip(), "192.168.1.10");
  EXPECT_EQ((*pms)[2].protocol(), "sctp");
  EXPECT_EQ((*pms)[2].host_ip(), "fd00::1");
  EXPECT_EQ((*pms)[3].host_ip(), "");
}

TEST(ParsePortMappingsTest, AbsentMeansNone) {
  for (const char* conf : {"{}", R"({"runtimeConfig":{}})", R"({"runtimeConfig":{"portMappings":null}})",
                           R"({"runtimeConfig":{"bandwidth":{}}})"}) {
    absl::StatusOr<std::vector<v1::PortMapping>> pms = ParsePortMappings(json::parse(conf));
    ASSERT_TRUE(pms.ok()) << conf;
    EXPECT_TRUE(pms->empty()) << conf;
  }
}

TEST(ParsePortMappingsTest, InvalidIsRejectedNamingTheField) {
  struct Case {
    const char* pm;
    const char* field;
  };
  for (Case c : {Case{R"({"containerPort":80})", "hostPort"}, Case{R"({"hostPort":0,"containerPort":80})", "hostPort"},
                 Case{R"({"hostPort":70000,"containerPort":80})", "hostPort"},
                 Case{R"({"hostPort":"80","containerPort":80})", "hostPort"},
                 Case{R"({"hostPort":80.5,"containerPort":80})", "hostPort"},
                 Case{R"({"hostPort":80,"containerPort":-1})", "containerPort"},
                 Case{R"({"hostPort":80,"containerPort":80,"protocol":"icmp"})", "protocol"},
                 Case{R"({"hostPort":80,"containerPort":80,"protocol":6})", "protocol"},
                 Case{R"({"hostPort":80,"containerPort":80,"hostIP":"example.com"})", "hostIP"},
                 Case{R"({"hostPort":80,"containerPort":80,"hostIP":"10.0.0.1/24"})", "hostIP"},
                 Case{R"("80:80")", "portMappings[0]"}}) {
    std::string conf = std::string(R"({"runtimeConfig":{"portMappings":[)") + c.pm + "]}}";
    absl::StatusOr<std::vector<v1::PortMapping>> pms = ParsePortMappings(json::parse(conf));
    EXPECT_EQ(pms.status().code(), absl::StatusCode::kInvalidArgument) << c.pm;
    EXPECT_THAT(std::string(pms.status().message()), HasSubstr(c.field)) << c.pm;
  }
  EXPECT_FALSE(ParsePortMappings(json::parse(R"({"runtimeConfig":[]})")).ok());
  EXPECT_FALSE(ParsePortMappings(json::parse(R"({"runtimeConfig":{"portMappings":{}}})")).ok());
}

TEST(RunPluginTest, InvalidPortMappingIsCode7) {
  RunResult r = RunCni(EnvFor("ADD"), Conf("1.0.0", kNoAgent,
                                        std::string(R"(,"runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":1}]},"prevResult":)") +
                                            kBridgePrevResult));
  EXPECT_EQ(r.code(), 7);
  EXPECT_THAT(r.msg(), HasSubstr("runtimeConfig.portMappings[0].hostPort"));
}

// --- GC input, code table ----------------------------------------------------------

TEST(ParseValidAttachmentsTest, ParsesAndRequiresTheList) {
  absl::StatusOr<std::vector<v1::AttachmentKey>> keep = ParseValidAttachments(json::parse(
      R"({"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"net1"}]})"));
  ASSERT_TRUE(keep.ok()) << keep.status();
  ASSERT_EQ(keep->size(), 2u);
  EXPECT_EQ((*keep)[1].container_id(), "b");
  EXPECT_EQ((*keep)[1].ifname(), "net1");
  EXPECT_TRUE(ParseValidAttachments(json::parse(R"({"cni.dev/valid-attachments":[]})")).ok());
  for (const char* bad : {"{}", R"({"cni.dev/valid-attachments":{}})",
                          R"({"cni.dev/valid-attachments":[{"containerID":"a"}]})",
                          R"({"cni.dev/valid-attachments":[{"ifname":"eth0","containerID":3}]})"}) {
    EXPECT_EQ(ParseValidAttachments(json::parse(bad)).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(CniCodeForGrpcTest, MatchesTheProtoTable) {
  using grpc::StatusCode;
  EXPECT_EQ(CniCodeForGrpc(StatusCode::OK, Command::kAdd), 0);
  EXPECT_EQ(CniCodeForGrpc(StatusCode::UNAVAILABLE, Command::kAdd), 11);
  EXPECT_EQ(CniCodeForGrpc(StatusCode::DEADLINE_EXCEEDED, Command::kDel), 11);
  EXPECT_EQ(CniCodeForGrpc(StatusCode::ABORTED, Command::kAdd), 11);
  EXPECT_EQ(CniCodeForGrpc(StatusCode::INVALID_ARGUMENT, Command::kAdd), 7);
  EXPECT_EQ(CniCodeForGrpc(StatusCode::ALREADY_EXISTS, Command::kAdd), 100);
  EXPECT_EQ(CniCodeForGrpc(StatusCode::NOT_FOUND, Command::kCheck), 101);
  EXPECT_EQ(CniCodeForGrpc(StatusCode::NOT_FOUND, Command::kAdd), 103);
  EXPECT_EQ(CniCodeForGrpc(StatusCode::PERMISSION_DENIED, Command::kGc), 102);
  EXPECT_EQ(CniCodeForGrpc(StatusCode::INTERNAL, Command::kAdd), 103);
  EXPECT_EQ(CniCodeForGrpc(StatusCode::FAILED_PRECONDITION, Command::kAdd), 103);
  EXPECT_EQ(CniCodeForGrpc(StatusCode::UNAUTHENTICATED, Command::kAdd), 103);
}

}  // namespace
}  // namespace ruleplane::cni
