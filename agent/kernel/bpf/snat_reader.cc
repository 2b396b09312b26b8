#include "agent/kernel/bpf/snat_reader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "agent/common/status_macros.h"
#include "agent/common/unique_fd.h"
#include "agent/kernel/bpf/errors.h"
#include "agent/kernel/bpf/map_batch.h"
#include "snat.skel.h"

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

// The ids of the maps program `fd` uses.
absl::StatusOr<std::vector<uint32_t>> ProgramMapIds(int fd, uint32_t count) {
  std::vector<uint32_t> ids(count);
  bpf_prog_info info{};
  info.nr_map_ids = count;
  info.map_ids = reinterpret_cast<uintptr_t>(ids.data());
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return BpfError(errno, "query a BPF program's maps");
  ids.resize(std::min(count, info.nr_map_ids));
  return ids;
}

// The value of one-entry array map `id` (an object's .rodata or .kconfig),
// with its name; nullopt when the map went away meanwhile.
struct ArrayValue {
  std::string name;
  std::vector<uint8_t> bytes;
};
std::optional<ArrayValue> ReadSingleValueMap(uint32_t id) {
  struct bpf_get_fd_by_id_opts opts {};
  opts.sz = sizeof(opts);
  opts.open_flags = BPF_F_RDONLY;
  UniqueFd fd(bpf_map_get_fd_by_id_opts(id, &opts));
  if (!fd.valid()) return std::nullopt;
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) return std::nullopt;
  ArrayValue out{info.name, {}};
  if (info.type != BPF_MAP_TYPE_ARRAY || info.max_entries != 1 || info.key_size != sizeof(uint32_t)) return out;
  out.bytes.resize(info.value_size);
  const uint32_t zero = 0;
  if (bpf_map_lookup_elem(fd.get(), &zero, out.bytes.data()) != 0) out.bytes.clear();
  return out;
}

// The T at byte `offset` of `bytes` (host order, as the program stores
// it), or nullopt when the value is shorter.
template <typename T>
std::optional<T> FieldAt(const std::vector<uint8_t>& bytes, size_t offset) {
  if (bytes.size() < offset + sizeof(T)) return std::nullopt;
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(T));
  return v;
}

using Rodata = std::remove_pointer_t<decltype(snat::rodata)>;
using Kconfig = std::remove_pointer_t<decltype(snat::kconfig)>;

}  // namespace

absl::StatusOr<SnatDatapath> ReadSnatDatapath(uint32_t flow_map_id) {
  SnatDatapath out;
  std::vector<uint32_t> egress_maps;
  for (uint32_t id = 0;;) {
    if (bpf_prog_get_next_id(id, &id) != 0) {
      if (errno == ENOENT) break;
      return BpfError(errno, "walk the node's BPF programs");
    }
    UniqueFd fd(bpf_prog_get_fd_by_id(id));
    if (!fd.valid()) continue;  // unloaded meanwhile
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) continue;
    if (info.type != BPF_PROG_TYPE_SCHED_CLS || info.nr_map_ids == 0) continue;
    const absl::string_view name(info.name);
    const bool direct = name == "snat_egress" || name == "snat_ingress";
    const bool helper = name == "snat_egress_h" || name == "snat_ingress_h";
    if (!direct && !helper) continue;
    absl::StatusOr<std::vector<uint32_t>> maps = ProgramMapIds(fd.get(), info.nr_map_ids);
    if (!maps.ok() || std::find(maps->begin(), maps->end(), flow_map_id) == maps->end()) continue;
    ++out.programs;
    // One pair runs at a time; during a reload the new pair may already be
    // loaded next to the old one: the newest (highest id) tells.
    out.l4_checksum = direct ? "direct" : "helper";
    if (absl::StartsWith(name, "snat_egress")) egress_maps = *std::move(maps);
  }
  if (out.programs == 0) {
    return absl::NotFoundError(absl::StrCat("no snat program uses flow map id ", flow_map_id));
  }
  std::optional<bool> jiffies;
  std::optional<uint32_t> hz;
  for (const uint32_t map_id : egress_maps) {
    std::optional<ArrayValue> v = ReadSingleValueMap(map_id);
    if (!v) continue;
    if (absl::EndsWith(v->name, ".rodata")) {
      // A C _Bool: read as a byte.
      static_assert(sizeof(Rodata::clock_jiffies) == 1);
      if (auto b = FieldAt<uint8_t>(v->bytes, offsetof(Rodata, clock_jiffies))) jiffies = *b != 0;
    }
    if (absl::EndsWith(v->name, ".kconfig")) hz = FieldAt<uint32_t>(v->bytes, offsetof(Kconfig, CONFIG_HZ));
  }
  // rp_clock: jiffies only when the loader allowed it and libbpf found HZ
  // (no .kconfig map at all means the extern was dropped: no HZ either).
  if (jiffies.has_value()) out.clock = *jiffies && hz.value_or(0) != 0 ? "jiffies" : "ktime";
  return out;
}

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
