// The nf_tables ruleset generation message (NFT_MSG_NEWGEN): the answer to
// NFT_MSG_GETGEN and the event that closes every committed transaction.
#pragma once

#include <linux/netlink.h>

#include <cstdint>
#include <optional>
#include <string>

namespace ruleplane::kernel::nl {

struct GenerationInfo {
  uint32_t id = 0;
  // The committing task: the kernel reports task_pid_nr(current), i.e. the
  // thread id of the thread that called sendmsg() (== pid for a
  // single-threaded tool like nft), in the init pid namespace's numbering.
  uint32_t pid = 0;
  std::string proc_name;  // its comm, e.g. "nft"
};

// True for (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN.
bool IsNewGenMessage(const nlmsghdr* nlh);

// Parses NFTA_GEN_ID / NFTA_GEN_PROC_PID / NFTA_GEN_PROC_NAME; nullopt when
// `nlh` is not a NEWGEN or has no generation id.
std::optional<GenerationInfo> ParseNewGen(const nlmsghdr* nlh);

// The low 16 bits of the generation every nf_tables dump message carries in
// nfgenmsg.res_id (nf_tables_api.c sets it from net->nft.base_seq).
uint16_t DumpMessageGeneration(const nlmsghdr* nlh);

}  // namespace ruleplane::kernel::nl
