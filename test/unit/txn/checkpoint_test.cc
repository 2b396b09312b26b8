#include "agent/txn/checkpoint.h"

#include <signal.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>

#include "agent/txn/state_proto.h"
#include "gtest/gtest.h"
#include "test/unit/test_util.h"

namespace ruleplane::txn {
namespace {

using core::Mutation;
using ruleplane::testing::Pod;
using ruleplane::testing::Tcp;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("rp-ckpt-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<StateStore> Open() {
    auto s = StateStore::Open(dir_.string());
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }
  std::filesystem::path dir_;
};

TEST_F(CheckpointTest, JournalReplaysInOrder) {
  auto store = Open();
  Mutation a = Mutation::Upsert(Pod("a", "10.0.0.2", {Tcp(80, 80)}));
  Mutation b = Mutation::Upsert(Pod("b", "10.0.0.3"));
  Mutation del = Mutation::Delete({"a", "eth0"});
  ASSERT_TRUE(store->Append(1, {&a, &b}).ok());
  ASSERT_TRUE(store->Append(2, {&del}).ok());
  StateStore::Loaded l = Open()->Load();
  EXPECT_TRUE(l.found);
  EXPECT_TRUE(l.problem.empty()) << l.problem;
  EXPECT_EQ(l.journal_records, 2u);
  EXPECT_EQ(l.state.size(), 1u);
  EXPECT_NE(l.state.Find({"b", "eth0"}), nullptr);
}

TEST_F(CheckpointTest, SyncedJournalReplaysTheSame) {
  // journal_fsync=true only adds an fdatasync per record; the format is the same.
  auto synced = StateStore::Open(dir_.string(), StateStore::Options{.sync_journal = true});
  ASSERT_TRUE(synced.ok()) << synced.status();
  Mutation a = Mutation::Upsert(Pod("a", "10.0.0.2"));
  ASSERT_TRUE((*synced)->Append(1, {&a}).ok());
  Mutation b = Mutation::Upsert(Pod("b", "10.0.0.3"));
  ASSERT_TRUE(Open()->Append(2, {&b}).ok());
  StateStore::Loaded l = Open()->Load();
  EXPECT_TRUE(l.problem.empty()) << l.problem;
  EXPECT_EQ(l.journal_records, 2u);
  EXPECT_EQ(l.state.size(), 2u);
}

TEST(JournalEncodingTest, SameBytesAsTheProtoMessage) {
  core::Attachment v6 = Pod("c", "fd00::7", {Tcp(8080, 80)});
  v6.ips.push_back(*core::IpAddress::Parse("10.9.8.7"));
  v6.port_mappings.push_back({53, 5353, core::L4Proto::kUdp, core::IpAddress::Parse("192.168.1.1").value()});
  std::vector<Mutation> ms = {
      Mutation::Upsert(Pod("a", "10.0.0.2", {Tcp(80, 80)})),
      Mutation::Upsert(v6),
      Mutation::Upsert(core::Attachment{}),  // every field empty
      Mutation::Delete({"b", "eth0"}),
      Mutation::Retain({{"a", "eth0"}, {"c", "net1"}}),
      Mutation::Retain({}),  // GC keeping nothing: must stay a retain
  };
  std::vector<const Mutation*> ptrs;
  v1::JournalRecord want;
  want.set_commit_id(300);  // a two-byte varint
  for (const Mutation& m : ms) {
    ptrs.push_back(&m);
    *want.add_mutations() = ToProto(m);
  }
  std::string got = "prefix";
  AppendJournalRecord(300, ptrs, &got);
  EXPECT_EQ(got, "prefix" + want.SerializeAsString());
  v1::JournalRecord parsed;
  ASSERT_TRUE(parsed.ParseFromString(got.substr(6)));
  ASSERT_EQ(parsed.mutations_size(), 6);
  EXPECT_EQ(parsed.mutations(5).kind_case(), v1::Mutation::kRetain);
  EXPECT_EQ(parsed.mutations(1).upsert().ips(1), "10.9.8.7");
}

TEST_F(CheckpointTest, SnapshotPlusJournal) {
  auto store = Open();
  core::DesiredState s;
  ASSERT_TRUE(s.Apply(Mutation::Upsert(Pod("a", "10.0.0.2"))).ok());
  ASSERT_TRUE(store->WriteSnapshot(s).ok());
  Mutation b = Mutation::Upsert(Pod("b", "10.0.0.3"));
  ASSERT_TRUE(store->Append(7, {&b}).ok());
  StateStore::Loaded l = Open()->Load();
  EXPECT_EQ(l.state.size(), 2u);
  EXPECT_FALSE(l.corrupt);
}

TEST_F(CheckpointTest, TornJournalTailIsDroppedAndReported) {
  auto store = Open();
  Mutation a = Mutation::Upsert(Pod("a", "10.0.0.2"));
  ASSERT_TRUE(store->Append(1, {&a}).ok());
  store.reset();
  std::ofstream(dir_ / "journal.log", std::ios::app) << "\x40\x00\x00\x00partial";
  StateStore::Loaded l = Open()->Load();
  EXPECT_EQ(l.state.size(), 1u);
  EXPECT_NE(l.problem.find("unacknowledged tail"), std::string::npos) << l.problem;
  // The tail was cut: appending again and reloading is clean.
  auto again = Open();
  Mutation b = Mutation::Upsert(Pod("b", "10.0.0.3"));
  ASSERT_TRUE(again->Append(2, {&b}).ok());
  StateStore::Loaded l2 = Open()->Load();
  EXPECT_EQ(l2.state.size(), 2u);
  EXPECT_TRUE(l2.problem.empty()) << l2.problem;
}

// A file-size limit (RLIMIT_FSIZE, unprivileged) makes write(2) store part
// of a record and then fail with EFBIG, like a full filesystem does. The
// failed append must not leave that partial record in front of later ones.
TEST_F(CheckpointTest, FailedAppendLeavesNoTornRecordBehind) {
  auto store = Open();
  Mutation a = Mutation::Upsert(Pod("a", "10.0.0.2"));
  ASSERT_TRUE(store->Append(1, {&a}).ok());
  const auto good_size = std::filesystem::file_size(dir_ / "journal.log");

  struct rlimit old_limit {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  sighandler_t old_handler = ::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of a core dump
  struct rlimit tight = old_limit;
  tight.rlim_cur = good_size + 10;  // room for 10 bytes of the next record
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &tight), 0);
  Mutation b = Mutation::Upsert(Pod("b", "10.0.0.3"));
  absl::Status failed = store->Append(2, {&b});
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  ::signal(SIGXFSZ, old_handler);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.message().find("File too large"), std::string::npos) << failed;
  EXPECT_EQ(std::filesystem::file_size(dir_ / "journal.log"), good_size);

  // The same store keeps appending, and everything it acknowledged loads.
  Mutation c = Mutation::Upsert(Pod("c", "10.0.0.4"));
  ASSERT_TRUE(store->Append(3, {&c}).ok());
  StateStore::Loaded l = Open()->Load();
  EXPECT_TRUE(l.problem.empty()) << l.problem;
  EXPECT_EQ(l.journal_records, 2u);
  EXPECT_NE(l.state.Find({"a", "eth0"}), nullptr);
  EXPECT_EQ(l.state.Find({"b", "eth0"}), nullptr);
  EXPECT_NE(l.state.Find({"c", "eth0"}), nullptr);
}

TEST_F(CheckpointTest, CorruptSnapshotIsReportedNotFatal) {
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "checkpoint.pb") << "definitely not a checkpoint";
  StateStore::Loaded l = Open()->Load();
  EXPECT_TRUE(l.corrupt);
  EXPECT_NE(l.problem.find("corrupt"), std::string::npos) << l.problem;
  EXPECT_EQ(l.state.size(), 0u);
}

TEST_F(CheckpointTest, UnwritableStateDirIsAClearError) {
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "file") << "x";
  auto s = StateStore::Open((dir_ / "file" / "sub").string());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("state dir"), std::string::npos) << s.status();
}

}  // namespace
}  // namespace ruleplane::txn
