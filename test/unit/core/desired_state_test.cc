#include "agent/core/desired_state.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "test/unit/test_util.h"

namespace ruleplane::core {
namespace {

using testing::Pod;
using testing::Tcp;

TEST(IpAddressTest, ParsesBothFamiliesAndRejectsGarbage) {
  EXPECT_EQ(IpAddress::Parse("10.1.2.3")->ToString(), "10.1.2.3");
  EXPECT_FALSE(IpAddress::Parse("fd00::5")->is_v4());
  EXPECT_EQ(IpAddress::Parse("fd00::5")->ToString(), "fd00::5");
  absl::StatusOr<IpAddress> bad = IpAddress::Parse("10.1.2");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("10.1.2"), std::string::npos);
}

TEST(IpAddressTest, Ipv4TextMatchesInetNtopForEveryOctetWidth) {
  // ToString formats IPv4 by hand (hot path); inet_ntop is the reference.
  for (int v : {0, 1, 9, 10, 99, 100, 199, 255}) {
    const auto o = static_cast<uint8_t>(v);
    const IpAddress ip = IpAddress::V4({o, static_cast<uint8_t>(255 - o), 0, o});
    const std::string want = absl::StrCat(v, ".", 255 - v, ".0.", v);
    EXPECT_EQ(ip.ToString(), want);
    EXPECT_EQ(IpAddress::Parse(want)->ToString(), want);
  }
}

TEST(DesiredStateTest, UpsertTwiceIsIdempotent) {
  DesiredState s;
  std::vector<Change> changes;
  ASSERT_TRUE(s.Apply(Mutation::Upsert(Pod("a", "10.0.0.2")), &changes).ok());
  ASSERT_TRUE(s.Apply(Mutation::Upsert(Pod("a", "10.0.0.2")), &changes).ok());
  EXPECT_EQ(changes.size(), 1u) << "the second identical ADD must change nothing";
  EXPECT_EQ(s.size(), 1u);
}

// kBeforeOnly (the engine's mode) records what was replaced, not the new
// value, which Find() returns instead.
TEST(DesiredStateTest, BeforeOnlyChangesLeaveAfterToFind) {
  DesiredState st;
  std::vector<Change> changes;
  Attachment v1 = Pod("a", "10.0.0.2");
  Attachment v2 = Pod("a", "10.0.0.3");
  ASSERT_TRUE(st.Apply(Mutation::Upsert(v1), &changes, DesiredState::Record::kBeforeOnly).ok());
  ASSERT_TRUE(st.Apply(Mutation::Upsert(v2), &changes, DesiredState::Record::kBeforeOnly).ok());
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_FALSE(changes[0].before.has_value());
  EXPECT_FALSE(changes[0].after.has_value());
  ASSERT_TRUE(changes[1].before.has_value());
  EXPECT_EQ(*changes[1].before, v1);
  EXPECT_FALSE(changes[1].after.has_value());
  ASSERT_NE(st.Find(v2.key), nullptr);
  EXPECT_EQ(*st.Find(v2.key), v2);
}

TEST(DesiredStateTest, DeleteOfUnknownSucceedsWithoutChange) {
  DesiredState s;
  std::vector<Change> changes;
  EXPECT_TRUE(s.Apply(Mutation::Delete({"nope", "eth0"}), &changes).ok());
  EXPECT_TRUE(changes.empty());
}

TEST(DesiredStateTest, HostPortConflictIsRejectedAndChangesNothing) {
  DesiredState s;
  ASSERT_TRUE(s.Apply(Mutation::Upsert(Pod("a", "10.0.0.2", {Tcp(8080, 80)}))).ok());
  absl::Status st = s.Apply(Mutation::Upsert(Pod("b", "10.0.0.3", {Tcp(8080, 80)})));
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(st.message().find("a/eth0"), std::string::npos) << st;
  EXPECT_EQ(s.Find({"b", "eth0"}), nullptr);
  // Same port, other protocol: fine.
  PortMapping udp{8080, 80, L4Proto::kUdp, std::nullopt};
  EXPECT_TRUE(s.Apply(Mutation::Upsert(Pod("c", "10.0.0.4", {udp}))).ok());
  // After the owner goes, the port is free again.
  ASSERT_TRUE(s.Apply(Mutation::Delete({"a", "eth0"})).ok());
  EXPECT_TRUE(s.Apply(Mutation::Upsert(Pod("b", "10.0.0.3", {Tcp(8080, 80)}))).ok());
}

TEST(DesiredStateTest, ReplacingOwnMappingIsNotAConflict) {
  DesiredState s;
  ASSERT_TRUE(s.Apply(Mutation::Upsert(Pod("a", "10.0.0.2", {Tcp(8080, 80)}))).ok());
  EXPECT_TRUE(s.Apply(Mutation::Upsert(Pod("a", "10.0.0.9", {Tcp(8080, 81)}))).ok());
}

TEST(DesiredStateTest, RejectsMalformedAttachments) {
  DesiredState s;
  core::Attachment no_id = Pod("", "10.0.0.2");
  EXPECT_EQ(s.Apply(Mutation::Upsert(no_id)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.Apply(Mutation::Upsert(Pod("a", "10.0.0.2", {Tcp(0, 80)}))).code(),
            absl::StatusCode::kInvalidArgument);
  core::PortMapping v6only{80, 80, L4Proto::kTcp, *IpAddress::Parse("fd00::1")};
  EXPECT_EQ(s.Apply(Mutation::Upsert(Pod("a", "10.0.0.2", {v6only}))).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.size(), 0u);
}

TEST(DesiredStateTest, RetainRemovesEverythingElse) {
  DesiredState s;
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(s.Apply(Mutation::Upsert(Pod(id, "10.0.0.2"))).ok());
  std::vector<Change> changes;
  ASSERT_TRUE(s.Apply(Mutation::Retain({{"b", "eth0"}}), &changes).ok());
  EXPECT_EQ(s.size(), 1u);
  EXPECT_NE(s.Find({"b", "eth0"}), nullptr);
  EXPECT_EQ(changes.size(), 2u);
}

TEST(DesiredStateTest, RestoreUndoesInReverse) {
  DesiredState s;
  std::vector<Change> changes;
  ASSERT_TRUE(s.Apply(Mutation::Upsert(Pod("a", "10.0.0.2", {Tcp(1, 1)})), &changes).ok());
  ASSERT_TRUE(s.Apply(Mutation::Upsert(Pod("a", "10.0.0.3", {Tcp(2, 2)})), &changes).ok());
  ASSERT_TRUE(s.Apply(Mutation::Delete({"a", "eth0"}), &changes).ok());
  for (auto it = changes.rbegin(); it != changes.rend(); ++it) s.Restore(it->key, it->before);
  EXPECT_EQ(s.size(), 0u);
  // The host-port index was restored too: port 1 is free.
  EXPECT_TRUE(s.Apply(Mutation::Upsert(Pod("b", "10.0.0.4", {Tcp(1, 1)}))).ok());
}

}  // namespace
}  // namespace ruleplane::core
