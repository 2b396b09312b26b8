// Whole-map reads in batches (BPF_MAP_LOOKUP_BATCH): one syscall per batch
// instead of one get_next_key + lookup per entry, for the flow maps that hold
// up to millions of entries.
// Thread: any; the callback runs on the caller's thread.
#pragma once

#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ruleplane::kernel::bpf {

// Hands every entry of the hash map `fd` to `visit`, a batch at a time:
// `count` keys of `key_size` bytes and values of `value_size` bytes, packed.
// The kernel walks the map bucket by bucket; entries the datapath adds or
// evicts meanwhile may be missed or seen. A bucket with more entries than the
// buffer fails with ENOSPC before copying anything: the buffer grows and the
// same bucket is read again. `what` names the map in errors. Stops at the
// first error of `visit`.
[[nodiscard]] absl::Status ForEachMapBatch(
    int fd, uint32_t key_size, uint32_t value_size, absl::string_view what,
    absl::FunctionRef<absl::Status(const uint8_t* keys, const uint8_t* values, uint32_t count)> visit);

}  // namespace ruleplane::kernel::bpf
