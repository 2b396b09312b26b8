// Bring-up pieces that need no privileges: endpoint choice (never the
// Service VIP), kubeconfig reading, conflist validation and atomic install,
// the recorder's timeline and its history file, the SVG waterfall.
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/bringup/api_server_probe.h"
#include "agent/bringup/cni_conflist.h"
#include "agent/bringup/recorder.h"
#include "gtest/gtest.h"
#include "tools/ruleplanectl/bringup_svg.h"

namespace ruleplane::bringup {
namespace {

namespace fs = std::filesystem;

GetEnv Env(std::map<std::string, std::string> vars) {
  return [vars](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

fs::path TempDir() {
  fs::path d = fs::temp_directory_path() /
               absl::StrCat("rp-bringup-", getpid(), "-", ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(ParseEndpoint, Forms) {
  auto a = ParseEndpoint("https://10.0.0.1:6443");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "10.0.0.1");
  EXPECT_EQ(a->port, 6443);
  auto b = ParseEndpoint("api.example.com");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->port, 443);
  auto c = ParseEndpoint("https://[fd00::1]:6443/");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->host, "fd00::1");
  EXPECT_EQ(c->ToString(), "[fd00::1]:6443");
  EXPECT_FALSE(ParseEndpoint("host:99999").ok());
  EXPECT_FALSE(ParseEndpoint("https://").ok());
}

TEST(KubeconfigServer, FollowsTheCurrentContext) {
  const char* yaml = R"(apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: AAAA
    server: https://10.0.0.9:6443
  name: other
- cluster:
    server: "https://192.168.1.10:6443"
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: system:node:n1
  name: system:node:n1@kubernetes
current-context: system:node:n1@kubernetes
users:
- name: system:node:n1
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
)";
  EXPECT_EQ(KubeconfigServer(yaml), "https://192.168.1.10:6443");
  EXPECT_EQ(KubeconfigServer("clusters:\n- cluster:\n    server: https://1.2.3.4\n  name: x\n"), "https://1.2.3.4");
  EXPECT_EQ(KubeconfigServer("apiVersion: v1\n"), std::nullopt);
}

TEST(ChooseApiServerEndpoint, ConfigThenKubeconfigThenOverriddenEnvNeverTheVip) {
  EndpointChoice c = ChooseApiServerEndpoint("10.0.0.1:6443", "", Env({}));
  ASSERT_TRUE(c.endpoint);
  EXPECT_EQ(c.endpoint->source, "config api_server.endpoint");

  fs::path d = TempDir();
  std::ofstream(d / "kubeconfig") << "clusters:\n- cluster:\n    server: https://172.16.0.2:6443\n  name: k\n";
  c = ChooseApiServerEndpoint("", (d / "kubeconfig").string(), Env({{"KUBERNETES_SERVICE_HOST", "9.9.9.9"}}));
  ASSERT_TRUE(c.endpoint);
  EXPECT_EQ(c.endpoint->host, "172.16.0.2");

  // kubelet's injected env: the Service VIP, refused.
  c = ChooseApiServerEndpoint("", "", Env({{"KUBERNETES_SERVICE_HOST", "10.96.0.1"},
                                           {"KUBERNETES_SERVICE_PORT", "443"},
                                           {"KUBERNETES_PORT", "tcp://10.96.0.1:443"}}));
  EXPECT_FALSE(c.endpoint);
  EXPECT_NE(c.why_none.find("Service VIP"), std::string::npos) << c.why_none;
  // Overridden in the DaemonSet with a direct address: used.
  c = ChooseApiServerEndpoint("", "", Env({{"KUBERNETES_SERVICE_HOST", "192.168.1.10"},
                                           {"KUBERNETES_SERVICE_PORT", "6443"},
                                           {"KUBERNETES_PORT", "tcp://10.96.0.1:443"}}));
  ASSERT_TRUE(c.endpoint);
  EXPECT_EQ(c.endpoint->ToString(), "192.168.1.10:6443");
  EXPECT_EQ(c.endpoint->source, "in-cluster env");

  c = ChooseApiServerEndpoint("", "", Env({}));
  EXPECT_FALSE(c.endpoint);
  EXPECT_NE(c.why_none.find("no endpoint configured"), std::string::npos);
  fs::remove_all(d);
}

TEST(ProbeTcp, ListeningAndClosedPorts) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(fd, 4), 0);
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ApiServerEndpoint ep{"127.0.0.1", ntohs(a.sin_port), "test"};
  EXPECT_TRUE(ProbeTcp(ep, absl::Seconds(1)).ok());
  close(fd);
  EXPECT_FALSE(ProbeTcp(ep, absl::Seconds(1)).ok());
}

constexpr char kConflist[] = R"({"cniVersion":"1.0.0","name":"podnet","plugins":[
  {"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.88.0.0/16"}},
  {"type":"ruleplane","capabilities":{"portMappings":true}}]})";

TEST(Conflist, Validation) {
  EXPECT_TRUE(ValidateConflist(kConflist).ok());
  EXPECT_FALSE(ValidateConflist("{").ok());
  EXPECT_NE(ValidateConflist(R"({"cniVersion":"1.0.0","name":"x","plugins":[{"type":"ruleplane"}]})").message().find(
                "chained"),
            std::string::npos);
  EXPECT_NE(ValidateConflist(R"({"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"}]})").message().find(
                "no plugin of type \"ruleplane\""),
            std::string::npos);
  EXPECT_NE(ValidateConflist(R"({"name":"x","plugins":[]})").message().find("cniVersion"), std::string::npos);
}

TEST(Conflist, InstallIsAtomicIdempotentAndRemoveOnlyTouchesOurs) {
  fs::path d = TempDir();
  absl::StatusOr<bool> w = InstallConflist(d.string(), "10-ruleplane.conflist", kConflist);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE(*w);
  w = InstallConflist(d.string(), "10-ruleplane.conflist", kConflist);
  ASSERT_TRUE(w.ok());
  EXPECT_FALSE(*w) << "same content is not rewritten";
  int files = 0;
  for (const auto& e : fs::directory_iterator(d)) {
    ++files;
    EXPECT_EQ(e.path().filename(), "10-ruleplane.conflist") << "no temp file left behind";
  }
  EXPECT_EQ(files, 1);
  std::ofstream(d / "05-other.conflist") << R"({"cniVersion":"1.0.0","name":"o","plugins":[{"type":"bridge"}]})";
  EXPECT_FALSE(RemoveConflist(d.string(), "05-other.conflist").ok()) << "never someone else's file";
  EXPECT_TRUE(fs::exists(d / "05-other.conflist"));
  absl::StatusOr<bool> r = RemoveConflist(d.string(), "10-ruleplane.conflist");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(*r);
  EXPECT_FALSE(fs::exists(d / "10-ruleplane.conflist"));
  fs::remove_all(d);
}

TEST(Recorder, PhasesAreMonotoneAndHistoryIsKept) {
  fs::path d = TempDir();
  for (int run = 0; run < 4; ++run) {
    // Each "run" is a new recorder; same pid, so give each a distinct id.
    BringupRecorder r({"test", "/proc", nullptr});
    ASSERT_TRUE(r.AttachStateDir(d.string(), 3).ok());
    int a = r.Begin(kConfigLoaded);
    r.End(a, PhaseStatus::kOk, "flags");
    int b = r.Begin(kKernelProbes);
    r.End(b, PhaseStatus::kFailed, "no nf_tables");
    r.Instant(kCniConfigInstalled, PhaseStatus::kSkipped, "no conf dir");
    EXPECT_TRUE(r.InstantOnce(kFirstCniAdd));
    EXPECT_FALSE(r.InstantOnce(kFirstCniAdd));
    int c = r.Begin(kWaitingForApiServer);
    (void)c;  // left running: MarkFinished closes it
    r.MarkFinished("stopped early");
    v1::BringupReport rep = r.Current();
    EXPECT_EQ(rep.outcome(), "failed");
    ASSERT_EQ(rep.phases_size(), 5);
    for (int i = 1; i < rep.phases_size(); ++i) {
      EXPECT_LE(rep.phases(i - 1).start_seconds(), rep.phases(i).start_seconds());
    }
    for (const auto& p : rep.phases()) EXPECT_LE(p.start_seconds(), p.end_seconds());
    EXPECT_EQ(rep.phases(1).status(), "failed");
    EXPECT_EQ(rep.phases(4).status(), "failed");
    EXPECT_NE(rep.phases(4).detail().find("stopped early"), std::string::npos);
    EXPECT_GE(rep.phases(0).start_seconds(), 0);
    EXPECT_GT(rep.process_start_since_boot_seconds(), 0);
    if (run == 0) {
      EXPECT_TRUE(r.Previous(10).empty());
    }
    ASSERT_TRUE(r.Save().ok());
    // The same process id: tests fake distinct starts by editing the id.
    std::ifstream in(d / "bringup-history.json");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    const std::string quoted = absl::StrCat("\"", rep.id(), "\"");
    for (size_t at = 0; (at = text.find(quoted, at)) != std::string::npos;) {
      const std::string renamed = absl::StrCat("\"", rep.id(), "-run", run, "\"");
      text.replace(at, quoted.size(), renamed);
      at += renamed.size();
    }
    std::ofstream(d / "bringup-history.json") << text;
  }
  BringupRecorder last({"test", "/proc", nullptr});
  ASSERT_TRUE(last.AttachStateDir(d.string(), 3).ok());
  std::vector<v1::BringupReport> prev = last.Previous(10);
  EXPECT_EQ(prev.size(), 3u) << "keep=3 (with the current one, the file holds 3)";
  EXPECT_FALSE(last.Current().first_since_boot()) << "earlier starts in this boot are on record";
  fs::remove_all(d);
}

TEST(Recorder, RunningPhaseLastsSoFar) {
  BringupRecorder r({"test", "/proc", nullptr});
  r.Begin(kWaitingForApiServer);
  absl::SleepFor(absl::Milliseconds(20));
  v1::BringupReport rep = r.Current();
  ASSERT_EQ(rep.phases_size(), 1);
  EXPECT_EQ(rep.phases(0).status(), "running");
  EXPECT_GE(rep.phases(0).end_seconds() - rep.phases(0).start_seconds(), 0.015);
}

TEST(Recorder, DamagedHistoryIsReportedAndReplaced) {
  fs::path d = TempDir();
  std::ofstream(d / "bringup-history.json") << "{ not json";
  BringupRecorder r({"test", "/proc", nullptr});
  absl::Status s = r.AttachStateDir(d.string(), 5);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(r.Current().first_since_boot());
  EXPECT_TRUE(r.Save().ok());
  BringupRecorder again({"test", "/proc", nullptr});
  EXPECT_TRUE(again.AttachStateDir(d.string(), 5).ok());
  fs::remove_all(d);
}

TEST(BringupSvg, OneBarPerPhaseAndPreviousStartsEscaped) {
  v1::BringupReport cur;
  cur.set_id("abc-1-2");
  cur.set_outcome("ready");
  cur.set_ready_seconds(0.5);
  auto add = [](v1::BringupReport* r, const std::string& name, const std::string& status, double s, double e,
                const std::string& detail) {
    v1::BringupPhase* p = r->add_phases();
    p->set_name(name);
    p->set_status(status);
    p->set_start_seconds(s);
    p->set_end_seconds(e);
    p->set_detail(detail);
  };
  add(&cur, "config loaded", "ok", 0.01, 0.02, "flags <only> & \"quotes\"");
  add(&cur, "waiting for API server", "failed", 0.02, 4.1, "timeout");
  add(&cur, "ready", "ok", 0.5, 0.5, "");
  v1::BringupReport prev = cur;
  prev.set_outcome("failed");
  std::string svg = tools::BringupSvg(cur, {prev});
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("</svg>\n"), std::string::npos);
  size_t phases = 0;
  for (size_t at = 0; (at = svg.find("<g class=\"phase\">", at)) != std::string::npos; ++at) ++phases;
  EXPECT_EQ(phases, 3u);
  EXPECT_NE(svg.find("flags &lt;only&gt; &amp; &quot;quotes&quot;"), std::string::npos);
  EXPECT_EQ(svg.find("<only>"), std::string::npos);
  EXPECT_NE(svg.find("<g class=\"previous\">"), std::string::npos);
  EXPECT_NE(svg.find("4.08s"), std::string::npos) << "the wait's duration is printed";
  EXPECT_EQ(tools::HumanSeconds(0.0456), "45.6ms");
  EXPECT_EQ(tools::HumanSeconds(2.5), "2.50s");
}

}  // namespace
}  // namespace ruleplane::bringup
