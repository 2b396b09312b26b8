#include "agent/kernel/bpf/snat_reader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/common/status_macros.h"
#include "agent/common/unique_fd.h"
#include "agent/kernel/bpf/errors.h"
#include "agent/kernel/bpf/map_batch.h"

namespace ruleplane::kernel::bpf {
namespace {

absl::StatusOr<UniqueFd> OpenPin(const std::string& pin_dir, const char* map) {
  const std::string path = absl::StrCat(pin_dir, "/", map);
  struct bpf_obj_get_opts opts {};
  opts.sz = sizeof(opts);
  opts.file_flags = BPF_F_RDONLY;
  UniqueFd fd(bpf_obj_get_opts(path.c_str(), &opts));
  if (!fd.valid()) return BpfError(errno, absl::StrCat("open pinned map ", path));
  return fd;
}

// One slot of a per-CPU array, summed by `add`.
template <typename V, typename F>
absl::Status ReadPerCpu(int fd, uint32_t slot, const char* map, F add) {
  const int ncpus = libbpf_num_possible_cpus();
  if (ncpus <= 0) return BpfError(ncpus, "count possible CPUs");
  std::vector<V> values(static_cast<size_t>(ncpus));
  if (bpf_map_lookup_elem(fd, &slot, values.data()) != 0) {
    return BpfError(errno, absl::StrCat("read slot ", slot, " of ", map));
  }
  for (const V& v : values) add(v);
  return absl::OkStatus();
}

// Every key of ruleplane_rnat (ForEachMapBatch: entries added or evicted by
// the datapath meanwhile may be missed or seen, which statistics tolerate).
absl::Status ReadTranslations(int fd, std::vector<rp_rnat_key>& out) {
  return ForEachMapBatch(fd, sizeof(rp_rnat_key), sizeof(rp_rnat_val), "ruleplane_rnat",
                         [&out](const uint8_t* keys, const uint8_t*, uint32_t count) {
                           for (uint32_t i = 0; i < count; ++i) {
                             rp_rnat_key k;
                             std::memcpy(&k, keys + size_t{i} * sizeof(k), sizeof(k));
                             out.push_back(k);
                           }
                           return absl::OkStatus();
                         });
}

}  // namespace

absl::StatusOr<SnatMapsSnapshot> ReadPinnedSnatMaps(const std::string& pin_dir,
                                                    std::optional<SnatMapsGeneration> known) {
  SnatMapsSnapshot out;
  ASSIGN_OR_RETURN(UniqueFd rnat, OpenPin(pin_dir, "ruleplane_rnat"));
  ASSIGN_OR_RETURN(UniqueFd rsn, OpenPin(pin_dir, "ruleplane_rsn"));
  ASSIGN_OR_RETURN(UniqueFd estat, OpenPin(pin_dir, "ruleplane_estat"));
  ASSIGN_OR_RETURN(UniqueFd eaddr, OpenPin(pin_dir, "ruleplane_eaddr"));
  ASSIGN_OR_RETURN(UniqueFd cfg, OpenPin(pin_dir, "ruleplane_cfg"));

  bpf_map_info info{};
  uint32_t info_len = sizeof(info);
  if (bpf_obj_get_info_by_fd(rnat.get(), &info, &info_len) != 0) return BpfError(errno, "query ruleplane_rnat");
  out.flow_capacity = info.max_entries;
  out.flow_map_id = info.id;

  for (uint32_t r = 0; r < RP_REASON_SLOTS; ++r) {
    RETURN_IF_ERROR(ReadPerCpu<uint64_t>(rsn.get(), r, "ruleplane_rsn", [&](uint64_t v) { out.reasons[r] += v; }));
  }
  const uint32_t zero = 0;
  rp_snat_cfg c{};
  if (bpf_map_lookup_elem(cfg.get(), &zero, &c) != 0) return BpfError(errno, "read ruleplane_cfg");
  out.exclusions_in_array = c.excl_bank == RP_EXCL_BANK_0 || c.excl_bank == RP_EXCL_BANK_1;
  for (uint32_t slot = 0; slot < RP_SNAT_MAX_EGRESS_ADDRS; ++slot) {
    EgressUsage u;
    u.slot = slot;
    u.live = slot < c.egress_count;
    rp_egress_addr a{};
    if (bpf_map_lookup_elem(eaddr.get(), &slot, &a) != 0) return BpfError(errno, "read ruleplane_eaddr");
    u.address = EgressAddress{Ipv4Addr::FromNetworkOrder(a.addr), (a.flags & RP_EGRESS_F_DRAINING) != 0};
    RETURN_IF_ERROR(ReadPerCpu<rp_egress_stats>(estat.get(), slot, "ruleplane_estat", [&](const rp_egress_stats& s) {
      u.allocs += s.allocs;
      u.collisions += s.collisions;
      u.exhausted += s.exhausted;
    }));
    out.egress.push_back(u);
  }
  out.generation = out.reasons[RP_NAT_RECLAIM] + out.reasons[RP_NAT_RESTORED] + out.reasons[RP_NAT_STALE] +
                   out.reasons[RP_NAT_RACE];
  for (const EgressUsage& u : out.egress) out.generation += u.allocs + u.collisions;
  if (!known || known->flow_map_id != out.flow_map_id || known->generation != out.generation) {
    RETURN_IF_ERROR(ReadTranslations(rnat.get(), out.translations.emplace()));
  }
  return out;
}

}  // namespace ruleplane::kernel::bpf
