// Read-only view of the snat program's pinned maps, for statistics.
//
// Opens the pins by path with BPF_F_RDONLY on every call, so it needs no
// loaded program, never blocks the engine's writer (a diagnostics thread
// calls it), and holds no map alive after it returns (a mode switch may
// remove the pins at any time: NotFound then).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/kernel/bpf/snat_abi.h"
#include "agent/kernel/bpf/snat_program.h"

namespace ruleplane::kernel::bpf {

struct SnatMapsSnapshot {
  // Keys of ruleplane_rnat: one per live translation (egress address,
  // egress port, remote address, remote port, protocol). Not read (nullopt)
  // when the caller's generation is still current.
  std::optional<std::vector<rp_rnat_key>> translations;
  // Changes whenever the set of ruleplane_rnat's keys (or the flow a key
  // maps to) may have changed: the sum of every counter the datapath bumps
  // after such a change (insert attempts: allocs and collisions per egress
  // slot; reclaims, restored reverse halves, stale forward entries, ports
  // given back after a race).
  // Read before the translations, so a change during the scan shows as a
  // new generation next time. With the map's id: a recreated map (mode
  // switched away and back) restarts the counters.
  uint64_t generation = 0;
  uint32_t flow_map_id = 0;
  // max_entries of ruleplane_rnat: once `translations` reaches it, each new
  // flow evicts the least recently used one.
  uint32_t flow_capacity = 0;
  ReasonCounters reasons{};
  std::vector<EgressUsage> egress;  // every slot, summed over CPUs
  // rp_snat_cfg.excl_bank: true when egress scans the inline exclusion array
  // (up to RP_SNAT_FAST_EXCLUSIONS prefixes), false when the LPM trie answers
  // (more prefixes, or maps written by an agent before the banks).
  bool exclusions_in_array = false;
};

// What a caller last read: SnatMapsSnapshot's flow_map_id and generation.
struct SnatMapsGeneration {
  uint32_t flow_map_id = 0;
  uint64_t generation = 0;
};

// NotFound when `pin_dir` holds no snat pins. When `known` is still current
// (same flow map, same generation) the translations (a walk of the whole
// flow map) are not read: the caller's copy is still right. A node whose
// pods open no new flows then costs a few counter reads per collection.
absl::StatusOr<SnatMapsSnapshot> ReadPinnedSnatMaps(const std::string& pin_dir,
                                                    std::optional<SnatMapsGeneration> known = std::nullopt);

}  // namespace ruleplane::kernel::bpf
