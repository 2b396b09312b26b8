#include "agent/kernel/nft/encode.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <variant>

#include "absl/strings/str_cat.h"
#include "agent/common/status_macros.h"
#include "agent/kernel/nft/objects.h"
#include "glog/logging.h"

namespace ruleplane::kernel::nft {
namespace {

namespace op = render::op;
namespace expr = render::expr;
using render::DataType;

// The kernel's limits (include/uapi/linux/netfilter/nf_tables.h).
constexpr size_t kMaxNameBytes = NFT_NAME_MAXLEN - 1;  // names are NUL-terminated
constexpr size_t kMaxDataBytes = 64;                   // NFT_DATA_VALUE_MAXLEN
constexpr size_t kMaxConcatFields = NFT_REG32_COUNT;

// libnftnl setters fail only when malloc does; the style allows CHECK there.
void MustSet(int rc) { CHECK_GE(rc, 0) << "libnftnl setter failed (out of memory)"; }

uint32_t TypeByteOrder(DataType type) {
  switch (type) {
    case DataType::kIpv4Addr:
    case DataType::kIpv6Addr:
    case DataType::kInetProto:
    case DataType::kInetService:
      return kByteOrderBigEndian;
    case DataType::kMark:
    case DataType::kIfname:
      return kByteOrderHost;
    case DataType::kVerdict:
      return 0;
  }
  return 0;
}

bool IsVerdictMap(const render::SetSpec& set) {
  return set.data.size() == 1 && set.data[0] == DataType::kVerdict;
}

// Generous upper bound of a NEWRULE message, to keep it inside one batch
// page's overrun area (nl::Batch::kMaxMessageBytes).
size_t EstimateRuleBytes(const render::RuleSpec& rule) {
  size_t bytes = 512 + rule.chain.size() + rule.tag.size();
  for (const render::Expr& e : rule.exprs) {
    bytes += 128;
    if (const auto* cmp = std::get_if<expr::Cmp>(&e)) bytes += cmp->data.size();
    if (const auto* bw = std::get_if<expr::Bitwise>(&e))
      bytes += bw->mask.size() + bw->xor_value.size();
    if (const auto* lookup = std::get_if<expr::Lookup>(&e)) bytes += lookup->set.size();
    if (const auto* verdict = std::get_if<expr::Verdict>(&e)) bytes += verdict->chain.size();
    if (const auto* imm = std::get_if<expr::Immediate>(&e)) bytes += imm->data.size();
  }
  return bytes;
}

// --- validation -----------------------------------------------------------

class Validator {
 public:
  explicit Validator(const render::Plan& plan) : plan_(plan) {}

  std::vector<txn::OpError> Run() {
    if (plan_.table.empty() || plan_.table.size() > kMaxNameBytes) {
      Fail(0, std::nullopt,
           absl::StrCat("table name \"", plan_.table, "\" is empty or longer than ", kMaxNameBytes,
                        " bytes"));
    }
    for (size_t i = 0; i < plan_.ops.size(); ++i) {
      index_ = i;
      std::visit(*this, plan_.ops[i]);
    }
    return std::move(errors_);
  }

  void operator()(const op::AddTable& o) {
    if (!o.table.name.empty() && o.table.name != plan_.table) {
      Fail(std::nullopt, absl::StrCat("table name \"", o.table.name,
                                      "\" differs from the plan's \"", plan_.table, "\""));
    }
    if (o.table.family != 0 && o.table.family != plan_.family) {
      Fail(std::nullopt, absl::StrCat("table family ", o.table.family, " differs from the plan's ",
                                      plan_.family));
    }
    Comment(o.table.comment, std::nullopt);
  }
  void operator()(const op::AddChain& o) {
    Name(o.chain.name, "chain");
    Comment(o.chain.comment, std::nullopt);
    if (o.chain.base && o.chain.base->type.empty()) Fail(std::nullopt, "base chain without a type");
  }
  void operator()(const op::AddSet& o) {
    const render::SetSpec& set = o.set;
    Name(set.name, "set");
    Comment(set.comment, std::nullopt);
    if (set.key.empty() || set.key.size() > kMaxConcatFields) {
      Fail(std::nullopt,
           absl::StrCat("set key has ", set.key.size(), " components (1..", kMaxConcatFields, ")"));
    }
    if (set.KeyLen() > kMaxDataBytes || set.DataLen() > kMaxDataBytes) {
      Fail(std::nullopt, absl::StrCat("set key/data of ", set.KeyLen(), "/", set.DataLen(),
                                      " bytes exceeds ", kMaxDataBytes));
    }
  }
  void operator()(const op::AddRule& o) {
    Name(o.rule.chain, "chain");
    Comment(o.rule.tag, std::nullopt);
    if (EstimateRuleBytes(o.rule) > nl::Batch::kMaxMessageBytes - 4096) {
      Fail(std::nullopt, absl::StrCat("rule with ", o.rule.exprs.size(),
                                      " expressions is too large for one netlink message"));
    }
    for (const render::Expr& e : o.rule.exprs) {
      if (const auto* lookup = std::get_if<expr::Lookup>(&e)) Name(lookup->set, "set");
    }
  }
  void operator()(const op::FlushChain& o) { Name(o.chain, "chain"); }
  void operator()(const op::DeleteChain& o) { Name(o.chain, "chain"); }
  void operator()(const op::DeleteSet& o) { Name(o.set, "set"); }
  void operator()(const op::DeleteTable&) {}
  void operator()(const op::AddElements& o) { Elements(o.set, o.elements); }
  void operator()(const op::DeleteElements& o) { Elements(o.set, o.elements); }

 private:
  void Elements(const std::string& set, const std::vector<render::Element>& elements) {
    Name(set, "set");
    for (size_t e = 0; e < elements.size(); ++e) {
      const render::Element& element = elements[e];
      if (element.key.empty() || element.key.size() > kMaxDataBytes ||
          element.data.size() > kMaxDataBytes) {
        Fail(e, absl::StrCat("element key/data of ", element.key.size(), "/", element.data.size(),
                             " bytes (key 1..", kMaxDataBytes, ")"));
        return;
      }
      if (element.comment.size() > kMaxCommentBytes) {
        Comment(element.comment, e);
        return;
      }
    }
  }
  void Name(const std::string& name, absl::string_view what) {
    if (name.empty() || name.size() > kMaxNameBytes) {
      Fail(std::nullopt, absl::StrCat(what, " name \"", name, "\" is empty or longer than ",
                                      kMaxNameBytes, " bytes"));
    }
  }
  void Comment(const std::string& comment, std::optional<size_t> element) {
    if (comment.size() > kMaxCommentBytes) {
      Fail(element,
           absl::StrCat("comment of ", comment.size(), " bytes exceeds ", kMaxCommentBytes));
    }
  }
  void Fail(std::optional<size_t> element, absl::string_view why) { Fail(index_, element, why); }
  void Fail(size_t op_index, std::optional<size_t> element, absl::string_view why) {
    // One error per op is enough to act on.
    if (!errors_.empty() && errors_.back().op_index == op_index) return;
    std::string summary =
        op_index < plan_.ops.size() ? OpSummaryIn(plan_, plan_.ops[op_index]) : "plan";
    std::string where = element ? absl::StrCat(" element ", *element) : "";
    absl::Status status =
        absl::InvalidArgumentError(absl::StrCat("validate nft op=", summary, where, ": ", why));
    errors_.push_back(txn::OpError{op_index, element, std::move(status)});
  }

  const render::Plan& plan_;
  size_t index_ = 0;
  std::vector<txn::OpError> errors_;
};

// --- encoding -------------------------------------------------------------

NftnlExprPtr NewExpr(const char* name) {
  NftnlExprPtr e(nftnl_expr_alloc(name));
  CHECK(e != nullptr) << "allocate nftnl expr " << name;
  return e;
}

class Encoder {
 public:
  Encoder(const render::Plan& plan, size_t max_message_bytes, nl::Batch& batch)
      : plan_(plan), max_message_bytes_(max_message_bytes), batch_(batch) {}

  absl::Status Run() {
    for (size_t i = 0; i < plan_.ops.size(); ++i) {
      index_ = i;
      RETURN_IF_ERROR(std::visit(*this, plan_.ops[i]));
    }
    return absl::OkStatus();
  }

  absl::Status operator()(const op::AddTable& o) {
    NftnlTablePtr table(nftnl_table_alloc());
    CHECK(table != nullptr) << "allocate nftnl table";
    MustSet(nftnl_table_set_str(table.get(), NFTNL_TABLE_NAME, plan_.table.c_str()));
    nftnl_table_set_u32(table.get(), NFTNL_TABLE_FAMILY, plan_.family);
    // Always sent, so that re-adding the table also updates its flags
    // (nf_tables_updtable()).
    nftnl_table_set_u32(table.get(), NFTNL_TABLE_FLAGS, o.table.flags);
    if (!o.table.comment.empty()) {
      Udata udata;
      udata.PutString(NFTNL_UDATA_TABLE_COMMENT, o.table.comment);
      MustSet(nftnl_table_set_data(table.get(), NFTNL_TABLE_USERDATA, udata.data(), udata.size()));
    }
    nftnl_table_nlmsg_build_payload(Header(NFT_MSG_NEWTABLE, NLM_F_CREATE, true), table.get());
    return Push();
  }

  absl::Status operator()(const op::AddChain& o) {
    NftnlChainPtr chain = Chain(o.chain.name);
    if (o.chain.base) {
      const render::BaseChainSpec& base = *o.chain.base;
      nftnl_chain_set_u32(chain.get(), NFTNL_CHAIN_HOOKNUM, base.hook);
      nftnl_chain_set_s32(chain.get(), NFTNL_CHAIN_PRIO, base.priority);
      MustSet(nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_TYPE, base.type.c_str()));
      nftnl_chain_set_u32(chain.get(), NFTNL_CHAIN_POLICY, base.policy);
    }
    if (!o.chain.comment.empty()) {
      Udata udata;
      udata.PutString(NFTNL_UDATA_CHAIN_COMMENT, o.chain.comment);
      MustSet(nftnl_chain_set_data(chain.get(), NFTNL_CHAIN_USERDATA, udata.data(), udata.size()));
    }
    nftnl_chain_nlmsg_build_payload(Header(NFT_MSG_NEWCHAIN, NLM_F_CREATE, true), chain.get());
    return Push();
  }

  absl::Status operator()(const op::AddSet& o) {
    const render::SetSpec& spec = o.set;
    NftnlSetPtr set = Set(spec.name);
    uint32_t flags = spec.flags;
    if (spec.IsMap()) flags |= NFT_SET_MAP;
    if (spec.key.size() > 1) flags |= NFT_SET_CONCAT;
    nftnl_set_set_u32(set.get(), NFTNL_SET_FLAGS, flags);
    nftnl_set_set_u32(set.get(), NFTNL_SET_KEY_TYPE, spec.KeyTypeId());
    nftnl_set_set_u32(set.get(), NFTNL_SET_KEY_LEN, spec.KeyLen());
    if (IsVerdictMap(spec)) {
      // The kernel sizes verdict data itself (struct nft_verdict).
      nftnl_set_set_u32(set.get(), NFTNL_SET_DATA_TYPE, NFT_DATA_VERDICT);
    } else if (spec.IsMap()) {
      nftnl_set_set_u32(set.get(), NFTNL_SET_DATA_TYPE, spec.DataTypeId());
      nftnl_set_set_u32(set.get(), NFTNL_SET_DATA_LEN, spec.DataLen());
    }
    // A transaction-local id lets later messages of this same batch find the
    // set before it is committed (nft_set_lookup_global()), as nft does.
    const uint32_t id = next_set_id_++;
    set_ids_[spec.name] = id;
    nftnl_set_set_u32(set.get(), NFTNL_SET_ID, id);
    if (spec.size != 0) nftnl_set_set_u32(set.get(), NFTNL_SET_DESC_SIZE, spec.size);
    if (spec.key.size() > 1) {
      // NFT_SET_CONCAT requires the per-field lengths (unpadded bytes); the
      // kernel checks that they add up to the key's 32-bit registers
      // (nf_tables_newset() / nft_set_desc_concat()).
      uint8_t field_len[kMaxConcatFields] = {};
      for (size_t i = 0; i < spec.key.size(); ++i) {
        field_len[i] = static_cast<uint8_t>(render::DataTypeLen(spec.key[i]));
      }
      MustSet(nftnl_set_set_data(set.get(), NFTNL_SET_DESC_CONCAT, field_len,
                                 static_cast<uint32_t>(spec.key.size())));
    }
    Udata udata;
    // Byte-order hints are how nft decides to print a key as an address or
    // port rather than a raw integer (src/netlink.c, set parsing).
    if (spec.key.size() == 1 && TypeByteOrder(spec.key[0]) != 0) {
      udata.PutU32(NFTNL_UDATA_SET_KEYBYTEORDER, TypeByteOrder(spec.key[0]));
    }
    if (spec.data.size() == 1 && TypeByteOrder(spec.data[0]) != 0) {
      udata.PutU32(NFTNL_UDATA_SET_DATABYTEORDER, TypeByteOrder(spec.data[0]));
    }
    if (!spec.comment.empty()) udata.PutString(NFTNL_UDATA_SET_COMMENT, spec.comment);
    if (!udata.empty()) {
      MustSet(nftnl_set_set_data(set.get(), NFTNL_SET_USERDATA, udata.data(), udata.size()));
    }
    nftnl_set_nlmsg_build_payload(Header(NFT_MSG_NEWSET, NLM_F_CREATE, true), set.get());
    return Push();
  }

  absl::Status operator()(const op::AddRule& o) {
    NftnlRulePtr rule = Rule(o.rule.chain);
    for (const render::Expr& e : o.rule.exprs) {
      NftnlExprPtr built = std::visit([this](const auto& x) { return Expr(x); }, e);
      nftnl_rule_add_expr(rule.get(), built.release());  // owned by rule now
    }
    if (!o.rule.tag.empty()) {
      Udata udata;
      udata.PutString(NFTNL_UDATA_RULE_COMMENT, o.rule.tag);
      MustSet(nftnl_rule_set_data(rule.get(), NFTNL_RULE_USERDATA, udata.data(), udata.size()));
    }
    nftnl_rule_nlmsg_build_payload(Header(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, true),
                                   rule.get());
    return Push();
  }

  absl::Status operator()(const op::FlushChain& o) {
    // DELRULE naming only the chain deletes all its rules.
    NftnlRulePtr rule = Rule(o.chain);
    nftnl_rule_nlmsg_build_payload(Header(NFT_MSG_DELRULE, 0), rule.get());
    return Push();
  }

  absl::Status operator()(const op::DeleteChain& o) {
    NftnlChainPtr chain = Chain(o.chain);
    nftnl_chain_nlmsg_build_payload(Header(NFT_MSG_DELCHAIN, 0), chain.get());
    return Push();
  }

  absl::Status operator()(const op::DeleteSet& o) {
    NftnlSetPtr set = Set(o.set);
    nftnl_set_nlmsg_build_payload(Header(NFT_MSG_DELSET, 0), set.get());
    return Push();
  }

  absl::Status operator()(const op::DeleteTable&) {
    NftnlTablePtr table(nftnl_table_alloc());
    CHECK(table != nullptr) << "allocate nftnl table";
    MustSet(nftnl_table_set_str(table.get(), NFTNL_TABLE_NAME, plan_.table.c_str()));
    nftnl_table_set_u32(table.get(), NFTNL_TABLE_FAMILY, plan_.family);
    nftnl_table_nlmsg_build_payload(Header(NFT_MSG_DELTABLE, 0), table.get());
    return Push();
  }

  absl::Status operator()(const op::AddElements& o) {
    return Elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, o.set, o.elements, /*with_data=*/true);
  }

  absl::Status operator()(const op::DeleteElements& o) {
    // The kernel finds the element by key alone.
    return Elements(NFT_MSG_DELSETELEM, 0, o.set, o.elements, /*with_data=*/false);
  }

 private:
  // `cheap_echo`: this op may carry NLM_F_ECHO if it is the batch's first
  // message. The kernel addresses the commit's NEWGEN to the first message,
  // so echo returns the new generation id with the ACKs (saves a GETGEN);
  // it also echoes the objects this message creates, hence only for ops
  // that create one object (not element lists, not cascading deletes).
  nlmsghdr* Header(uint16_t type, uint16_t flags, bool cheap_echo = false) {
    if (cheap_echo && batch_.message_count() == 0) flags |= NLM_F_ECHO;
    return nftnl_nlmsg_build_hdr(batch_.buffer(), type, static_cast<uint16_t>(plan_.family),
                                 flags | NLM_F_ACK, batch_.next_seq());
  }
  absl::Status Push() { return batch_.Push(nl::MessageTag{index_, 0, 0, {}}); }

  std::optional<uint32_t> SetId(const std::string& name) const {
    auto it = set_ids_.find(name);
    if (it == set_ids_.end()) return std::nullopt;
    return it->second;
  }

  NftnlChainPtr Chain(const std::string& name) {
    NftnlChainPtr chain(nftnl_chain_alloc());
    CHECK(chain != nullptr) << "allocate nftnl chain";
    MustSet(nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_TABLE, plan_.table.c_str()));
    MustSet(nftnl_chain_set_str(chain.get(), NFTNL_CHAIN_NAME, name.c_str()));
    nftnl_chain_set_u32(chain.get(), NFTNL_CHAIN_FAMILY, plan_.family);
    return chain;
  }

  NftnlSetPtr Set(const std::string& name) {
    NftnlSetPtr set(nftnl_set_alloc());
    CHECK(set != nullptr) << "allocate nftnl set";
    MustSet(nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, plan_.table.c_str()));
    MustSet(nftnl_set_set_str(set.get(), NFTNL_SET_NAME, name.c_str()));
    nftnl_set_set_u32(set.get(), NFTNL_SET_FAMILY, plan_.family);
    return set;
  }

  NftnlRulePtr Rule(const std::string& chain) {
    NftnlRulePtr rule(nftnl_rule_alloc());
    CHECK(rule != nullptr) << "allocate nftnl rule";
    MustSet(nftnl_rule_set_str(rule.get(), NFTNL_RULE_TABLE, plan_.table.c_str()));
    MustSet(nftnl_rule_set_str(rule.get(), NFTNL_RULE_CHAIN, chain.c_str()));
    nftnl_rule_set_u32(rule.get(), NFTNL_RULE_FAMILY, plan_.family);
    return rule;
  }

  // One typed expression -> one libnftnl expression.
  NftnlExprPtr Expr(const expr::Meta& m) {
    NftnlExprPtr e = NewExpr("meta");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_KEY, m.key);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_DREG, m.dreg);
    return e;
  }
  NftnlExprPtr Expr(const expr::Payload& p) {
    NftnlExprPtr e = NewExpr("payload");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_BASE, p.base);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_OFFSET, p.offset);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_LEN, p.len);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_DREG, p.dreg);
    return e;
  }
  NftnlExprPtr Expr(const expr::Cmp& c) {
    NftnlExprPtr e = NewExpr("cmp");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CMP_SREG, c.sreg);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CMP_OP, c.op);
    MustSet(nftnl_expr_set(e.get(), NFTNL_EXPR_CMP_DATA, c.data.data(),
                           static_cast<uint32_t>(c.data.size())));
    return e;
  }
  NftnlExprPtr Expr(const expr::Bitwise& b) {
    NftnlExprPtr e = NewExpr("bitwise");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_SREG, b.sreg);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_DREG, b.dreg);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_LEN, b.len);
    MustSet(nftnl_expr_set(e.get(), NFTNL_EXPR_BITWISE_MASK, b.mask.data(),
                           static_cast<uint32_t>(b.mask.size())));
    MustSet(nftnl_expr_set(e.get(), NFTNL_EXPR_BITWISE_XOR, b.xor_value.data(),
                           static_cast<uint32_t>(b.xor_value.size())));
    return e;
  }
  NftnlExprPtr Expr(const expr::Lookup& l) {
    NftnlExprPtr e = NewExpr("lookup");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SREG, l.sreg);
    MustSet(nftnl_expr_set_str(e.get(), NFTNL_EXPR_LOOKUP_SET, l.set.c_str()));
    if (std::optional<uint32_t> id = SetId(l.set)) {
      nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SET_ID, *id);
    }
    if (l.dreg) nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_DREG, *l.dreg);
    if (l.invert) nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
    return e;
  }
  NftnlExprPtr Expr(const expr::Fib& f) {
    NftnlExprPtr e = NewExpr("fib");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_FIB_FLAGS, f.flags);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_FIB_RESULT, f.result);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_FIB_DREG, f.dreg);
    return e;
  }
  NftnlExprPtr Expr(const expr::Ct& c) {
    NftnlExprPtr e = NewExpr("ct");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_KEY, c.key);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_DREG, c.dreg);
    return e;
  }
  NftnlExprPtr Expr(const expr::Nat& n) {
    NftnlExprPtr e = NewExpr("nat");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_NAT_TYPE, n.type);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_NAT_FAMILY, n.family);
    if (n.reg_addr_min != 0)
      nftnl_expr_set_u32(e.get(), NFTNL_EXPR_NAT_REG_ADDR_MIN, n.reg_addr_min);
    if (n.reg_addr_max != 0)
      nftnl_expr_set_u32(e.get(), NFTNL_EXPR_NAT_REG_ADDR_MAX, n.reg_addr_max);
    if (n.reg_proto_min != 0) {
      nftnl_expr_set_u32(e.get(), NFTNL_EXPR_NAT_REG_PROTO_MIN, n.reg_proto_min);
    }
    if (n.reg_proto_max != 0) {
      nftnl_expr_set_u32(e.get(), NFTNL_EXPR_NAT_REG_PROTO_MAX, n.reg_proto_max);
    }
    if (n.flags != 0) nftnl_expr_set_u32(e.get(), NFTNL_EXPR_NAT_FLAGS, n.flags);
    return e;
  }
  NftnlExprPtr Expr(const expr::Masquerade& m) {
    NftnlExprPtr e = NewExpr("masq");
    if (m.flags != 0) nftnl_expr_set_u32(e.get(), NFTNL_EXPR_MASQ_FLAGS, m.flags);
    return e;
  }
  NftnlExprPtr Expr(const expr::Counter&) { return NewExpr("counter"); }
  NftnlExprPtr Expr(const expr::Immediate& i) {
    NftnlExprPtr e = NewExpr("immediate");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_DREG, i.dreg);
    MustSet(nftnl_expr_set(e.get(), NFTNL_EXPR_IMM_DATA, i.data.data(),
                           static_cast<uint32_t>(i.data.size())));
    return e;
  }
  NftnlExprPtr Expr(const expr::Verdict& v) {
    NftnlExprPtr e = NewExpr("immediate");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_VERDICT, static_cast<uint32_t>(v.code));
    if (!v.chain.empty())
      MustSet(nftnl_expr_set_str(e.get(), NFTNL_EXPR_IMM_CHAIN, v.chain.c_str()));
    return e;
  }

  NftnlSetElemPtr Element(const render::Element& element, bool with_data) {
    NftnlSetElemPtr e(nftnl_set_elem_alloc());
    CHECK(e != nullptr) << "allocate nftnl set element";
    MustSet(nftnl_set_elem_set(e.get(), NFTNL_SET_ELEM_KEY, element.key.data(),
                               static_cast<uint32_t>(element.key.size())));
    // Interval ends are found by key and flag, on delete too.
    if (element.flags != 0) nftnl_set_elem_set_u32(e.get(), NFTNL_SET_ELEM_FLAGS, element.flags);
    if (with_data && !element.data.empty()) {
      MustSet(nftnl_set_elem_set(e.get(), NFTNL_SET_ELEM_DATA, element.data.data(),
                                 static_cast<uint32_t>(element.data.size())));
    }
    // The kernel refuses userdata on an interval's end element (EINVAL,
    // nft_add_set_elem()): only the start carries the owner comment.
    if (with_data && !element.comment.empty() && !(element.flags & NFT_SET_ELEM_INTERVAL_END)) {
      Udata udata;
      udata.PutString(NFTNL_UDATA_SET_ELEM_COMMENT, element.comment);
      MustSet(nftnl_set_elem_set(e.get(), NFTNL_SET_ELEM_USERDATA, udata.data(), udata.size()));
    }
    return e;
  }

  // One op's elements as as many messages as needed, each at most
  // max_message_bytes_ (but always at least one element).
  absl::Status Elements(uint16_t type, uint16_t flags, const std::string& set,
                        const std::vector<render::Element>& elements, bool with_data) {
    const std::optional<uint32_t> set_id = SetId(set);
    size_t next = 0;
    while (next < elements.size()) {
      nlmsghdr* nlh = Header(type, flags);
      mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, plan_.table.c_str());
      mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, set.c_str());
      if (set_id) mnl_attr_put_u32(nlh, NFTA_SET_ELEM_LIST_SET_ID, htonl(*set_id));
      nlattr* list = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_LIST_ELEMENTS);
      nl::MessageTag tag{index_, next, next, {}};
      while (next < elements.size()) {
        const uint32_t start = nlh->nlmsg_len;
        NftnlSetElemPtr element = Element(elements[next], with_data);
        nftnl_set_elem_nlmsg_build(nlh, element.get(), NFTA_LIST_ELEM);
        if (nlh->nlmsg_len > max_message_bytes_ && !tag.element_offsets.empty()) {
          // Did not fit: roll this element back (the page's overrun area
          // absorbed the bytes) and start the next message with it.
          nlh->nlmsg_len = start;
          break;
        }
        tag.element_offsets.push_back(start);
        ++next;
      }
      tag.element_offsets.push_back(nlh->nlmsg_len);
      tag.element_end = next;
      mnl_attr_nest_end(nlh, list);
      RETURN_IF_ERROR(batch_.Push(std::move(tag)));
    }
    return absl::OkStatus();
  }

  const render::Plan& plan_;
  const size_t max_message_bytes_;
  nl::Batch& batch_;
  size_t index_ = 0;
  std::map<std::string, uint32_t> set_ids_;
  uint32_t next_set_id_ = 1;
};

}  // namespace

std::string OpSummaryIn(const render::Plan& plan, const render::Op& op) {
  if (std::holds_alternative<op::AddTable>(op)) return "add table " + plan.table;
  if (std::holds_alternative<op::DeleteTable>(op)) return "delete table " + plan.table;
  return render::OpSummary(op);
}

std::vector<txn::OpError> ValidatePlan(const render::Plan& plan) { return Validator(plan).Run(); }

absl::Status EncodePlan(const render::Plan& plan, const EncodeOptions& options, nl::Batch& batch) {
  const size_t max_bytes =
      std::clamp(options.max_message_bytes, kMinMessageBytes, kMaxElementMessageBytes);
  return Encoder(plan, max_bytes, batch).Run();
}

}  // namespace ruleplane::kernel::nft
