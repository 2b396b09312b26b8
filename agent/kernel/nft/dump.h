// Reading nf_tables state back: the ruleset generation and one table.
//
// Read-only. Callers pass the socket to use; NetlinkNftPort keeps a separate
// socket for dumps so an aborted dump never leaves replies on the commit
// socket.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "agent/kernel/nl/socket.h"
#include "agent/txn/nft_port.h"

namespace ruleplane::kernel::nft {

// NFT_MSG_GETGEN: the current ruleset generation id.
absl::StatusOr<uint32_t> ReadGeneration(nl::NetlinkSocket& socket);

// One consistent read of table `table` of `family`: table, chains (with base
// spec and comment), rules per chain in order (tag + handle), named sets with
// all elements. A missing table is exists=false. The generation is read
// before and after, and every dump message carries the low 16 bits of the
// generation it was produced in; when anything changed (or the kernel set
// NLM_F_DUMP_INTR) the read is retried, up to `max_attempts`, then Aborted.
absl::StatusOr<txn::KernelTable> DumpTable(nl::NetlinkSocket& socket, std::string_view table,
                                           uint32_t family, int max_attempts = 10);

}  // namespace ruleplane::kernel::nft
