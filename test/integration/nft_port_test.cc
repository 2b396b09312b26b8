// Privileged tier: NetlinkNftPort and NftEventWatcher against the real kernel,
// each test in its own throwaway network namespace. Results are checked both
// through the port's own Dump() and through `nft list` (what an operator
// sees). Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN for `ip netns add`);
// skips loudly otherwise.
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/kernel/nft/events.h"
#include "agent/kernel/nft/netlink_nft_port.h"
#include "agent/kernel/nft/table_flags.h"
#include "agent/kernel/nl/errors.h"
#include "agent/render/plan.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test/integration/netns_fixture.h"

namespace ruleplane::kernel::nft {
namespace {

using ::ruleplane::testing::CommandResult;
using ::ruleplane::testing::TestNetns;
using ::testing::HasSubstr;
using ::testing::Not;

namespace op = render::op;
namespace expr = render::expr;
using render::DataType;

constexpr char kTable[] = "rp-test";
constexpr uint32_t kInet = NFPROTO_INET;

// --- element encoding helpers (network byte order, 4-byte padded fields) ---

std::vector<uint8_t> Ipv4(const std::string& text) {
  in_addr addr{};
  EXPECT_EQ(inet_pton(AF_INET, text.c_str(), &addr), 1) << text;
  const auto* b = reinterpret_cast<const uint8_t*>(&addr);
  return {b[0], b[1], b[2], b[3]};
}

std::vector<uint8_t> Ipv4(uint32_t host_order) {
  return {static_cast<uint8_t>(host_order >> 24), static_cast<uint8_t>(host_order >> 16),
          static_cast<uint8_t>(host_order >> 8), static_cast<uint8_t>(host_order)};
}

// inet_proto . inet_service, each padded to a 32-bit register.
std::vector<uint8_t> ProtoPort(uint8_t proto, uint16_t port) {
  return {proto, 0, 0, 0, static_cast<uint8_t>(port >> 8), static_cast<uint8_t>(port), 0, 0};
}

// ipv4_addr . inet_service.
std::vector<uint8_t> AddrPort(const std::string& addr, uint16_t port) {
  std::vector<uint8_t> out = Ipv4(addr);
  out.insert(out.end(), {static_cast<uint8_t>(port >> 8), static_cast<uint8_t>(port), 0, 0});
  return out;
}

std::vector<uint8_t> HostU32(uint32_t v) {
  std::vector<uint8_t> out(4);
  std::memcpy(out.data(), &v, 4);
  return out;
}

render::Element Elem(std::vector<uint8_t> key, std::string text, std::string comment = "",
                     std::vector<uint8_t> data = {}) {
  render::Element e;
  e.key = std::move(key);
  e.data = std::move(data);
  e.text = std::move(text);
  e.comment = std::move(comment);
  return e;
}

// --- plan helpers ----------------------------------------------------------

op::AddTable Table(uint32_t flags = 0, std::string comment = "ruleplane integration test") {
  op::AddTable t;
  t.table.name = kTable;
  t.table.family = kInet;
  t.table.flags = flags;
  t.table.comment = std::move(comment);
  return t;
}

op::AddSet PodSet() {
  op::AddSet s;
  s.set.name = "pod-ipv4";
  s.set.key = {DataType::kIpv4Addr};
  s.set.comment = "pod addresses";
  return s;
}

op::AddSet HostPortMap() {
  op::AddSet s;
  s.set.name = "hostport-v4";
  s.set.key = {DataType::kInetProto, DataType::kInetService};
  s.set.data = {DataType::kIpv4Addr, DataType::kInetService};
  s.set.comment = "host ports";
  return s;
}

op::AddChain RegularChain(std::string name) {
  op::AddChain c;
  c.chain.name = std::move(name);
  c.chain.comment = "regular chain";
  return c;
}

// fib daddr type local dnat ip to meta l4proto . th dport map @hostport-v4
op::AddRule HostPortRule() {
  op::AddRule r;
  r.rule.chain = "nat-prerouting";
  r.rule.tag = "ruleplane:hostport-dnat:0123abcd";
  r.rule.text =
      "meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @hostport-v4";
  r.rule.exprs = {
      expr::Meta{NFT_META_NFPROTO, NFT_REG_1},
      expr::Cmp{NFT_REG_1, NFT_CMP_EQ, {NFPROTO_IPV4}},
      expr::Fib{NFTA_FIB_F_DADDR, NFT_FIB_RESULT_ADDRTYPE, NFT_REG_1},
      expr::Cmp{NFT_REG_1, NFT_CMP_EQ, HostU32(RTN_LOCAL)},
      expr::Meta{NFT_META_L4PROTO, NFT_REG32_00},
      expr::Payload{NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG32_01},
      expr::Lookup{"hostport-v4", NFT_REG32_00, NFT_REG32_00, false},
      expr::Nat{NFT_NAT_DNAT, NFPROTO_IPV4, NFT_REG32_00, NFT_REG32_01,
                NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED},
  };
  return r;
}

render::Plan NewPlan(std::vector<render::Op> ops) {
  render::Plan plan;
  plan.table = kTable;
  plan.family = kInet;
  plan.ops = std::move(ops);
  return plan;
}

std::string ReportText(const txn::CommitReport& r) {
  std::string s =
      absl::StrCat("status=", r.status.ToString(), " messages=", r.messages, " bytes=", r.bytes,
                   " generation=", r.generation, " outcome_unknown=", r.outcome_unknown);
  for (const txn::OpError& e : r.errors) {
    absl::StrAppend(&s, "\n  op ", e.op_index, " element ",
                    e.element_index ? absl::StrCat(*e.element_index) : "-", ": ",
                    e.status.ToString());
  }
  return s;
}

class PrivilegedNftPortTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::optional<std::string> reason = ruleplane::testing::PrivilegedSkipReason()) {
      GTEST_SKIP() << *reason;
    }
    absl::StatusOr<std::unique_ptr<TestNetns>> ns = TestNetns::Create();
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = *std::move(ns);
    port_ = NewPort();
    ASSERT_NE(port_, nullptr);
    absl::Status probe = port_->Probe();
    if (probe.code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << probe;
    ASSERT_TRUE(probe.ok()) << probe;
  }

  std::unique_ptr<NetlinkNftPort> NewPort(size_t max_message_bytes = 32 * 1024) {
    NetlinkNftPort::Options options;
    options.netns_path = ns_->path();
    options.max_message_bytes = max_message_bytes;
    absl::StatusOr<std::unique_ptr<NetlinkNftPort>> port = NetlinkNftPort::Create(options);
    EXPECT_TRUE(port.ok()) << port.status();
    return port.ok() ? *std::move(port) : nullptr;
  }

  CommandResult ListTable() const {
    return ns_->RunIn(absl::StrCat("nft list table inet ", kTable));
  }

  std::unique_ptr<TestNetns> ns_;
  std::unique_ptr<NetlinkNftPort> port_;
};

// (a) A representative plan commits in one batch, lists readably, and dumps
// back with the same content.
TEST_F(PrivilegedNftPortTest, RepresentativePlanCommitsListsAndDumps) {
  op::AddChain prerouting;
  prerouting.chain.name = "nat-prerouting";
  prerouting.chain.base = render::BaseChainSpec{"nat", NF_INET_PRE_ROUTING, -105, NF_ACCEPT};
  prerouting.chain.comment = "host port dnat";
  op::AddElements pods{"pod-ipv4",
                       {Elem(Ipv4("10.0.0.2"), "10.0.0.2", "pod:uid-a"),
                        Elem(Ipv4("10.0.0.3"), "10.0.0.3", "pod:uid-b")}};
  op::AddElements ports{"hostport-v4",
                        {Elem(ProtoPort(IPPROTO_TCP, 8080), "tcp . 8080 : 10.0.0.2 . 80",
                              "pod:uid-a", AddrPort("10.0.0.2", 80)),
                         Elem(ProtoPort(IPPROTO_UDP, 5353), "udp . 5353 : 10.0.0.3 . 53",
                              "pod:uid-b", AddrPort("10.0.0.3", 53))}};
  // The map the rule looks up is created earlier in this same batch; the
  // lookup finds it through the transaction-local set id.
  render::Plan plan =
      NewPlan({Table(), prerouting, PodSet(), HostPortMap(), pods, ports, HostPortRule()});

  txn::CommitReport report = port_->Commit(plan);
  ASSERT_TRUE(report.status.ok()) << ReportText(report);
  EXPECT_TRUE(report.errors.empty());
  EXPECT_FALSE(report.outcome_unknown);
  EXPECT_EQ(report.messages, 7u);
  EXPECT_GT(report.bytes, 0u);
  absl::StatusOr<uint32_t> generation = port_->Generation();
  ASSERT_TRUE(generation.ok()) << generation.status();
  EXPECT_EQ(report.generation, *generation);

  CommandResult list = ListTable();
  ASSERT_EQ(list.exit_code, 0) << list.error;
  const std::string& text = list.output;
  EXPECT_THAT(text, HasSubstr("comment \"ruleplane integration test\""));
  EXPECT_THAT(text, HasSubstr("type nat hook prerouting priority dstnat - 5; policy accept;"));
  EXPECT_THAT(text, HasSubstr("comment \"host port dnat\""));
  EXPECT_THAT(text, HasSubstr("set pod-ipv4 {"));
  EXPECT_THAT(text, HasSubstr("type ipv4_addr"));
  EXPECT_THAT(text, HasSubstr("comment \"pod addresses\""));
  EXPECT_THAT(text, HasSubstr("10.0.0.2 comment \"pod:uid-a\""));
  EXPECT_THAT(text, HasSubstr("10.0.0.3 comment \"pod:uid-b\""));
  EXPECT_THAT(text, HasSubstr("map hostport-v4 {"));
  EXPECT_THAT(text, HasSubstr("type inet_proto . inet_service : ipv4_addr . inet_service"));
  EXPECT_THAT(text, HasSubstr("tcp . 8080 comment \"pod:uid-a\" : 10.0.0.2 . 80"));
  EXPECT_THAT(text, HasSubstr("udp . 5353 comment \"pod:uid-b\" : 10.0.0.3 . 53"));
  EXPECT_THAT(text, HasSubstr("fib daddr type local dnat ip to meta l4proto . th dport map "
                              "@hostport-v4 comment \"ruleplane:hostport-dnat:0123abcd\""));

  absl::StatusOr<txn::KernelTable> dump = port_->Dump(kTable, kInet);
  ASSERT_TRUE(dump.ok()) << dump.status();
  EXPECT_TRUE(dump->exists);
  EXPECT_EQ(dump->comment, "ruleplane integration test");
  EXPECT_EQ(dump->flags, 0u);
  EXPECT_EQ(dump->generation, *generation);

  ASSERT_EQ(dump->chains.count("nat-prerouting"), 1u);
  const txn::KernelChain& chain = dump->chains.at("nat-prerouting");
  ASSERT_TRUE(chain.base.has_value());
  EXPECT_EQ(chain.base->type, "nat");
  EXPECT_EQ(chain.base->hook, static_cast<uint32_t>(NF_INET_PRE_ROUTING));
  EXPECT_EQ(chain.base->priority, -105);
  EXPECT_EQ(chain.base->policy, static_cast<uint32_t>(NF_ACCEPT));
  EXPECT_EQ(chain.comment, "host port dnat");
  ASSERT_EQ(chain.rules.size(), 1u);
  EXPECT_EQ(chain.rules[0].tag, "ruleplane:hostport-dnat:0123abcd");
  EXPECT_GT(chain.rules[0].handle, 0u);

  ASSERT_EQ(dump->sets.count("pod-ipv4"), 1u);
  const txn::KernelSet& pods_set = dump->sets.at("pod-ipv4");
  EXPECT_EQ(pods_set.comment, "pod addresses");
  EXPECT_EQ(pods_set.key_type, static_cast<uint32_t>(DataType::kIpv4Addr));
  EXPECT_EQ(pods_set.key_len, 4u);
  ASSERT_EQ(pods_set.elements.size(), 2u);
  std::map<std::vector<uint8_t>, std::string> pod_comments;
  for (const txn::KernelElement& e : pods_set.elements) pod_comments[e.key] = e.comment;
  EXPECT_EQ(pod_comments[Ipv4("10.0.0.2")], "pod:uid-a");
  EXPECT_EQ(pod_comments[Ipv4("10.0.0.3")], "pod:uid-b");

  ASSERT_EQ(dump->sets.count("hostport-v4"), 1u);
  const txn::KernelSet& map = dump->sets.at("hostport-v4");
  EXPECT_EQ(map.key_type, HostPortMap().set.KeyTypeId());
  EXPECT_EQ(map.key_len, 8u);
  EXPECT_EQ(map.data_type, HostPortMap().set.DataTypeId());
  EXPECT_EQ(map.data_len, 8u);
  EXPECT_TRUE(map.flags & NFT_SET_MAP);
  EXPECT_TRUE(map.flags & NFT_SET_CONCAT);
  ASSERT_EQ(map.elements.size(), 2u);
  std::map<std::vector<uint8_t>, txn::KernelElement> by_key;
  for (const txn::KernelElement& e : map.elements) by_key[e.key] = e;
  EXPECT_EQ(by_key[ProtoPort(IPPROTO_TCP, 8080)].data, AddrPort("10.0.0.2", 80));
  EXPECT_EQ(by_key[ProtoPort(IPPROTO_TCP, 8080)].comment, "pod:uid-a");
  EXPECT_EQ(by_key[ProtoPort(IPPROTO_UDP, 5353)].data, AddrPort("10.0.0.3", 53));

  // Idempotent: the same table/chain/set/element adds again are no-ops (the
  // rule is appended again, which is why the engine flushes chains first).
  render::Plan again = NewPlan({Table(), prerouting, PodSet(), HostPortMap(), pods, ports});
  txn::CommitReport second = port_->Commit(again);
  ASSERT_TRUE(second.status.ok()) << ReportText(second);
  EXPECT_GT(second.generation, report.generation);
}

// A table that does not exist dumps as exists=false, not as an error.
TEST_F(PrivilegedNftPortTest, MissingTableDumpsAsNotExisting) {
  absl::StatusOr<txn::KernelTable> dump = port_->Dump("no-such-table", kInet);
  ASSERT_TRUE(dump.ok()) << dump.status();
  EXPECT_FALSE(dump->exists);
  EXPECT_GT(dump->generation, 0u);
}

// (b) One bad op fails the whole batch, leaves the kernel untouched, and is
// named with its op index and the index of the bad element in that op.
TEST_F(PrivilegedNftPortTest, BadDeleteFailsWholeBatchAndNamesElement) {
  render::Plan plan = NewPlan({
      Table(),
      PodSet(),
      op::AddElements{"pod-ipv4",
                      {Elem(Ipv4("10.0.0.1"), "10.0.0.1"), Elem(Ipv4("10.0.0.2"), "10.0.0.2"),
                       Elem(Ipv4("10.0.0.3"), "10.0.0.3")}},
      op::DeleteElements{"pod-ipv4",
                         {Elem(Ipv4("10.0.0.1"), "10.0.0.1"), Elem(Ipv4("10.9.9.9"), "10.9.9.9"),
                          Elem(Ipv4("10.0.0.2"), "10.0.0.2")}},
      RegularChain("after-the-bad-op"),
  });
  txn::CommitReport report = port_->Commit(plan);
  ASSERT_FALSE(report.status.ok()) << ReportText(report);
  EXPECT_FALSE(report.outcome_unknown);
  ASSERT_EQ(report.errors.size(), 1u) << ReportText(report);
  const txn::OpError& error = report.errors[0];
  EXPECT_EQ(error.op_index, 3u);
  ASSERT_TRUE(error.element_index.has_value()) << ReportText(report);
  EXPECT_EQ(*error.element_index, 1u);
  EXPECT_EQ(error.status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(
      std::string(error.status.message()),
      HasSubstr("op=delete element pod-ipv4 element 1 (10.9.9.9): No such file or directory"));
  EXPECT_EQ(nl::StatusErrno(error.status), ENOENT);
  EXPECT_EQ(report.status.code(), absl::StatusCode::kNotFound);

  // Nothing of the good ops reached the kernel.
  CommandResult list = ListTable();
  EXPECT_NE(list.exit_code, 0) << list.output;
  EXPECT_THAT(ns_->RunIn("nft list ruleset").output, Not(HasSubstr(kTable)));
  absl::StatusOr<txn::KernelTable> dump = port_->Dump(kTable, kInet);
  ASSERT_TRUE(dump.ok()) << dump.status();
  EXPECT_FALSE(dump->exists);
}

// (b) The element index is relative to the op even when the op was split
// over several messages.
TEST_F(PrivilegedNftPortTest, BadElementIndexSurvivesMessageSplitting) {
  std::unique_ptr<NetlinkNftPort> port = NewPort(/*max_message_bytes=*/1024);
  ASSERT_NE(port, nullptr);
  constexpr size_t kCount = 2000;
  constexpr size_t kBad = 1500;
  op::AddElements add{"pod-ipv4", {}};
  op::DeleteElements del{"pod-ipv4", {}};
  for (size_t i = 0; i < kCount; ++i) {
    uint32_t addr = (10u << 24) | (1u << 16) | static_cast<uint32_t>(i);
    add.elements.push_back(Elem(Ipv4(addr), absl::StrCat("10.1.", i >> 8, ".", i & 0xff)));
    // The one element never added: a different /16.
    uint32_t del_addr = i == kBad ? (10u << 24) | (2u << 16) : addr;
    del.elements.push_back(Elem(Ipv4(del_addr), i == kBad ? "10.2.0.0" : "ok"));
  }
  render::Plan plan = NewPlan({Table(), PodSet(), add, del});
  txn::CommitReport report = port->Commit(plan);
  ASSERT_FALSE(report.status.ok());
  EXPECT_GT(report.messages, 6u) << ReportText(report);
  ASSERT_EQ(report.errors.size(), 1u) << ReportText(report);
  EXPECT_EQ(report.errors[0].op_index, 3u);
  ASSERT_TRUE(report.errors[0].element_index.has_value()) << ReportText(report);
  EXPECT_EQ(*report.errors[0].element_index, kBad);
  EXPECT_THAT(std::string(report.errors[0].status.message()), HasSubstr("element 1500 (10.2.0.0)"));
  EXPECT_NE(ListTable().exit_code, 0);
}

// (b) A map element whose data conflicts with an existing one fails its op;
// the good ops around it are not applied either.
TEST_F(PrivilegedNftPortTest, ConflictingMapElementFailsWholeBatch) {
  txn::CommitReport setup = port_->Commit(
      NewPlan({Table(), HostPortMap(),
               op::AddElements{"hostport-v4",
                               {Elem(ProtoPort(IPPROTO_TCP, 80), "tcp . 80 : 10.0.0.1 . 80",
                                     "pod:a", AddrPort("10.0.0.1", 80))}}}));
  ASSERT_TRUE(setup.status.ok()) << ReportText(setup);

  render::Plan plan = NewPlan({
      RegularChain("must-not-appear"),
      op::AddElements{"hostport-v4",
                      {Elem(ProtoPort(IPPROTO_TCP, 81), "tcp . 81 : 10.0.0.2 . 81", "pod:b",
                            AddrPort("10.0.0.2", 81)),
                       // Identical to the existing element: not an error (no NLM_F_EXCL).
                       Elem(ProtoPort(IPPROTO_TCP, 80), "tcp . 80 : 10.0.0.1 . 80", "pod:a",
                            AddrPort("10.0.0.1", 80)),
                       // Same key, other data: the conflict.
                       Elem(ProtoPort(IPPROTO_TCP, 80), "tcp . 80 : 10.0.0.9 . 80", "pod:c",
                            AddrPort("10.0.0.9", 80))}},
  });
  txn::CommitReport report = port_->Commit(plan);
  ASSERT_FALSE(report.status.ok());
  ASSERT_EQ(report.errors.size(), 1u) << ReportText(report);
  EXPECT_EQ(report.errors[0].op_index, 1u);
  ASSERT_TRUE(report.errors[0].element_index.has_value()) << ReportText(report);
  EXPECT_EQ(*report.errors[0].element_index, 2u);
  // nft_add_set_elem(): same key with different data is EEXIST even without
  // NLM_F_EXCL (only an identical element is silently accepted).
  EXPECT_EQ(report.errors[0].status.code(), absl::StatusCode::kAlreadyExists) << ReportText(report);
  EXPECT_THAT(
      std::string(report.errors[0].status.message()),
      HasSubstr("op=add element hostport-v4 element 2 (tcp . 80 : 10.0.0.9 . 80): File exists"));

  CommandResult list = ListTable();
  ASSERT_EQ(list.exit_code, 0) << list.error;
  EXPECT_THAT(list.output, Not(HasSubstr("must-not-appear")));
  EXPECT_THAT(list.output, Not(HasSubstr("tcp . 81")));
  EXPECT_THAT(list.output, HasSubstr("tcp . 80 comment \"pod:a\" : 10.0.0.1 . 80"));
}

// A jump loop is only detectable once both rules exist: the kernel finds it
// while validating the chain graph and still names the rule that closes it.
// Linux 6.18 answers EMLINK (jump depth exceeded); older kernels ELOOP.
TEST_F(PrivilegedNftPortTest, ChainLoopIsAttributedToTheClosingRule) {
  op::AddChain input;
  input.chain.name = "filter-input";
  input.chain.base = render::BaseChainSpec{"filter", NF_INET_LOCAL_IN, 0, NF_ACCEPT};
  op::AddRule to_b{render::RuleSpec{"filter-input", "t:in", {expr::Verdict{NFT_JUMP, "a"}}, ""}};
  op::AddRule a_to_b{render::RuleSpec{"a", "t:a", {expr::Verdict{NFT_JUMP, "b"}}, ""}};
  op::AddRule b_to_a{render::RuleSpec{"b", "t:b", {expr::Verdict{NFT_JUMP, "a"}}, ""}};
  txn::CommitReport report = port_->Commit(
      NewPlan({Table(), input, RegularChain("a"), RegularChain("b"), to_b, a_to_b, b_to_a}));
  ASSERT_FALSE(report.status.ok()) << ReportText(report);
  EXPECT_FALSE(report.outcome_unknown) << ReportText(report);
  ASSERT_EQ(report.errors.size(), 1u) << ReportText(report);
  EXPECT_EQ(report.errors[0].op_index, 6u) << ReportText(report);
  EXPECT_THAT(nl::StatusErrno(report.errors[0].status).value_or(0), ::testing::AnyOf(ELOOP, EMLINK))
      << ReportText(report);
  EXPECT_EQ(report.errors[0].status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(report.errors[0].status.message()), HasSubstr("op=add rule b t:b"));
  EXPECT_NE(ListTable().exit_code, 0);
}

// Values the kernel would refuse for our own reasons are caught before
// anything is sent.
TEST_F(PrivilegedNftPortTest, InvalidPlanIsRejectedWithoutSending) {
  absl::StatusOr<uint32_t> before = port_->Generation();
  ASSERT_TRUE(before.ok());
  render::Plan plan =
      NewPlan({Table(), PodSet(),
               op::AddElements{"pod-ipv4",
                               {Elem(Ipv4("10.0.0.1"), "10.0.0.1"),
                                Elem(Ipv4("10.0.0.2"), "10.0.0.2", std::string(200, 'x'))}}});
  txn::CommitReport report = port_->Commit(plan);
  EXPECT_EQ(report.status.code(), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(report.errors.size(), 1u);
  EXPECT_EQ(report.errors[0].op_index, 2u);
  EXPECT_EQ(report.errors[0].element_index, std::optional<size_t>(1));
  EXPECT_EQ(report.messages, 0u);
  EXPECT_EQ(*port_->Generation(), *before);
}

// (c) 100000 elements: one op, one batch, many messages, all read back.
TEST_F(PrivilegedNftPortTest, HundredThousandElementsInOneBatch) {
  constexpr size_t kCount = 100000;
  op::AddElements add{"pod-ipv4", {}};
  add.elements.reserve(kCount);
  for (size_t i = 0; i < kCount; ++i) {
    uint32_t addr = (10u << 24) | static_cast<uint32_t>(i);
    add.elements.push_back(Elem(Ipv4(addr), "", absl::StrCat("pod:", i)));
  }
  const auto start = std::chrono::steady_clock::now();
  txn::CommitReport report = port_->Commit(NewPlan({Table(), PodSet(), add}));
  const auto commit_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - start)
                             .count();
  ASSERT_TRUE(report.status.ok()) << ReportText(report);
  EXPECT_GT(report.messages, 3u) << "elements were not split";
  EXPECT_GT(report.bytes, kCount * 16);
  RecordProperty("commit_ms", static_cast<int>(commit_ms));
  RecordProperty("messages", static_cast<int>(report.messages));
  RecordProperty("bytes", static_cast<int>(report.bytes));
  std::printf("100000 elements: %u messages, %zu bytes, commit %lld ms\n", report.messages,
              report.bytes, static_cast<long long>(commit_ms));

  absl::StatusOr<txn::KernelTable> dump = port_->Dump(kTable, kInet);
  ASSERT_TRUE(dump.ok()) << dump.status();
  ASSERT_EQ(dump->sets.count("pod-ipv4"), 1u);
  const txn::KernelSet& set = dump->sets.at("pod-ipv4");
  ASSERT_EQ(set.elements.size(), kCount);
  std::map<std::vector<uint8_t>, std::string> comments;
  for (const txn::KernelElement& e : set.elements) comments[e.key] = e.comment;
  EXPECT_EQ(comments.size(), kCount);
  EXPECT_EQ(comments[Ipv4((10u << 24) | 99999u)], "pod:99999");
  EXPECT_EQ(comments[Ipv4(10u << 24)], "pod:0");
}

std::vector<RulesetChange> WaitForChanges(NftEventWatcher& watcher, size_t at_least) {
  std::vector<RulesetChange> all;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (all.size() < at_least && std::chrono::steady_clock::now() < deadline) {
    pollfd pfd = {watcher.fd(), POLLIN, 0};
    ::poll(&pfd, 1, 100);
    absl::StatusOr<std::vector<RulesetChange>> changes = watcher.ReadPending();
    EXPECT_TRUE(changes.ok()) << changes.status();
    if (!changes.ok()) break;
    for (RulesetChange& c : *changes) all.push_back(std::move(c));
  }
  return all;
}

bool HasEvent(const RulesetChange& change, std::string_view event) {
  for (const std::string& e : change.events) {
    if (e == event) return true;
  }
  return false;
}

// (d) The watcher attributes changes to their committer: our own commits
// carry our pid, an operator's `nft flush ruleset` carries nft's.
TEST_F(PrivilegedNftPortTest, EventWatcherSeesOwnCommitsAndForeignFlush) {
  absl::StatusOr<std::unique_ptr<NftEventWatcher>> watcher =
      NftEventWatcher::Create(ns_->path(), kTable, kInet);
  ASSERT_TRUE(watcher.ok()) << watcher.status();

  txn::CommitReport report = port_->Commit(NewPlan(
      {Table(), PodSet(), op::AddElements{"pod-ipv4", {Elem(Ipv4("10.0.0.7"), "10.0.0.7")}}}));
  ASSERT_TRUE(report.status.ok()) << ReportText(report);

  std::vector<RulesetChange> own = WaitForChanges(**watcher, 1);
  ASSERT_EQ(own.size(), 1u);
  // The kernel reports the committing thread's id; the test commits from
  // its main thread, whose tid is the pid.
  EXPECT_EQ(own[0].pid, static_cast<uint32_t>(::getpid()));
  EXPECT_EQ(own[0].generation, report.generation);
  EXPECT_TRUE(HasEvent(own[0], "add table inet rp-test")) << absl::StrJoin(own[0].events, "; ");
  EXPECT_TRUE(HasEvent(own[0], "add set inet rp-test pod-ipv4"));
  EXPECT_TRUE(HasEvent(own[0], "add element inet rp-test pod-ipv4"));

  // A transaction on someone else's table is not reported.
  ASSERT_EQ(ns_->RunIn("nft add table inet someone-else").exit_code, 0);
  // The flush deletes both tables in one transaction; we see ours only.
  CommandResult flush = ns_->RunIn("nft flush ruleset");
  ASSERT_EQ(flush.exit_code, 0) << flush.error;

  std::vector<RulesetChange> foreign = WaitForChanges(**watcher, 1);
  ASSERT_EQ(foreign.size(), 1u);
  const RulesetChange& change = foreign[0];
  EXPECT_TRUE(HasEvent(change, "delete table inet rp-test")) << absl::StrJoin(change.events, "; ");
  EXPECT_TRUE(HasEvent(change, "delete set inet rp-test pod-ipv4"));
  for (const std::string& e : change.events) EXPECT_THAT(e, Not(HasSubstr("someone-else")));
  EXPECT_THAT(change.proc_name, HasSubstr("nft"));
  EXPECT_NE(change.pid, static_cast<uint32_t>(::getpid()));
  EXPECT_NE(change.pid, 0u);
  EXPECT_GT(change.generation, report.generation);
}

// A burst bigger than the watcher's receive queue (one notification per
// element) overflows it; the watcher says so instead of reporting a partial
// change, so the engine knows to resync.
TEST_F(PrivilegedNftPortTest, EventWatcherReportsOverflow) {
  absl::StatusOr<std::unique_ptr<NftEventWatcher>> watcher =
      NftEventWatcher::Create(ns_->path(), kTable, kInet, /*receive_buffer_bytes=*/64 * 1024);
  ASSERT_TRUE(watcher.ok()) << watcher.status();
  op::AddElements add{"pod-ipv4", {}};
  for (uint32_t i = 0; i < 20000; ++i) add.elements.push_back(Elem(Ipv4((10u << 24) | i), ""));
  txn::CommitReport report = port_->Commit(NewPlan({Table(), PodSet(), add}));
  ASSERT_TRUE(report.status.ok()) << ReportText(report);

  std::vector<RulesetChange> changes = WaitForChanges(**watcher, 1);
  ASSERT_FALSE(changes.empty());
  bool overflow = false;
  for (const RulesetChange& c : changes) {
    if (c.events.size() == 1 && c.events[0] == NftEventWatcher::kOverflowEvent) {
      overflow = true;
      EXPECT_EQ(c.pid, 0u);
    }
  }
  EXPECT_TRUE(overflow) << "queue did not overflow; got " << changes.size() << " change(s), first "
                        << changes[0].events.size() << " events";

  // The watcher keeps working after an overflow.
  ASSERT_EQ(ns_->RunIn("nft add chain inet rp-test after-overflow").exit_code, 0);
  std::vector<RulesetChange> next = WaitForChanges(**watcher, 1);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_TRUE(HasEvent(next[0], "add chain inet rp-test after-overflow"))
      << absl::StrJoin(next[0].events, "; ");
}

// (e) owner|persist: only our socket may touch the table, and it outlives
// the port; a new port re-claims it.
TEST_F(PrivilegedNftPortTest, OwnedPersistentTableSurvivesPortAndIsReclaimed) {
  const uint32_t flags = kTableFlagOwner | kTableFlagPersist;
  txn::CommitReport report = port_->Commit(NewPlan({Table(flags), PodSet()}));
  if (!report.status.ok()) {
    std::optional<int> err = nl::StatusErrno(report.status);
    if (err == EOPNOTSUPP || err == EINVAL) {
      GTEST_SKIP() << "kernel refuses table flags owner|persist (needs linux >= 6.9): "
                   << report.status;
    }
  }
  ASSERT_TRUE(report.status.ok()) << ReportText(report);

  absl::StatusOr<txn::KernelTable> dump = port_->Dump(kTable, kInet);
  ASSERT_TRUE(dump.ok()) << dump.status();
  EXPECT_EQ(dump->flags & flags, flags);
  EXPECT_EQ(dump->owner, port_->portid());

  // Nobody else may delete it.
  CommandResult del = ns_->RunIn(absl::StrCat("nft delete table inet ", kTable));
  EXPECT_NE(del.exit_code, 0);
  EXPECT_THAT(del.error, HasSubstr("Operation not permitted"));

  // `nft flush ruleset` does not fail, but skips tables owned by another
  // socket (nft_flush() in nf_tables_api.c: `if (nft_table_has_owner(table)
  // && table->nlpid != ctx->portid) continue;`): our table and its set
  // survive an operator's flush.
  CommandResult flush = ns_->RunIn("nft flush ruleset");
  EXPECT_EQ(flush.exit_code, 0) << flush.error;
  CommandResult after_flush = ListTable();
  ASSERT_EQ(after_flush.exit_code, 0) << after_flush.error;
  EXPECT_THAT(after_flush.output, HasSubstr("set pod-ipv4"));

  // The owner itself still can change it.
  report = port_->Commit(NewPlan({Table(flags), RegularChain("owned-chain")}));
  ASSERT_TRUE(report.status.ok()) << ReportText(report);

  // Closing the owner socket keeps a persistent table, minus the owner flag.
  const uint32_t old_owner = port_->portid();
  port_.reset();
  CommandResult orphan = ListTable();
  ASSERT_EQ(orphan.exit_code, 0) << "persist flag did not keep the table: " << orphan.error;
  EXPECT_THAT(orphan.output, HasSubstr("owned-chain"));

  std::unique_ptr<NetlinkNftPort> next = NewPort();
  ASSERT_NE(next, nullptr);
  dump = next->Dump(kTable, kInet);
  ASSERT_TRUE(dump.ok()) << dump.status();
  EXPECT_TRUE(dump->exists);
  EXPECT_EQ(dump->flags & kTableFlagOwner, 0u);
  EXPECT_EQ(dump->flags & kTableFlagPersist, kTableFlagPersist);

  // Re-claim: AddTable with the owner flag from the new port's socket.
  report = next->Commit(NewPlan({Table(flags)}));
  ASSERT_TRUE(report.status.ok()) << ReportText(report);
  dump = next->Dump(kTable, kInet);
  ASSERT_TRUE(dump.ok()) << dump.status();
  EXPECT_EQ(dump->flags & flags, flags);
  EXPECT_EQ(dump->owner, next->portid());
  // Not necessarily a different number: autobind hands out the process id
  // as the first portid in a netns, so a new socket after the old one
  // closed typically gets old_owner again. It is still a new socket.
  RecordProperty("old_owner", static_cast<int>(old_owner));
  EXPECT_NE(ns_->RunIn(absl::StrCat("nft delete table inet ", kTable)).exit_code, 0);
}

}  // namespace
}  // namespace ruleplane::kernel::nft
