// The typed plan: what the agent wants the kernel to do, as values.
//
// A Plan is produced by pure code (agent/render) and executed by the engine
// through an NftPort. It contains only values: names, flags, register numbers
// and already-encoded element bytes, so that the kernel layer is a thin,
// mechanical translation into libnftnl objects and the canonical text form
// (PlanToText) can be compared in golden tests without a kernel.
//
// Constants are the kernel's uapi values (linux/netfilter/nf_tables.h); the
// header is included for constants only, no library is linked.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/strings/string_view.h"

namespace ruleplane::render {

// nftables datatype ids (nftables src/datatype.h, `enum datatypes`). Stored in
// NFTNL_SET_KEY_TYPE / NFTNL_SET_DATA_TYPE so that `nft list` prints keys in a
// readable form. Values are fixed by nftables' userspace and never change.
enum class DataType : uint32_t {
  kVerdict = 1,
  kIpv4Addr = 7,
  kIpv6Addr = 8,
  kInetProto = 12,
  kInetService = 13,
  kMark = 19,
  kIfname = 41,  // interface name, IFNAMSIZ bytes, NUL padded
};

// Bytes one component occupies in the kernel's key (before 4-byte padding).
uint32_t DataTypeLen(DataType type);
absl::string_view DataTypeName(DataType type);

struct TableSpec {
  std::string name;
  uint32_t family = 0;  // NFPROTO_INET etc.
  uint32_t flags = 0;   // NFT_TABLE_F_*
  std::string comment;
};

struct BaseChainSpec {
  std::string type;  // "nat", "filter", "route"
  uint32_t hook = 0;  // NF_INET_PRE_ROUTING etc.
  int32_t priority = 0;
  uint32_t policy = 1;  // NF_ACCEPT
};

struct ChainSpec {
  std::string name;
  std::optional<BaseChainSpec> base;  // nullopt = regular chain
  std::string comment;
};

struct SetSpec {
  std::string name;
  std::vector<DataType> key;   // one entry, or several for a concatenation
  std::vector<DataType> data;  // empty for a plain set; set => map
  uint32_t flags = 0;          // NFT_SET_* besides NFT_SET_MAP/CONCAT (derived)
  uint32_t size = 0;           // element limit; 0 = kernel default (unbounded)
  std::string comment;

  bool IsMap() const { return !data.empty(); }
  // Key/data length in bytes as the kernel sees it: every component of a
  // concatenation is padded to 4 bytes (one 32-bit register each).
  uint32_t KeyLen() const;
  uint32_t DataLen() const;
  // nftables composes a concatenation's type id as (t1 << 6) | t2 ...
  uint32_t KeyTypeId() const;
  uint32_t DataTypeId() const;
};

// One set or map element. `key` and `data` are already encoded exactly as the
// kernel stores them (network byte order, components padded to 4 bytes).
struct Element {
  std::vector<uint8_t> key;
  std::vector<uint8_t> data;  // maps only
  std::string comment;        // element userdata comment: the owner tag
  std::string text;           // canonical text, e.g. "10.0.0.2" or "tcp . 8080 : 10.0.0.2 . 80"
  uint64_t origin = 0;        // intent id that caused this element; never sent to the kernel
  // NFT_SET_ELEM_INTERVAL_END on the element that closes an interval (sets
  // with NFT_SET_INTERVAL: a prefix is a start element and an end element
  // holding the first address after it). Part of the identity: the kernel
  // finds interval elements by key and this flag.
  uint32_t flags = 0;

  friend bool operator==(const Element& a, const Element& b) {
    return a.key == b.key && a.data == b.data && a.flags == b.flags;
  }
};

// Rule expressions. Register numbers are the kernel's (NFT_REG_VERDICT,
// NFT_REG_1..4, NFT_REG32_00..15). Each maps 1:1 onto one libnftnl expr.
namespace expr {
struct Meta {
  uint32_t key = 0;  // NFT_META_*
  uint32_t dreg = 0;
};
struct Payload {
  uint32_t base = 0;  // NFT_PAYLOAD_NETWORK_HEADER etc.
  uint32_t offset = 0;
  uint32_t len = 0;
  uint32_t dreg = 0;
};
struct Cmp {
  uint32_t sreg = 0;
  uint32_t op = 0;  // NFT_CMP_EQ etc.
  std::vector<uint8_t> data;
};
struct Bitwise {
  uint32_t sreg = 0;
  uint32_t dreg = 0;
  uint32_t len = 0;
  std::vector<uint8_t> mask;
  std::vector<uint8_t> xor_value;
};
struct Lookup {
  std::string set;
  uint32_t sreg = 0;
  std::optional<uint32_t> dreg;  // maps only
  bool invert = false;
};
struct Fib {
  uint32_t flags = 0;   // NFTA_FIB_F_*
  uint32_t result = 0;  // NFT_FIB_RESULT_*
  uint32_t dreg = 0;
};
struct Ct {
  uint32_t key = 0;  // NFT_CT_*
  uint32_t dreg = 0;
};
struct Nat {
  uint32_t type = 0;    // NFT_NAT_SNAT / NFT_NAT_DNAT
  uint32_t family = 0;  // NFPROTO_IPV4 / NFPROTO_IPV6
  uint32_t reg_addr_min = 0;   // 0 = unset
  uint32_t reg_proto_min = 0;  // 0 = unset
  uint32_t flags = 0;          // NF_NAT_RANGE_*
  uint32_t reg_addr_max = 0;   // 0 = unset (the kernel then uses the min register)
  uint32_t reg_proto_max = 0;  // 0 = unset
};
// Loads constant data into a register (not a verdict: see Verdict).
struct Immediate {
  uint32_t dreg = 0;
  std::vector<uint8_t> data;
};
struct Masquerade {
  uint32_t flags = 0;  // NF_NAT_RANGE_*
};
struct Counter {};
struct Verdict {
  int32_t code = 0;  // NF_ACCEPT, NF_DROP, NFT_RETURN, NFT_JUMP, NFT_GOTO
  std::string chain;  // for jump/goto
};
}  // namespace expr

using Expr = std::variant<expr::Meta, expr::Payload, expr::Cmp, expr::Bitwise, expr::Lookup,
                          expr::Fib, expr::Ct, expr::Nat, expr::Masquerade, expr::Counter,
                          expr::Verdict, expr::Immediate>;

struct RuleSpec {
  std::string chain;
  // Stored as the rule's userdata comment ("ruleplane:<name>:<hash>"). It is
  // the rule's identity when the table is read back: same tag, same rule.
  std::string tag;
  std::vector<Expr> exprs;
  std::string text;  // nft-syntax rendering for humans and goldens
};

namespace op {
// Create if missing; no NLM_F_EXCL, so it is idempotent. Updates table flags.
struct AddTable {
  TableSpec table;
};
struct AddChain {
  ChainSpec chain;
};
struct AddSet {
  SetSpec set;
};
struct AddRule {
  RuleSpec rule;
};
struct FlushChain {
  std::string chain;
};
struct DeleteChain {
  std::string chain;
};
struct DeleteSet {
  std::string set;
};
struct DeleteTable {};
// Elements are added without NLM_F_EXCL: re-adding an identical element is a
// no-op, a map element with different data is an error (EBUSY/EEXIST).
struct AddElements {
  std::string set;
  std::vector<Element> elements;
};
// Deleting an element that does not exist is ENOENT: the engine only deletes
// what it believes is present, so ENOENT means drift.
struct DeleteElements {
  std::string set;
  std::vector<Element> elements;
};
}  // namespace op

using Op = std::variant<op::AddTable, op::AddChain, op::AddSet, op::AddRule, op::FlushChain,
                        op::DeleteChain, op::DeleteSet, op::DeleteTable, op::AddElements,
                        op::DeleteElements>;

// Every op in a plan applies to the one table `table` of `family`.
struct Plan {
  std::string table;
  uint32_t family = 0;
  std::vector<Op> ops;

  bool empty() const { return ops.empty(); }
  size_t ElementCount() const;
};

// Short verb + object for messages and logs: "add element pod-ipv4".
std::string OpSummary(const Op& op);
// Canonical, stable text of a plan (one line per op, elements sorted by the
// caller's order); used by golden tests and diagnostics.
std::string PlanToText(const Plan& plan);
// `nft --debug=netlink`-like listing of one expression.
std::string ExprToText(const Expr& e);

}  // namespace ruleplane::render
