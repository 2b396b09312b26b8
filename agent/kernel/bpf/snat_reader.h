// Read-only view of the snat program's pinned maps, for statistics.
//
// Opens the pins by path with BPF_F_RDONLY on every call, so it needs no
// loaded program, never blocks the engine's writer (a diagnostics thread
// calls it), and holds no map alive after it returns (a mode switch may
// remove the pins at any time: NotFound then).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/kernel/bpf/snat_abi.h"
#include "agent/kernel/bpf/snat_program.h"

namespace ruleplane::kernel::bpf {

struct SnatMapsSnapshot {
  // Keys of ruleplane_rnat: one per live translation (egress address,
  // egress port, remote address, remote port, protocol).
  std::vector<rp_rnat_key> translations;
  // max_entries of ruleplane_rnat: once `translations` reaches it, each new
  // flow evicts the least recently used one.
  uint32_t flow_capacity = 0;
  ReasonCounters reasons{};
  std::vector<EgressUsage> egress;  // every slot, summed over CPUs
};

// NotFound when `pin_dir` holds no snat pins.
absl::StatusOr<SnatMapsSnapshot> ReadPinnedSnatMaps(const std::string& pin_dir);

}  // namespace ruleplane::kernel::bpf
