#include "agent/kernel/bpf/map_batch.h"

#include <bpf/bpf.h>

#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/common/status_macros.h"
#include "agent/kernel/bpf/errors.h"

namespace ruleplane::kernel::bpf {

absl::Status ForEachMapBatch(
    int fd, uint32_t key_size, uint32_t value_size, absl::string_view what,
    absl::FunctionRef<absl::Status(const uint8_t* keys, const uint8_t* values, uint32_t count)> visit) {
  constexpr uint32_t kBatch = 4096;
  constexpr uint32_t kMaxBatch = 1u << 20;  // far beyond any bucket's length
  uint32_t capacity = kBatch;
  std::vector<uint8_t> keys(size_t{capacity} * key_size), values(size_t{capacity} * value_size);
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  uint32_t in_token = 0, out_token = 0;
  bool first = true;
  for (;;) {
    uint32_t count = capacity;
    const int err = bpf_map_lookup_batch(fd, first ? nullptr : &in_token, &out_token, keys.data(), values.data(),
                                         &count, &opts);
    const int saved = errno;
    if (err != 0 && saved == ENOSPC && count == 0 && capacity < kMaxBatch) {
      capacity *= 2;
      keys.resize(size_t{capacity} * key_size);
      values.resize(size_t{capacity} * value_size);
      continue;
    }
    if (err != 0 && saved != ENOENT) return BpfError(saved, absl::StrCat("read ", what, " in batches"));
    RETURN_IF_ERROR(visit(keys.data(), values.data(), count));
    if (err != 0) return absl::OkStatus();  // ENOENT: past the last bucket
    in_token = out_token;
    first = false;
  }
}

}  // namespace ruleplane::kernel::bpf
