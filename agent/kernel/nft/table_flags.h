// nf_tables table flags the engine may put in TableSpec::flags.
#pragma once

#include <linux/netfilter/nf_tables.h>

#include <cstdint>

namespace ruleplane::kernel::nft {

// NFT_TABLE_F_OWNER (linux 5.12): the table belongs to the netlink socket
// that created (or claimed) it. Only that socket may change or delete it
// (others get EPERM), `nft flush ruleset` skips it, and by default the kernel
// destroys the table when the socket closes. Hence NetlinkNftPort commits
// through one long-lived socket, and its portid is the table's owner.
inline constexpr uint32_t kTableFlagOwner = 0x2;

// NFT_TABLE_F_PERSIST (linux 6.9; absent from Debian 12's 6.1 uapi headers,
// hence our own constant): when the owning socket closes, keep the table and
// only drop the owner flag, so an agent restart does not tear down the
// dataplane. The restarted agent re-claims the orphan by committing AddTable
// with kTableFlagOwner again. Kernels without it refuse the flag with
// EOPNOTSUPP.
inline constexpr uint32_t kTableFlagPersist = 0x4;

static_assert(kTableFlagOwner == NFT_TABLE_F_OWNER, "uapi NFT_TABLE_F_OWNER changed?");

}  // namespace ruleplane::kernel::nft
