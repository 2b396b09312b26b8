#include "agent/kernel/nl/generation.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <cstring>

namespace ruleplane::kernel::nl {
namespace {

int GenAttrCallback(const nlattr* attr, void* data) {
  auto** tb = static_cast<const nlattr**>(data);
  uint16_t type = mnl_attr_get_type(attr);
  if (type > NFTA_GEN_MAX) return MNL_CB_OK;  // newer kernel: ignore
  tb[type] = attr;
  return MNL_CB_OK;
}

}  // namespace

bool IsNewGenMessage(const nlmsghdr* nlh) {
  return nlh->nlmsg_type == ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN);
}

std::optional<GenerationInfo> ParseNewGen(const nlmsghdr* nlh) {
  if (!IsNewGenMessage(nlh) || mnl_nlmsg_get_payload_len(nlh) < sizeof(nfgenmsg)) {
    return std::nullopt;
  }
  const nlattr* tb[NFTA_GEN_MAX + 1] = {};
  if (mnl_attr_parse(nlh, sizeof(nfgenmsg), GenAttrCallback, tb) < 0) return std::nullopt;
  if (tb[NFTA_GEN_ID] == nullptr || mnl_attr_validate(tb[NFTA_GEN_ID], MNL_TYPE_U32) < 0) {
    return std::nullopt;
  }
  GenerationInfo info;
  info.id = ntohl(mnl_attr_get_u32(tb[NFTA_GEN_ID]));
  if (tb[NFTA_GEN_PROC_PID] != nullptr &&
      mnl_attr_validate(tb[NFTA_GEN_PROC_PID], MNL_TYPE_U32) == 0) {
    info.pid = ntohl(mnl_attr_get_u32(tb[NFTA_GEN_PROC_PID]));
  }
  if (tb[NFTA_GEN_PROC_NAME] != nullptr) {
    const char* name = static_cast<const char*>(mnl_attr_get_payload(tb[NFTA_GEN_PROC_NAME]));
    info.proc_name.assign(name, ::strnlen(name, mnl_attr_get_payload_len(tb[NFTA_GEN_PROC_NAME])));
  }
  return info;
}

uint16_t DumpMessageGeneration(const nlmsghdr* nlh) {
  if (mnl_nlmsg_get_payload_len(nlh) < sizeof(nfgenmsg)) return 0;
  const auto* gen = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
  return ntohs(gen->res_id);
}

}  // namespace ruleplane::kernel::nl
