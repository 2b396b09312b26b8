#include "agent/render/plan.h"

#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ruleplane::render {
namespace {

constexpr uint32_t kTypeBits = 6;  // nftables TYPE_BITS

uint32_t Pad4(uint32_t n) { return (n + 3) & ~3u; }

uint32_t ComponentsLen(const std::vector<DataType>& types) {
  if (types.size() == 1) return DataTypeLen(types[0]);
  uint32_t len = 0;
  for (DataType t : types) len += Pad4(DataTypeLen(t));
  return len;
}

uint32_t ComponentsTypeId(const std::vector<DataType>& types) {
  uint32_t id = 0;
  for (DataType t : types) id = (id << kTypeBits) | static_cast<uint32_t>(t);
  return id;
}

std::string TypesToText(const std::vector<DataType>& types) {
  std::vector<absl::string_view> names;
  for (DataType t : types) names.push_back(DataTypeName(t));
  return absl::StrJoin(names, " . ");
}

std::string HookName(uint32_t hook) {
  switch (hook) {
    case NF_INET_PRE_ROUTING: return "prerouting";
    case NF_INET_LOCAL_IN: return "input";
    case NF_INET_FORWARD: return "forward";
    case NF_INET_LOCAL_OUT: return "output";
    case NF_INET_POST_ROUTING: return "postrouting";
    default: return absl::StrCat("hook", hook);
  }
}

std::string Hex(const std::vector<uint8_t>& bytes) {
  std::string out = "0x";
  for (uint8_t b : bytes) absl::StrAppend(&out, absl::Hex(b, absl::kZeroPad2));
  return out;
}

std::string Reg(uint32_t r) {
  if (r == NFT_REG_VERDICT) return "verdict";
  if (r >= NFT_REG32_00) return absl::StrCat("reg32_", r - NFT_REG32_00);
  return absl::StrCat("reg", r);
}

std::string ElementsText(const std::vector<Element>& elements) {
  std::vector<std::string> parts;
  parts.reserve(elements.size());
  for (const Element& e : elements) {
    std::string s = e.text.empty() ? Hex(e.key) : e.text;
    if (!e.comment.empty()) absl::StrAppend(&s, " comment \"", e.comment, "\"");
    parts.push_back(std::move(s));
  }
  return absl::StrJoin(parts, ", ");
}

struct OpText {
  const Plan& plan;
  std::string Prefix() const {
    return absl::StrCat(plan.family == NFPROTO_INET ? "inet" : absl::StrCat("family", plan.family), " ",
                        plan.table);
  }
  std::string operator()(const op::AddTable& o) const {
    std::string s = absl::StrCat("add table ", Prefix());
    std::vector<std::string> flags;
    if (o.table.flags & NFT_TABLE_F_DORMANT) flags.push_back("dormant");
    if (o.table.flags & 0x2) flags.push_back("owner");
    if (o.table.flags & 0x4) flags.push_back("persist");
    if (!flags.empty() || !o.table.comment.empty()) {
      absl::StrAppend(&s, " {");
      if (!flags.empty()) absl::StrAppend(&s, " flags ", absl::StrJoin(flags, ","), ";");
      if (!o.table.comment.empty()) absl::StrAppend(&s, " comment \"", o.table.comment, "\";");
      absl::StrAppend(&s, " }");
    }
    return s;
  }
  std::string operator()(const op::AddChain& o) const {
    std::string s = absl::StrCat("add chain ", Prefix(), " ", o.chain.name);
    if (o.chain.base) {
      const BaseChainSpec& b = *o.chain.base;
      absl::StrAppend(&s, " { type ", b.type, " hook ", HookName(b.hook), " priority ", b.priority,
                      "; policy ", b.policy == NF_ACCEPT ? "accept" : "drop", ";");
      if (!o.chain.comment.empty()) absl::StrAppend(&s, " comment \"", o.chain.comment, "\";");
      absl::StrAppend(&s, " }");
    } else if (!o.chain.comment.empty()) {
      absl::StrAppend(&s, " { comment \"", o.chain.comment, "\"; }");
    }
    return s;
  }
  std::string operator()(const op::AddSet& o) const {
    const SetSpec& set = o.set;
    std::string s = absl::StrCat("add ", set.IsMap() ? "map " : "set ", Prefix(), " ", set.name,
                                 " { type ", TypesToText(set.key));
    if (set.IsMap()) absl::StrAppend(&s, " : ", TypesToText(set.data));
    absl::StrAppend(&s, ";");
    if (set.flags & NFT_SET_INTERVAL) absl::StrAppend(&s, " flags interval;");
    if (set.size) absl::StrAppend(&s, " size ", set.size, ";");
    if (!set.comment.empty()) absl::StrAppend(&s, " comment \"", set.comment, "\";");
    absl::StrAppend(&s, " }");
    return s;
  }
  std::string operator()(const op::AddRule& o) const {
    std::string s = absl::StrCat("add rule ", Prefix(), " ", o.rule.chain, " ", o.rule.text,
                                 " comment \"", o.rule.tag, "\"");
    for (const Expr& e : o.rule.exprs) absl::StrAppend(&s, "\n    ", ExprToText(e));
    return s;
  }
  std::string operator()(const op::FlushChain& o) const {
    return absl::StrCat("flush chain ", Prefix(), " ", o.chain);
  }
  std::string operator()(const op::DeleteChain& o) const {
    return absl::StrCat("delete chain ", Prefix(), " ", o.chain);
  }
  std::string operator()(const op::DeleteSet& o) const {
    return absl::StrCat("delete set ", Prefix(), " ", o.set);
  }
  std::string operator()(const op::DeleteTable&) const {
    return absl::StrCat("delete table ", Prefix());
  }
  std::string operator()(const op::AddElements& o) const {
    return absl::StrCat("add element ", Prefix(), " ", o.set, " { ", ElementsText(o.elements), " }");
  }
  std::string operator()(const op::DeleteElements& o) const {
    return absl::StrCat("delete element ", Prefix(), " ", o.set, " { ", ElementsText(o.elements),
                        " }");
  }
};

struct ExprText {
  std::string operator()(const expr::Meta& e) const {
    return absl::StrCat("[ meta load key ", e.key, " => ", Reg(e.dreg), " ]");
  }
  std::string operator()(const expr::Payload& e) const {
    static constexpr const char* kBase[] = {"link", "network", "transport", "inner"};
    return absl::StrCat("[ payload load ", e.len, "b @ ", e.base < 4 ? kBase[e.base] : "?",
                        " header + ", e.offset, " => ", Reg(e.dreg), " ]");
  }
  std::string operator()(const expr::Cmp& e) const {
    static constexpr const char* kOps[] = {"eq", "neq", "lt", "lte", "gt", "gte"};
    return absl::StrCat("[ cmp ", e.op < 6 ? kOps[e.op] : "?", " ", Reg(e.sreg), " ", Hex(e.data),
                        " ]");
  }
  std::string operator()(const expr::Bitwise& e) const {
    return absl::StrCat("[ bitwise ", Reg(e.dreg), " = ( ", Reg(e.sreg), " & ", Hex(e.mask),
                        " ) ^ ", Hex(e.xor_value), " ]");
  }
  std::string operator()(const expr::Lookup& e) const {
    std::string s = absl::StrCat("[ lookup ", Reg(e.sreg), " set ", e.set);
    if (e.dreg) absl::StrAppend(&s, " dreg ", Reg(*e.dreg));
    if (e.invert) absl::StrAppend(&s, " 0x1");
    return s + " ]";
  }
  std::string operator()(const expr::Fib& e) const {
    return absl::StrCat("[ fib flags 0x", absl::Hex(e.flags), " result ", e.result, " => ",
                        Reg(e.dreg), " ]");
  }
  std::string operator()(const expr::Ct& e) const {
    return absl::StrCat("[ ct load key ", e.key, " => ", Reg(e.dreg), " ]");
  }
  std::string operator()(const expr::Nat& e) const {
    std::string s = absl::StrCat("[ nat ", e.type == NFT_NAT_SNAT ? "snat" : "dnat", " ",
                                 e.family == NFPROTO_IPV4 ? "ip" : "ip6");
    if (e.reg_addr_min) absl::StrAppend(&s, " addr_min ", Reg(e.reg_addr_min));
    if (e.reg_addr_max) absl::StrAppend(&s, " addr_max ", Reg(e.reg_addr_max));
    if (e.reg_proto_min) absl::StrAppend(&s, " proto_min ", Reg(e.reg_proto_min));
    if (e.reg_proto_max) absl::StrAppend(&s, " proto_max ", Reg(e.reg_proto_max));
    return absl::StrCat(s, " flags 0x", absl::Hex(e.flags), " ]");
  }
  std::string operator()(const expr::Masquerade& e) const {
    return absl::StrCat("[ masq flags 0x", absl::Hex(e.flags), " ]");
  }
  std::string operator()(const expr::Counter&) const { return "[ counter ]"; }
  std::string operator()(const expr::Immediate& e) const {
    return absl::StrCat("[ immediate ", Reg(e.dreg), " ", Hex(e.data), " ]");
  }
  std::string operator()(const expr::Verdict& e) const {
    std::string s = absl::StrCat("[ immediate verdict ", e.code);
    if (!e.chain.empty()) absl::StrAppend(&s, " chain ", e.chain);
    return s + " ]";
  }
};

}  // namespace

uint32_t DataTypeLen(DataType type) {
  switch (type) {
    case DataType::kVerdict: return 4;
    case DataType::kIpv4Addr: return 4;
    case DataType::kIpv6Addr: return 16;
    case DataType::kInetProto: return 1;
    case DataType::kInetService: return 2;
    case DataType::kMark: return 4;
    case DataType::kIfname: return 16;
  }
  return 0;
}

absl::string_view DataTypeName(DataType type) {
  switch (type) {
    case DataType::kVerdict: return "verdict";
    case DataType::kIpv4Addr: return "ipv4_addr";
    case DataType::kIpv6Addr: return "ipv6_addr";
    case DataType::kInetProto: return "inet_proto";
    case DataType::kInetService: return "inet_service";
    case DataType::kMark: return "mark";
    case DataType::kIfname: return "ifname";
  }
  return "unknown";
}

uint32_t SetSpec::KeyLen() const { return ComponentsLen(key); }
uint32_t SetSpec::DataLen() const { return data.empty() ? 0 : ComponentsLen(data); }
uint32_t SetSpec::KeyTypeId() const { return ComponentsTypeId(key); }
uint32_t SetSpec::DataTypeId() const { return data.empty() ? 0 : ComponentsTypeId(data); }

size_t Plan::ElementCount() const {
  size_t n = 0;
  for (const Op& o : ops) {
    if (const auto* a = std::get_if<op::AddElements>(&o)) n += a->elements.size();
    if (const auto* d = std::get_if<op::DeleteElements>(&o)) n += d->elements.size();
  }
  return n;
}

std::string OpSummary(const Op& o) {
  struct Summary {
    std::string operator()(const op::AddTable& x) const { return "add table " + x.table.name; }
    std::string operator()(const op::AddChain& x) const { return "add chain " + x.chain.name; }
    std::string operator()(const op::AddSet& x) const { return "add set " + x.set.name; }
    std::string operator()(const op::AddRule& x) const {
      return absl::StrCat("add rule ", x.rule.chain, " ", x.rule.tag);
    }
    std::string operator()(const op::FlushChain& x) const { return "flush chain " + x.chain; }
    std::string operator()(const op::DeleteChain& x) const { return "delete chain " + x.chain; }
    std::string operator()(const op::DeleteSet& x) const { return "delete set " + x.set; }
    std::string operator()(const op::DeleteTable&) const { return "delete table"; }
    std::string operator()(const op::AddElements& x) const { return "add element " + x.set; }
    std::string operator()(const op::DeleteElements& x) const { return "delete element " + x.set; }
  };
  return std::visit(Summary{}, o);
}

std::string ExprToText(const Expr& e) { return std::visit(ExprText{}, e); }

std::string PlanToText(const Plan& plan) {
  std::string out;
  OpText text{plan};
  for (const Op& o : plan.ops) {
    absl::StrAppend(&out, std::visit(text, o), "\n");
  }
  return out;
}

}  // namespace ruleplane::render
