// NftPort: the engine's only door to nftables.
//
// The real implementation (kernel::nft::NetlinkNftPort) speaks netlink through
// libmnl/libnftnl; the fake (test/fakes/fake_nft_port.h) keeps a table in
// memory and can inject an errno per op. Only the engine thread calls Commit();
// Dump() may be called by the engine thread or, on a separate port instance,
// by a diagnostics reader.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/render/plan.h"

namespace ruleplane::txn {

// One op the kernel refused. `op_index` indexes Plan::ops. When the kernel's
// extended ACK pointed at one element of an element op, `element_index` says
// which (index into that op's `elements`).
struct OpError {
  size_t op_index = 0;
  std::optional<size_t> element_index;
  absl::Status status;  // code from errno (STYLE.md section 4), message names op and object
};

struct CommitReport {
  // OK when the kernel applied the whole batch. Otherwise the batch was
  // rejected as a whole (nothing applied) unless outcome_unknown is set.
  absl::Status status;
  std::vector<OpError> errors;  // every op the kernel reported, in seq order
  // Replies were lost (ENOBUFS while draining ACKs, socket error after send):
  // the batch may or may not have been applied. The engine must resync.
  bool outcome_unknown = false;
  uint32_t messages = 0;  // netlink messages in the batch, BEGIN/END excluded
  size_t bytes = 0;       // bytes sent
  uint32_t generation = 0;  // ruleset generation id after the commit, 0 if unknown
};

struct KernelElement {
  std::vector<uint8_t> key;
  std::vector<uint8_t> data;
  std::string comment;
  uint32_t flags = 0;  // NFT_SET_ELEM_INTERVAL_END etc.
};

struct KernelSet {
  std::string name;
  uint32_t flags = 0;
  uint32_t key_type = 0;
  uint32_t key_len = 0;
  uint32_t data_type = 0;
  uint32_t data_len = 0;
  uint32_t size = 0;
  std::string comment;
  std::vector<KernelElement> elements;
};

struct KernelRule {
  std::string tag;  // userdata comment; empty if the rule has none (not ours)
  uint64_t handle = 0;
};

struct KernelChain {
  std::string name;
  std::optional<render::BaseChainSpec> base;
  std::string comment;
  std::vector<KernelRule> rules;  // in chain order
};

// The agent's table as read back from the kernel.
struct KernelTable {
  bool exists = false;
  uint32_t flags = 0;
  uint32_t owner = 0;  // netlink portid of the owner when NFT_TABLE_F_OWNER is set
  std::string comment;
  std::map<std::string, KernelChain> chains;
  std::map<std::string, KernelSet> sets;
  uint32_t generation = 0;  // generation the dump is consistent with
};

class NftPort {
 public:
  virtual ~NftPort() = default;

  // Sends the whole plan as ONE nftables batch (BEGIN ... END): the kernel
  // applies all of it or none. Never throws, never CHECK-fails on kernel
  // errors. Engine thread only.
  virtual CommitReport Commit(const render::Plan& plan) = 0;

  // Reads table `table` of family `family` back (chains with their rules'
  // tags, sets with all elements). A missing table is exists=false, not an
  // error. The result is consistent with one ruleset generation (the dump is
  // retried when the generation changes underneath it).
  virtual absl::StatusOr<KernelTable> Dump(std::string_view table, uint32_t family) = 0;
};

}  // namespace ruleplane::txn
