// Reading the packet counters of our own rules back (read-only).
//
// One NFT_MSG_GETRULE dump of one table; rules are identified by their
// userdata tag ("ruleplane:<name>:<hash>"), and every `counter` expression
// of a rule is summed. Used by the SNAT monitor for the nftables backend's
// failover and drop statistics.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace ruleplane::kernel::nft {

struct RuleCounter {
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

// Counters by rule name (the tag without "ruleplane:" and the hash), for the
// rules of `table` (family inet) that carry a counter. NotFound-free: a
// missing table gives an empty map. A fresh socket in the calling thread's
// network namespace.
absl::StatusOr<std::map<std::string, RuleCounter>> ReadRuleCounters(const std::string& table);

}  // namespace ruleplane::kernel::nft
