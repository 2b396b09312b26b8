#include "agent/api/ruleset_text.h"

#include <arpa/inet.h>
#include <linux/netfilter.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/render/plan.h"

namespace ruleplane::api {
namespace {

using render::DataType;

std::vector<DataType> SplitTypes(uint32_t id) {
  std::vector<DataType> out;
  while (id) {
    out.insert(out.begin(), static_cast<DataType>(id & 0x3f));
    id >>= 6;
  }
  return out;
}

std::string Hook(uint32_t h) {
  switch (h) {
    case NF_INET_PRE_ROUTING: return "prerouting";
    case NF_INET_LOCAL_IN: return "input";
    case NF_INET_FORWARD: return "forward";
    case NF_INET_LOCAL_OUT: return "output";
    case NF_INET_POST_ROUTING: return "postrouting";
  }
  return absl::StrCat(h);
}

}  // namespace

std::string DecodeTyped(uint32_t type_id, const std::vector<uint8_t>& bytes) {
  std::vector<DataType> types = SplitTypes(type_id);
  std::vector<std::string> parts;
  size_t pos = 0;
  for (DataType t : types) {
    uint32_t len = render::DataTypeLen(t);
    if (len == 0 || pos + len > bytes.size()) return "";
    char buf[INET6_ADDRSTRLEN];
    switch (t) {
      case DataType::kIpv4Addr: inet_ntop(AF_INET, bytes.data() + pos, buf, sizeof(buf)); parts.push_back(buf); break;
      case DataType::kIpv6Addr: inet_ntop(AF_INET6, bytes.data() + pos, buf, sizeof(buf)); parts.push_back(buf); break;
      case DataType::kInetProto: {
        uint8_t p = bytes[pos];
        parts.push_back(p == 6 ? "tcp" : p == 17 ? "udp" : p == 132 ? "sctp" : absl::StrCat(p));
        break;
      }
      case DataType::kInetService: parts.push_back(absl::StrCat((bytes[pos] << 8) | bytes[pos + 1])); break;
      default: parts.push_back("?"); break;
    }
    pos += types.size() > 1 ? (len + 3) & ~3u : len;
  }
  return absl::StrJoin(parts, " . ");
}

std::string KernelTableToText(const std::string& table, const txn::KernelTable& t) {
  if (!t.exists) return absl::StrCat("# table inet ", table, " does not exist\n");
  std::string out = absl::StrCat("table inet ", table, " {\n");
  if (!t.comment.empty()) absl::StrAppend(&out, "\tcomment \"", t.comment, "\"\n");
  if (t.flags) absl::StrAppend(&out, "\t# flags 0x", absl::Hex(t.flags), (t.flags & 0x2) ? " (owner)" : "",
                               (t.flags & 0x4) ? " (persist)" : "", "\n");
  for (const auto& [name, s] : t.sets) {
    absl::StrAppend(&out, "\n\t", s.data_len ? "map " : "set ", name, " {\n\t\t# ", s.elements.size(),
                    " elements\n");
    if (!s.comment.empty()) absl::StrAppend(&out, "\t\tcomment \"", s.comment, "\"\n");
    if (!s.elements.empty()) {
      std::vector<std::string> els;
      for (const auto& e : s.elements) {
        std::string k = DecodeTyped(s.key_type, e.key);
        if (s.data_len) absl::StrAppend(&k, " : ", DecodeTyped(s.data_type, e.data));
        if (!e.comment.empty()) absl::StrAppend(&k, " comment \"", e.comment, "\"");
        els.push_back(std::move(k));
      }
      absl::StrAppend(&out, "\t\telements = { ", absl::StrJoin(els, ",\n\t\t\t     "), " }\n");
    }
    absl::StrAppend(&out, "\t}\n");
  }
  for (const auto& [name, c] : t.chains) {
    absl::StrAppend(&out, "\n\tchain ", name, " {\n");
    if (c.base) {
      absl::StrAppend(&out, "\t\ttype ", c.base->type, " hook ", Hook(c.base->hook), " priority ", c.base->priority,
                      "; policy ", c.base->policy == NF_ACCEPT ? "accept" : "drop", ";\n");
    }
    if (!c.comment.empty()) absl::StrAppend(&out, "\t\tcomment \"", c.comment, "\"\n");
    for (const auto& r : c.rules) {
      absl::StrAppend(&out, "\t\t# handle ", r.handle, " comment \"", r.tag, "\"\n");
    }
    absl::StrAppend(&out, "\t}\n");
  }
  absl::StrAppend(&out, "}\n");
  return out;
}

}  // namespace ruleplane::api
