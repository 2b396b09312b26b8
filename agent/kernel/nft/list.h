// Listing every nf_tables chain on the node, in every family and table.
//
// Read-only (one NFT_MSG_GETCHAIN dump with NFPROTO_UNSPEC); it never sends
// anything that changes the ruleset. Used at start to find base chains of
// other components at our hook priorities, and by the iptables-backend
// detection (iptables-nft tables, kube-proxy's hint chains).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/kernel/nl/socket.h"
#include "agent/render/plan.h"

namespace ruleplane::kernel::nft {

struct ChainListing {
  uint32_t family = 0;
  std::string table;
  std::string name;
  std::optional<render::BaseChainSpec> base;  // type, hook, priority of base chains
};

// Every chain of every table. The dump is retried when the ruleset changed
// underneath it (NLM_F_DUMP_INTR), up to `max_attempts`.
absl::StatusOr<std::vector<ChainListing>> ListChains(nl::NetlinkSocket& socket, int max_attempts = 5);

// Same, on a fresh socket in `netns_path` (empty = ours), closed afterwards.
absl::StatusOr<std::vector<ChainListing>> ListChains(const std::string& netns_path);

}  // namespace ruleplane::kernel::nft
