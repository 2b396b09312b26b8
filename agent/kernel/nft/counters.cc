#include "agent/kernel/nft/counters.h"

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/common/status_macros.h"
#include "agent/kernel/nft/objects.h"
#include "agent/kernel/nl/errors.h"
#include "agent/kernel/nl/socket.h"
#include "glog/logging.h"

namespace ruleplane::kernel::nft {
namespace {

using NftnlExprIterPtr = CPtr<nftnl_expr_iter, &nftnl_expr_iter_destroy>;

// "ruleplane:snat-primary-v4:1a2b3c4d" -> "snat-primary-v4".
std::string RuleName(const std::string& tag) {
  constexpr absl::string_view kPrefix = "ruleplane:";
  if (tag.rfind(kPrefix.data(), 0) != 0) return "";
  std::string rest = tag.substr(kPrefix.size());
  const size_t colon = rest.rfind(':');
  return colon == std::string::npos ? rest : rest.substr(0, colon);
}

}  // namespace

absl::StatusOr<std::map<std::string, RuleCounter>> ReadRuleCounters(const std::string& table) {
  ASSIGN_OR_RETURN(std::unique_ptr<nl::NetlinkSocket> socket, nl::NetlinkSocket::OpenNetfilter(""));
  std::vector<char> buf(8192, 0);
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP, 0);
  mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, table.c_str());
  std::map<std::string, RuleCounter> out;
  absl::Status s = socket->Request(nlh, "dump rule counters of inet " + table, [&](const nlmsghdr* reply) {
    NftnlRulePtr rule(nftnl_rule_alloc());
    CHECK(rule != nullptr) << "allocate nftnl rule";
    if (nftnl_rule_nlmsg_parse(reply, rule.get()) < 0) return absl::OkStatus();
    const char* t = nftnl_rule_get_str(rule.get(), NFTNL_RULE_TABLE);
    if (t == nullptr || table != t) return absl::OkStatus();
    uint32_t len = 0;
    const void* udata = nftnl_rule_get_data(rule.get(), NFTNL_RULE_USERDATA, &len);
    const std::string name = RuleName(UdataString(udata, len, NFTNL_UDATA_RULE_COMMENT));
    if (name.empty()) return absl::OkStatus();
    NftnlExprIterPtr it(nftnl_expr_iter_create(rule.get()));
    if (it == nullptr) return absl::OkStatus();
    for (nftnl_expr* e = nftnl_expr_iter_next(it.get()); e != nullptr; e = nftnl_expr_iter_next(it.get())) {
      const char* kind = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
      if (kind == nullptr || std::strcmp(kind, "counter") != 0) continue;
      RuleCounter& c = out[name];
      c.packets += nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
      c.bytes += nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
    }
    return absl::OkStatus();
  });
  if (nl::StatusErrno(s) == ENOENT) return out;  // no table (yet)
  RETURN_IF_ERROR(s);
  return out;
}

}  // namespace ruleplane::kernel::nft
