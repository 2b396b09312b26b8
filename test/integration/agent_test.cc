// Privileged: the real agent binary in a throwaway netns, driven over its
// gRPC socket, checked against the kernel with `nft -j`.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "test/integration/agent_process.h"
#include "test/integration/netns_fixture.h"

namespace ruleplane::testing {
namespace {

using nlohmann::json;

// The neighbourhood of the first differing byte, for readable failures.
std::string FirstDiff(const std::string& a, const std::string& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  size_t from = i > 80 ? i - 80 : 0;
  return "\n  was: ..." + a.substr(from, 200) + "\n  now: ..." + b.substr(from, 200);
}

class PrivilegedAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = PrivilegedSkipReason()) GTEST_SKIP() << *why;
    auto ns = TestNetns::Create();
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = std::move(*ns);
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("rp-agent-", getpid(), "-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    agent_.reset();
    std::filesystem::remove_all(dir_);
  }
  AgentProcess* StartAgent(std::vector<std::string> args = {}) {
    agent_ = std::make_unique<AgentProcess>(ns_.get(), dir_.string(), std::move(args));
    absl::Status s = agent_->Start();
    EXPECT_TRUE(s.ok()) << s;
    return agent_.get();
  }
  // Elements of one set as nft prints them in JSON (strings or concat lists).
  std::string SetJson(const std::string& set) {
    const bool is_map = set.rfind("hostport", 0) == 0;
    CommandResult r = ns_->RunIn(std::string("nft -j list ") + (is_map ? "map" : "set") + " inet ruleplane " + set);
    EXPECT_EQ(r.exit_code, 0) << r.error;
    return r.output;
  }
  bool KernelHasIp(const std::string& ip) {
    return SetJson("pod-ipv4").find("\"" + ip + "\"") != std::string::npos;
  }
  std::string TableWithoutHandles() {
    CommandResult r = ns_->RunIn("nft -j list table inet ruleplane");
    EXPECT_EQ(r.exit_code, 0) << r.error;
    json j = json::parse(r.output);
    // Handles are kernel-assigned ids; everything else must be identical.
    std::function<void(json&)> strip = [&](json& v) {
      if (v.is_object()) {
        v.erase("handle");
        // Table flags legitimately change: an owned table is orphaned
        // (owner bit cleared) while no agent runs, and re-claimed after.
        if (v.contains("name") && v.contains("family") && !v.contains("table")) v.erase("flags");
        for (auto& [k, x] : v.items()) strip(x);
      } else if (v.is_array()) {
        for (auto& x : v) strip(x);
      }
    };
    strip(j);
    return j.dump();
  }

  std::unique_ptr<TestNetns> ns_;
  std::filesystem::path dir_;
  std::unique_ptr<AgentProcess> agent_;
};

TEST_F(PrivilegedAgentTest, CommitsAreReadBackFromTheKernel) {
  AgentProcess* a = StartAgent();
  for (int i = 1; i <= 5; ++i) {
    grpc::Status s = CallAdd(
        a->cni(), AddRequest("c" + std::to_string(i), "10.40.0." + std::to_string(i), 9000 + i));
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  std::string pods = SetJson("pod-ipv4");
  for (int i = 1; i <= 5; ++i)
    EXPECT_NE(pods.find("\"10.40.0." + std::to_string(i) + "\""), std::string::npos) << pods;
  std::string hostports = SetJson("hostport-v4");
  EXPECT_NE(hostports.find("9003"), std::string::npos) << hostports;
  EXPECT_NE(hostports.find("10.40.0.3"), std::string::npos) << hostports;
  // The element comment names its owner.
  EXPECT_NE(pods.find("c=c3/eth0 pod=default/pod-c3"), std::string::npos) << pods;

  ASSERT_TRUE(CallDel(a->cni(), "c3").ok());
  ASSERT_TRUE(CallDel(a->cni(), "c3").ok()) << "DEL is idempotent";
  EXPECT_FALSE(KernelHasIp("10.40.0.3"));
  EXPECT_EQ(SetJson("hostport-v4").find("9003"), std::string::npos);
}

TEST_F(PrivilegedAgentTest, OneBadMutationFailsAloneAndTheKernelKeepsTheRest) {
  // Drift repair off and no owner flag so this test can plant a conflicting
  // element as "another process" and keep it there.
  AgentProcess* a = StartAgent({"--drift_repair=false", "--table_owner=off"});
  CommandResult plant =
      ns_->RunIn("nft add element inet ruleplane hostport-v4 '{ tcp . 7777 : 10.99.99.99 . 80 }'");
  ASSERT_EQ(plant.exit_code, 0) << plant.error;

  constexpr int kN = 24;
  std::vector<grpc::Status> results(kN);
  std::vector<std::thread> threads;
  for (int i = 0; i < kN; ++i) {
    threads.emplace_back([&, i] {
      int port = i == 13 ? 7777 : 0;  // pod 13 collides with the planted element
      results[i] = CallAdd(
          a->cni(), AddRequest("p" + std::to_string(i), "10.41.0." + std::to_string(i + 1), port));
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kN; ++i) {
    if (i == 13) {
      EXPECT_FALSE(results[i].ok());
      EXPECT_NE(results[i].error_message().find("hostport-v4"), std::string::npos)
          << results[i].error_message();
      EXPECT_NE(results[i].error_message().find("p13"), std::string::npos)
          << results[i].error_message();
    } else {
      EXPECT_TRUE(results[i].ok()) << i << ": " << results[i].error_message();
    }
  }
  std::string pods = SetJson("pod-ipv4");
  for (int i = 0; i < kN; ++i) {
    bool present = pods.find("\"10.41.0." + std::to_string(i + 1) + "\"") != std::string::npos;
    EXPECT_EQ(present, i != 13) << "pod " << i;
  }
  // The planted element is untouched: we never edit what is not ours.
  EXPECT_NE(SetJson("hostport-v4").find("10.99.99.99"), std::string::npos);
}

TEST_F(PrivilegedAgentTest, RestartAdoptsTheKernelWithZeroDiff) {
  AgentProcess* a = StartAgent();
  for (int i = 1; i <= 30; ++i) {
    ASSERT_TRUE(CallAdd(a->cni(), AddRequest("r" + std::to_string(i),
                                             "10.42.0." + std::to_string(i), 9100 + i))
                    .ok());
  }
  std::string before = TableWithoutHandles();
  EXPECT_EQ(a->Stop(), 0) << a->Log();
  // Kernel state stays in place across the restart.
  std::string after_stop = TableWithoutHandles();
  EXPECT_TRUE(after_stop == before) << "kernel changed on stop: " << FirstDiff(before, after_stop);
  a = StartAgent();
  std::string after_restart = TableWithoutHandles();
  EXPECT_TRUE(after_restart == before) << "kernel changed on restart: " << FirstDiff(before, after_restart);
  grpc::ClientContext ctx;
  v1::ListTransactionsResponse txns;
  ASSERT_TRUE(a->diag()->ListTransactions(&ctx, {}, &txns).ok());
  ASSERT_FALSE(txns.transactions().empty());
  const v1::Transaction& adopt = txns.transactions(0);
  EXPECT_EQ(adopt.kind(), "adopt");
  EXPECT_EQ(adopt.elements(), 0u) << "no element churn on restart";
  EXPECT_LE(adopt.messages(), 1u) << "at most the ownership claim";
  grpc::ClientContext ctx2;
  v1::DiffDesiredActualResponse diff;
  ASSERT_TRUE(a->diag()->DiffDesiredActual(&ctx2, {}, &diff).ok());
  EXPECT_EQ(diff.differences_size(), 0);
}

TEST_F(PrivilegedAgentTest, SigkillMidStreamLosesNoAcknowledgedMutation) {
  AgentProcess* a = StartAgent();
  std::atomic<int> acked{0};
  std::atomic<bool> stop{false};
  std::vector<int> acked_ids;
  std::mutex mu;
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; !stop.load() && i < 2000; ++i) {
        int id = w * 2000 + i;
        std::string ip = absl::StrCat("10.43.", id / 250, ".", id % 250 + 1);
        grpc::Status s =
            CallAdd(a->cni(), AddRequest("k" + std::to_string(id), ip), absl::Seconds(2));
        if (!s.ok()) break;  // the agent died under us
        std::lock_guard<std::mutex> l(mu);
        acked_ids.push_back(id);
        acked.fetch_add(1);
      }
    });
  }
  while (acked.load() < 150) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  a->Kill();
  stop.store(true);
  for (auto& t : writers) t.join();
  std::vector<int> ids;
  {
    std::lock_guard<std::mutex> l(mu);
    ids = acked_ids;
  }
  ASSERT_GE(ids.size(), 150u);
  a = StartAgent();
  grpc::ClientContext ctx;
  v1::ListAttachmentsResponse list;
  ASSERT_TRUE(a->diag()->ListAttachments(&ctx, {}, &list).ok());
  std::set<std::string> known;
  for (const auto& at : list.attachments()) known.insert(at.container_id());
  std::string pods = SetJson("pod-ipv4");
  for (int id : ids) {
    EXPECT_TRUE(known.count("k" + std::to_string(id)))
        << "acknowledged k" << id << " lost from the model";
    std::string ip = absl::StrCat("10.43.", id / 250, ".", id % 250 + 1);
    EXPECT_NE(pods.find("\"" + ip + "\""), std::string::npos)
        << "acknowledged " << ip << " lost from the kernel";
  }
  grpc::ClientContext ctx2;
  v1::DiffDesiredActualResponse diff;
  ASSERT_TRUE(a->diag()->DiffDesiredActual(&ctx2, {}, &diff).ok());
  EXPECT_EQ(diff.differences_size(), 0) << diff.DebugString();
}

TEST_F(PrivilegedAgentTest, FlushRulesetIsRepairedWithinOneSecond) {
  AgentProcess* a = StartAgent({"--table_owner=off"});
  ASSERT_TRUE(CallAdd(a->cni(), AddRequest("f1", "10.44.0.1", 9201)).ok());
  std::string before = TableWithoutHandles();
  absl::Time t0 = absl::Now();
  ASSERT_EQ(ns_->RunIn("nft flush ruleset").exit_code, 0);
  bool repaired = false;
  while (absl::Now() - t0 < absl::Seconds(3)) {
    CommandResult r = ns_->RunIn("nft list map inet ruleplane hostport-v4 2>/dev/null");
    if (r.exit_code == 0 && r.output.find("9201") != std::string::npos) {
      repaired = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  absl::Duration took = absl::Now() - t0;
  ASSERT_TRUE(repaired) << a->Log();
  EXPECT_LT(took, absl::Seconds(1)) << "repair took " << took;
  std::string repaired_table = TableWithoutHandles();
  EXPECT_TRUE(repaired_table == before) << "repaired table differs: " << FirstDiff(before, repaired_table);
  EXPECT_NE(a->Log().find("table changed by nft"), std::string::npos)
      << "the log names who changed it:\n"
      << a->Log();
  grpc::ClientContext ctx;
  v1::GetStatusResponse st;
  ASSERT_TRUE(a->diag()->GetStatus(&ctx, {}, &st).ok());
  EXPECT_GE(st.drift_repairs(), 1u);
}

TEST_F(PrivilegedAgentTest, OwnedTableSurvivesOtherProcesses) {
  CommandResult k = RunShell("uname -r");
  AgentProcess* a = StartAgent({"--table_owner=auto"});
  ASSERT_TRUE(CallAdd(a->cni(), AddRequest("o1", "10.45.0.1")).ok());
  grpc::ClientContext ctx;
  v1::GetStatusResponse st;
  ASSERT_TRUE(a->diag()->GetStatus(&ctx, {}, &st).ok());
  if (!st.table_owner()) GTEST_SKIP() << "kernel " << k.output << " has no NFT_TABLE_F_PERSIST";
  // Other processes can neither delete nor flush an owned table.
  EXPECT_NE(ns_->RunIn("nft delete table inet ruleplane").exit_code, 0);
  ns_->RunIn("nft flush ruleset");
  EXPECT_TRUE(KernelHasIp("10.45.0.1"));
  // Persist: the table outlives the agent, and the next agent re-claims it.
  a->Kill();
  EXPECT_TRUE(KernelHasIp("10.45.0.1"));
  a = StartAgent({"--table_owner=auto"});
  ASSERT_TRUE(CallAdd(a->cni(), AddRequest("o2", "10.45.0.2")).ok()) << a->Log();
  EXPECT_TRUE(KernelHasIp("10.45.0.2"));
}

TEST_F(PrivilegedAgentTest, NonRootClientIsDeniedMutations) {
  // Socket group 65534 lets uid 65534 connect; mutations stay root-only.
  AgentProcess* a = StartAgent({"--socket_gid=65534"});
  std::string client = absl::StrCat("setpriv --reuid=65534 --regid=65534 --clear-groups ",
                                    RULEPLANECTL_BIN, " --socket=", a->socket());
  CommandResult status = RunShell(client + " status");
  EXPECT_EQ(status.exit_code, 0) << status.error << status.output;
  // A mutation from the same uid, through the real CNI plugin binary.
  std::string del = absl::StrCat(
      "echo '{\"cniVersion\":\"1.0.0\",\"name\":\"t\",\"type\":\"ruleplane\",\"socket\":\"",
      a->socket(),
      "\"}' | setpriv --reuid=65534 --regid=65534 --clear-groups env CNI_COMMAND=DEL "
      "CNI_CONTAINERID=x ",
      "CNI_IFNAME=eth0 CNI_NETNS= CNI_PATH=/usr/lib/cni ", RULEPLANE_PLUGIN_BIN);
  CommandResult denied = RunShell(del);
  EXPECT_NE(denied.exit_code, 0);
  EXPECT_NE(denied.output.find("\"code\":102"), std::string::npos) << denied.output;
  EXPECT_NE(denied.output.find("uid 65534"), std::string::npos) << denied.output;
  // Root may.
  EXPECT_TRUE(CallDel(a->cni(), "whatever").ok());
}

// ---- bad input: one clear message, non-zero exit, nothing half-applied ----

class PrivilegedAgentBadInputTest : public PrivilegedAgentTest {
 protected:
  CommandResult RunAgent(const std::string& args) {
    return ns_->RunIn(absl::StrCat(RULEPLANE_AGENT_BIN, " --socket=", dir_.string(),
                                   "/s.sock --metrics_address= ", "--state_dir=", dir_.string(),
                                   "/state ", args));
  }
};

TEST_F(PrivilegedAgentBadInputTest, UnknownConfigFieldIsNamed) {
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "c.json") << R"({"table": "ruleplane", "tabel_owner": "on"})";
  CommandResult r = RunAgent("--config=" + (dir_ / "c.json").string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.error.find("tabel_owner"), std::string::npos) << r.error;
  EXPECT_NE(ns_->RunIn("nft list table inet ruleplane").exit_code, 0) << "nothing may be applied";
}

TEST_F(PrivilegedAgentBadInputTest, MalformedConfigIsReported) {
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "c.json") << "{ not json";
  CommandResult r = RunAgent("--config=" + (dir_ / "c.json").string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.error.find("c.json"), std::string::npos) << r.error;
}

TEST_F(PrivilegedAgentBadInputTest, BadValuesNameTheField) {
  CommandResult r = RunAgent("--table=kube-proxy");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.error.find("table"), std::string::npos) << r.error;
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "c.json") << R"({"dnat_priority": -100})";
  r = RunAgent("--config=" + (dir_ / "c.json").string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.error.find("dnat_priority"), std::string::npos) << r.error;
  // Refused before the state dir or the table is touched.
  std::filesystem::remove_all(dir_ / "state");
  r = RunAgent("--grpc_poller_keepalive_ms=1000");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.error.find("grpc_poller_keepalive_ms"), std::string::npos) << r.error;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "state"));
  EXPECT_NE(ns_->RunIn("nft list table inet ruleplane").exit_code, 0) << "nothing may be applied";
}

TEST_F(PrivilegedAgentBadInputTest, UnusableStateDirIsReported) {
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "file") << "x";
  CommandResult r = ns_->RunIn(
      absl::StrCat(RULEPLANE_AGENT_BIN, " --socket=", dir_.string(),
                   "/s.sock --metrics_address= --state_dir=", dir_.string(), "/file/state"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.error.find("state dir"), std::string::npos) << r.error;
  EXPECT_NE(ns_->RunIn("nft list table inet ruleplane").exit_code, 0) << "nothing may be applied";
}

TEST_F(PrivilegedAgentBadInputTest, NoCapNetAdminIsReported) {
  CommandResult r = ns_->RunIn(absl::StrCat(
      "capsh --drop=cap_net_admin -- -c '", RULEPLANE_AGENT_BIN, " --socket=", dir_.string(),
      "/s.sock --metrics_address= --state_dir=", dir_.string(), "/state'"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.error.find("CAP_NET_ADMIN"), std::string::npos) << r.error << r.output;
}

}  // namespace
}  // namespace ruleplane::testing
