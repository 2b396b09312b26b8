#include "agent/kernel/bpf/snat_program.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <linux/pkt_cls.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <filesystem>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/common/status_macros.h"
#include "agent/common/unique_fd.h"
#include "agent/kernel/bpf/errors.h"
#include "agent/kernel/bpf/map_batch.h"
#include "glog/logging.h"
#include "snat.skel.h"

namespace ruleplane::kernel::bpf {
namespace {

// --- typed map access; every error names the map and the operation ---

template <typename K, typename V>
absl::Status MapUpdate(bpf_map* map, const K& key, const V& value, uint64_t flags, absl::string_view what) {
  // bpf_map__update_elem() also checks key/value sizes against the map.
  const int err = bpf_map__update_elem(map, &key, sizeof(K), &value, sizeof(V), flags);
  if (err != 0) return BpfError(err, absl::StrCat("update ", what, " in map ", bpf_map__name(map)));
  return absl::OkStatus();
}

template <typename K>
absl::Status MapDelete(bpf_map* map, const K& key, absl::string_view what) {
  const int err = bpf_map__delete_elem(map, &key, sizeof(K), 0);
  if (err != 0 && err != -ENOENT) {
    return BpfError(err, absl::StrCat("delete ", what, " from map ", bpf_map__name(map)));
  }
  return absl::OkStatus();
}

// nullopt when the key is absent.
template <typename K, typename V>
absl::StatusOr<std::optional<V>> MapLookup(const bpf_map* map, const K& key, absl::string_view what) {
  V value{};
  const int err = bpf_map__lookup_elem(map, &key, sizeof(K), &value, sizeof(V), 0);
  if (err == -ENOENT) return std::nullopt;
  if (err != 0) return BpfError(err, absl::StrCat("look up ", what, " in map ", bpf_map__name(map)));
  return value;
}

// Every key of a hash/LPM map. Not a snapshot: concurrent updates may be
// missed or seen, which the Replace* callers tolerate.
template <typename K>
absl::StatusOr<std::vector<K>> MapKeys(const bpf_map* map) {
  std::vector<K> keys;
  K key{};
  const K* prev = nullptr;
  for (;;) {
    const int err = bpf_map__get_next_key(map, prev, &key, sizeof(K));
    if (err == -ENOENT) break;
    if (err != 0) return BpfError(err, absl::StrCat("iterate map ", bpf_map__name(map)));
    keys.push_back(key);
    prev = &keys.back();
    if (keys.size() > bpf_map__max_entries(map)) {
      // get_next_key restarts from the first key when `prev` vanished
      // concurrently; do not loop forever on a map that keeps changing.
      return absl::AbortedError(absl::StrCat("iterate map ", bpf_map__name(map), ": map changed during the walk"));
    }
  }
  return keys;
}

// Reads one slot of a per-CPU array: one V per possible CPU.
template <typename V>
absl::StatusOr<std::vector<V>> PerCpuLookup(const bpf_map* map, uint32_t slot) {
  static_assert(sizeof(V) % 8 == 0, "per-CPU values are stored at 8-byte strides");
  const int ncpus = libbpf_num_possible_cpus();
  if (ncpus <= 0) return BpfError(ncpus, "count possible CPUs");
  std::vector<V> values(static_cast<size_t>(ncpus));
  const int err = bpf_map__lookup_elem(map, &slot, sizeof(slot), values.data(), values.size() * sizeof(V), 0);
  if (err != 0) return BpfError(err, absl::StrCat("read slot ", slot, " of map ", bpf_map__name(map)));
  return values;
}

// --- pin dir ---

absl::Status PreparePinDir(const std::string& dir) {
  // The first existing ancestor must be bpffs: on anything else the pins would
  // be plain files (or mkdir fails in sysfs) and state would not survive.
  std::filesystem::path probe(dir);
  std::error_code ec;
  while (!probe.empty() && !std::filesystem::exists(probe, ec)) probe = probe.parent_path();
  struct statfs fs {};
  if (::statfs(probe.empty() ? "/" : probe.c_str(), &fs) != 0) {
    return BpfError(errno, absl::StrCat("statfs ", probe.string(), " for pin dir ", dir));
  }
  if (fs.f_type != BPF_FS_MAGIC) {
    return absl::FailedPreconditionError(absl::StrCat("bpf pin dir ", dir, ": ", probe.string(),
                                                      " is not on a bpffs mount (mount -t bpf bpf /sys/fs/bpf)"));
  }
  if (std::filesystem::create_directories(dir, ec); ec) {
    return BpfError(ec.value(), absl::StrCat("create bpf pin dir ", dir));
  }
  return absl::OkStatus();
}

// The NAT maps, whose size is configuration (SnatConfig::max_flows).
bool IsFlowMap(const bpf_map* map) {
  const absl::string_view name = bpf_map__name(map);
  return name == "ruleplane_nat" || name == "ruleplane_rnat";
}

// What to do with the pin at a map's path.
enum class PinMatch {
  kAbsent,   // none: libbpf creates the map and pins it
  kAdopt,    // compatible: libbpf reuses it
  kMigrate,  // a flow map of another size: create anew, move its flows over
};

// FailedPrecondition if a pin exists at `path` that `map` can neither adopt
// nor migrate from. libbpf would also refuse it at load time, but only with
// EINVAL and a log line. A flow map pinned with another size (the operator
// changed snat_bpf_max_flows) is migrated: a new map of the configured size
// takes over its entries (SnatProgram::FinishFlowMapMigration), so
// established flows keep their translation.
absl::StatusOr<PinMatch> MatchPinnedMap(bpf_map* map, const std::string& path) {
  UniqueFd fd(bpf_obj_get(path.c_str()));
  if (!fd.valid()) {
    const int err = errno;
    if (err == ENOENT) return PinMatch::kAbsent;
    return BpfError(err, absl::StrCat("open pinned map ", path));
  }
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (const int err = bpf_obj_get_info_by_fd(fd.get(), &info, &len); err != 0) {
    return BpfError(err, absl::StrCat("query pinned map ", path));
  }
  std::vector<std::string> diffs;
  auto check = [&diffs](absl::string_view field, uint32_t pinned, uint32_t ours) {
    if (pinned != ours) diffs.push_back(absl::StrCat(field, " ", pinned, " (pinned) != ", ours, " (this build)"));
  };
  check("type", info.type, bpf_map__type(map));
  check("key_size", info.key_size, bpf_map__key_size(map));
  check("value_size", info.value_size, bpf_map__value_size(map));
  if (!IsFlowMap(map)) check("max_entries", info.max_entries, bpf_map__max_entries(map));
  check("map_flags", info.map_flags, bpf_map__map_flags(map));
  if (!diffs.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("pinned map ", path, " does not match map ", bpf_map__name(map),
                                                      " of this build: ", absl::StrJoin(diffs, ", "),
                                                      "; remove the pin to start with empty state"));
  }
  if (info.max_entries != bpf_map__max_entries(map)) {
    LOG(INFO) << "bpf snat: pinned map " << path << " holds up to " << info.max_entries
              << " flows, the configuration asks for " << bpf_map__max_entries(map)
              << "; moving its flows into a new map of that size";
    return PinMatch::kMigrate;
  }
  return PinMatch::kAdopt;
}

// Copies every entry of the flow map `from` into `to` with `flags`
// (BPF_ANY or BPF_NOEXIST; with NOEXIST an entry `to` already has is kept).
// The datapath may add or evict entries meanwhile, which the second pass
// after the attach catches. Returns the number of entries written. A full
// `to` (LRU) evicts as usual.
absl::StatusOr<uint64_t> CopyFlowMap(int from, int to, uint32_t key_size, uint32_t value_size, uint64_t flags,
                                     absl::string_view what) {
  uint64_t written = 0;
  RETURN_IF_ERROR(ForEachMapBatch(
      from, key_size, value_size, what,
      [&](const uint8_t* keys, const uint8_t* values, uint32_t count) -> absl::Status {
        for (uint32_t i = 0; i < count; ++i) {
          if (bpf_map_update_elem(to, keys + size_t{i} * key_size, values + size_t{i} * value_size, flags) == 0) {
            ++written;
          } else if (errno != EEXIST) {
            return BpfError(errno, absl::StrCat("copy an entry of ", what));
          }
        }
        return absl::OkStatus();
      }));
  return written;
}

}  // namespace

absl::Status ValidateSnatConfig(const SnatConfig& config) {
  if (config.port_min == 0 || config.port_min > config.port_max) {
    return absl::InvalidArgumentError(absl::StrCat("snat config: port range ", config.port_min, "-", config.port_max,
                                                   " must be non-empty and start above 0"));
  }
  if (config.max_flows < RP_SNAT_MAX_FLOWS_MIN || config.max_flows > RP_SNAT_MAX_FLOWS_LIMIT) {
    return absl::InvalidArgumentError(absl::StrCat("snat config: max_flows ", config.max_flows, " must be in ",
                                                   RP_SNAT_MAX_FLOWS_MIN, "..", RP_SNAT_MAX_FLOWS_LIMIT));
  }
  if (config.max_retries == 0 || config.max_retries > RP_SNAT_MAX_RETRIES) {
    return absl::InvalidArgumentError(absl::StrCat("snat config: max_retries ", config.max_retries,
                                                   " must be in 1..", RP_SNAT_MAX_RETRIES));
  }
  // Mirrors RP_MAX_L2_LEN in bpf/snat.bpf.c.
  if (config.l2_header_len > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("snat config: l2_header_len ", config.l2_header_len, " must be at most 64"));
  }
  return absl::OkStatus();
}

namespace {

constexpr char kVmlinuxBtf[] = "/sys/kernel/btf/vmlinux";

// Whether the running kernel's BTF has the kfunc `name` (then the verifier
// knows it; kfuncs are looked up by BTF, not by symbol). Asked once per
// process: libbpf parses all of vmlinux BTF (a few ms) for it.
bool KernelHasKfunc(const char* name) {
  btf* vmlinux = btf__load_vmlinux_btf();
  if (libbpf_get_error(vmlinux) != 0) return false;
  const bool found = btf__find_by_name_kind(vmlinux, name, BTF_KIND_FUNC) >= 0;
  btf__free(vmlinux);
  return found;
}

bool KernelCanReadIpSummed() {
  static const bool can = KernelHasKfunc("bpf_cast_to_kern_ctx");
  return can;
}

// The snat object opened and configured for `options`, not loaded yet.
struct OpenedSnat {
  BpfSkeleton<snat> skel;
  std::vector<std::string> reused;                              // adopted pins
  std::vector<std::pair<std::string, std::string>> migrating;  // map name, old pin
};

absl::StatusOr<OpenedSnat> OpenSnat(const SnatProgramOptions& options) {
  bpf_object_open_opts open_opts{};
  open_opts.sz = sizeof(open_opts);
  if (!options.btf_custom_path.empty()) open_opts.btf_custom_path = options.btf_custom_path.c_str();
  ASSIGN_OR_RETURN(BpfSkeleton<snat> skel, BpfSkeleton<snat>::Open("snat", &open_opts));
  skel->rodata->port_min = options.config.port_min;
  skel->rodata->port_max = options.config.port_max;
  skel->rodata->max_retries = options.config.max_retries;
  skel->rodata->l2_hdr_len = options.config.l2_header_len;
  skel->rodata->clock_jiffies = options.clock_jiffies;
  skel->rodata->keep_port = options.config.keep_port;
  // One pair of programs is loaded (see bpf/snat.bpf.c): a kernel without
  // the kfunc never verifies a call to it.
  for (bpf_program* prog : {skel->progs.snat_egress, skel->progs.snat_ingress}) {
    bpf_program__set_autoload(prog, options.csum_direct);
  }
  for (bpf_program* prog : {skel->progs.snat_egress_h, skel->progs.snat_ingress_h}) {
    bpf_program__set_autoload(prog, !options.csum_direct);
  }
  skel->rodata->xlate_verdict = options.attach == TcAttach::kTcx ? TC_ACT_UNSPEC : TC_ACT_OK;
  for (bpf_map* map : {skel->maps.ruleplane_nat, skel->maps.ruleplane_rnat}) {
    if (const int err = bpf_map__set_max_entries(map, options.config.max_flows); err != 0) {
      return BpfError(err, absl::StrCat("size map ", bpf_map__name(map)));
    }
  }

  std::vector<std::string> reused;
  std::vector<std::pair<std::string, std::string>> migrating;
  if (!options.pin_dir.empty()) {
    bpf_map* map = nullptr;
    bpf_object__for_each_map(map, skel.obj()) {
      // .rodata is per-load configuration: never shared with a predecessor.
      if (bpf_map__is_internal(map)) continue;
      const std::string path = absl::StrCat(options.pin_dir, "/", bpf_map__name(map));
      ASSIGN_OR_RETURN(const PinMatch match, MatchPinnedMap(map, path));
      if (match == PinMatch::kMigrate) {
        // Created unpinned; pinned in the old one's place once our programs
        // run (FinishFlowMapMigration).
        migrating.emplace_back(bpf_map__name(map), path);
        continue;
      }
      // At load, libbpf adopts the pinned map if present (bpf_map__reuse_fd)
      // and otherwise creates the map and pins it here.
      if (const int err = bpf_map__set_pin_path(map, path.c_str()); err != 0) {
        return BpfError(err, absl::StrCat("set pin path ", path, " of map ", bpf_map__name(map)));
      }
      if (match == PinMatch::kAdopt) reused.push_back(bpf_map__name(map));
    }
  }

  return OpenedSnat{std::move(skel), std::move(reused), std::move(migrating)};
}

}  // namespace

absl::StatusOr<std::unique_ptr<SnatProgram>> SnatProgram::Create(const SnatProgramOptions& requested) {
  RETURN_IF_ERROR(ValidateSnatConfig(requested.config));
  // libbpf needs it for the object's CO-RE relocations and kfunc extern,
  // and without it would fail the load with a bare error code.
  if (std::error_code ec; !std::filesystem::exists(kVmlinuxBtf, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "bpf snat needs the kernel's BTF at ", kVmlinuxBtf,
        " (a kernel built with CONFIG_DEBUG_INFO_BTF, as Debian's and most distributions' are)"));
  }
  SnatProgramOptions options = requested;
  options.csum_direct = requested.csum_direct && KernelCanReadIpSummed();
  if (!options.pin_dir.empty()) RETURN_IF_ERROR(PreparePinDir(options.pin_dir));

  ASSIGN_OR_RETURN(OpenedSnat opened, OpenSnat(options));
  if (absl::Status loaded = opened.skel.Load(); !loaded.ok()) {
    // A verifier rejection (Internal) of the kfunc pair: kernels between
    // 6.2 and the one tested here may refuse the ip_summed read, and such a
    // node still gets SNAT, at the helper's cost. Anything else (privileges,
    // maps) would fail the other pair the same way. A failed load leaves no
    // pins behind: libbpf unpins what it pinned.
    if (!options.csum_direct || loaded.code() != absl::StatusCode::kInternal) return loaded;
    LOG(WARNING) << "bpf snat: the programs that write L4 checksums themselves did not load (" << loaded
                 << "); loading the ones that use bpf_l4_csum_replace";
    options.csum_direct = false;
    ASSIGN_OR_RETURN(opened, OpenSnat(options));
    RETURN_IF_ERROR(opened.skel.Load());
  }
  BpfSkeleton<snat>& skel = opened.skel;
  std::vector<std::string>& reused = opened.reused;
  std::vector<std::pair<std::string, std::string>>& migrating = opened.migrating;
  // First pass of a flow map migration: everything the predecessor's maps
  // hold now. Its programs still run on them until ours are attached.
  for (const auto& [name, path] : migrating) {
    bpf_map* map = bpf_object__find_map_by_name(skel.obj(), name.c_str());
    const UniqueFd old(bpf_obj_get(path.c_str()));
    if (map == nullptr || !old.valid()) return BpfError(errno, absl::StrCat("open pinned map ", path, " to migrate"));
    ASSIGN_OR_RETURN(const uint64_t moved, CopyFlowMap(old.get(), bpf_map__fd(map), bpf_map__key_size(map),
                                                       bpf_map__value_size(map), BPF_ANY, path));
    LOG(INFO) << "bpf snat: copied " << moved << " flows from " << path << " into the new " << name << " ("
              << bpf_map__max_entries(map) << " entries)";
  }
  LOG(INFO) << "bpf snat loaded pin_dir=" << (options.pin_dir.empty() ? "(none)" : options.pin_dir)
            << " reused_maps=" << reused.size() << " ports=" << options.config.port_min << "-"
            << options.config.port_max << " attach=" << TcAttachName(options.attach)
            << " max_flows=" << bpf_map__max_entries(skel->maps.ruleplane_nat)
            << " l4_csum=" << (options.csum_direct ? "direct" : "helper");
  auto program = std::unique_ptr<SnatProgram>(new SnatProgram(options, std::move(skel), std::move(reused)));
  program->migrating_ = std::move(migrating);
  return program;
}

absl::Status SnatProgram::FinishFlowMapMigration() {
  while (!migrating_.empty()) {
    const auto& [name, path] = migrating_.back();
    bpf_map* map = bpf_object__find_map_by_name(skel_.obj(), name.c_str());
    if (map == nullptr) return absl::InternalError(absl::StrCat("no map ", name, " in the snat object"));
    // Second pass: flows the predecessor's programs created after the first.
    // An entry ours made meanwhile wins (NOEXIST).
    if (const UniqueFd old(bpf_obj_get(path.c_str())); old.valid()) {
      ASSIGN_OR_RETURN(const uint64_t moved, CopyFlowMap(old.get(), bpf_map__fd(map), bpf_map__key_size(map),
                                                         bpf_map__value_size(map), BPF_NOEXIST, path));
      LOG(INFO) << "bpf snat: copied " << moved << " more flows from " << path << "; replacing its pin";
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return BpfError(errno, absl::StrCat("remove the old pin ", path));
      }
    }
    if (const int err = bpf_map__pin(map, path.c_str()); err != 0) {
      return BpfError(err, absl::StrCat("pin map ", name, " at ", path));
    }
    migrating_.pop_back();
  }
  return absl::OkStatus();
}

SnatProgram::SnatProgram(SnatProgramOptions options, BpfSkeleton<snat> skel, std::vector<std::string> reused_maps)
    : options_(std::move(options)), skel_(std::move(skel)), reused_maps_(std::move(reused_maps)) {}

uint32_t SnatProgram::max_flows() const { return bpf_map__max_entries(NatMap()); }

SnatProgram::~SnatProgram() = default;

bool SnatProgram::clock_jiffies() const {
  // The program's own test (rp_clock): rodata clock_jiffies and a HZ.
  return options_.clock_jiffies && skel_->kconfig != nullptr && skel_->kconfig->CONFIG_HZ != 0;
}

absl::StatusOr<uint32_t> SnatProgram::flow_map_id() const {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(bpf_map__fd(skel_->maps.ruleplane_rnat), &info, &len) != 0) {
    return BpfError(errno, "query ruleplane_rnat");
  }
  return info.id;
}

int SnatProgram::egress_prog_fd() const {
  return bpf_program__fd(options_.csum_direct ? skel_->progs.snat_egress : skel_->progs.snat_egress_h);
}
int SnatProgram::ingress_prog_fd() const {
  return bpf_program__fd(options_.csum_direct ? skel_->progs.snat_ingress : skel_->progs.snat_ingress_h);
}

bpf_map* SnatProgram::PodsMap() const { return skel_->maps.ruleplane_pods; }
bpf_map* SnatProgram::ExclMap() const { return skel_->maps.ruleplane_excl; }
bpf_map* SnatProgram::EgressAddrMap() const { return skel_->maps.ruleplane_eaddr; }
bpf_map* SnatProgram::CfgMap() const { return skel_->maps.ruleplane_cfg; }
bpf_map* SnatProgram::ExclBankMap() const { return skel_->maps.ruleplane_exclf; }
bpf_map* SnatProgram::NatMap() const { return skel_->maps.ruleplane_nat; }
bpf_map* SnatProgram::ReverseNatMap() const { return skel_->maps.ruleplane_rnat; }
bpf_map* SnatProgram::ReasonMap() const { return skel_->maps.ruleplane_rsn; }
bpf_map* SnatProgram::EgressStatsMap() const { return skel_->maps.ruleplane_estat; }

absl::StatusOr<rp_snat_cfg> SnatProgram::ReadCfg() const {
  const uint32_t zero = 0;
  ASSIGN_OR_RETURN(std::optional<rp_snat_cfg> cfg, (MapLookup<uint32_t, rp_snat_cfg>(CfgMap(), zero, "config")));
  // An array slot always exists; nullopt only if the kernel says otherwise.
  return cfg.value_or(rp_snat_cfg{});
}

absl::StatusOr<TcHook> SnatProgram::AttachToInterface(int ifindex) const {
  ASSIGN_OR_RETURN(TcHook hook, options_.attach == TcAttach::kTcx ? TcHook::CreateTcx(ifindex, options_.pin_dir)
                                                                    : TcHook::Create(ifindex));
  // Ingress first: replies must be translated back before the first packet
  // is translated on egress. If the egress attach fails, `hook` detaches the
  // ingress filter again on return.
  RETURN_IF_ERROR(hook.AttachFilter(TcDirection::kIngress, ingress_prog_fd(), "snat_ingress"));
  RETURN_IF_ERROR(hook.AttachFilter(TcDirection::kEgress, egress_prog_fd(), "snat_egress"));
  return hook;
}

absl::StatusOr<TcHook> SnatProgram::AttachToInterface(absl::string_view ifname) const {
  ASSIGN_OR_RETURN(const int ifindex, InterfaceIndex(ifname));
  return AttachToInterface(ifindex);
}

// --- pods ---

absl::Status SnatProgram::UpsertPodAddress(Ipv4Addr pod) {
  const uint32_t key = pod.network_order();
  const uint8_t value = RP_POD_F_SNAT;
  return MapUpdate(PodsMap(), key, value, BPF_ANY, absl::StrCat("pod address ", pod.ToString()));
}

absl::Status SnatProgram::DeletePodAddress(Ipv4Addr pod) {
  const uint32_t key = pod.network_order();
  return MapDelete(PodsMap(), key, absl::StrCat("pod address ", pod.ToString()));
}

absl::Status SnatProgram::ReplacePodAddresses(absl::Span<const Ipv4Addr> pods) {
  if (pods.size() > RP_SNAT_MAX_PODS) {
    return absl::InvalidArgumentError(
        absl::StrCat("replace pod addresses: ", pods.size(), " exceed map ruleplane_pods capacity ", RP_SNAT_MAX_PODS));
  }
  absl::flat_hash_set<uint32_t> wanted;
  for (Ipv4Addr pod : pods) {
    if (pod.IsUnspecified()) return absl::InvalidArgumentError("replace pod addresses: 0.0.0.0 is not a pod address");
    wanted.insert(pod.network_order());
  }
  // Insert first, delete second: a pod listed before and after is never absent.
  for (Ipv4Addr pod : pods) RETURN_IF_ERROR(UpsertPodAddress(pod));
  ASSIGN_OR_RETURN(std::vector<uint32_t> present, MapKeys<uint32_t>(PodsMap()));
  for (uint32_t key : present) {
    if (!wanted.contains(key)) RETURN_IF_ERROR(DeletePodAddress(Ipv4Addr::FromNetworkOrder(key)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Ipv4Addr>> SnatProgram::ListPodAddresses() const {
  ASSIGN_OR_RETURN(std::vector<uint32_t> keys, MapKeys<uint32_t>(PodsMap()));
  std::vector<Ipv4Addr> pods;
  pods.reserve(keys.size());
  for (uint32_t key : keys) pods.push_back(Ipv4Addr::FromNetworkOrder(key));
  std::sort(pods.begin(), pods.end());
  return pods;
}

// --- exclusions ---

absl::Status SnatProgram::ReplaceExclusions(absl::Span<const Ipv4Prefix> prefixes) {
  if (prefixes.size() > RP_SNAT_MAX_EXCLUSIONS) {
    return absl::InvalidArgumentError(absl::StrCat("replace exclusions: ", prefixes.size(),
                                                   " exceed map ruleplane_excl capacity ", RP_SNAT_MAX_EXCLUSIONS));
  }
  auto to_key = [](const Ipv4Prefix& p) {
    const Ipv4Prefix c = p.Canonical();
    rp_lpm4_key key{};
    key.prefixlen = c.len;
    key.addr = c.addr.network_order();
    return key;
  };
  auto pack = [](const rp_lpm4_key& k) { return (uint64_t{k.prefixlen} << 32) | k.addr; };
  absl::flat_hash_set<uint64_t> wanted;
  for (const Ipv4Prefix& p : prefixes) {
    const rp_lpm4_key key = to_key(p);
    wanted.insert(pack(key));
    const uint8_t value = 1;
    RETURN_IF_ERROR(MapUpdate(ExclMap(), key, value, BPF_ANY, absl::StrCat("exclusion ", p.Canonical().ToString())));
  }
  ASSIGN_OR_RETURN(std::vector<rp_lpm4_key> present, MapKeys<rp_lpm4_key>(ExclMap()));
  for (const rp_lpm4_key& key : present) {
    if (wanted.contains(pack(key))) continue;
    const Ipv4Prefix p{Ipv4Addr::FromNetworkOrder(key.addr), static_cast<uint8_t>(key.prefixlen)};
    RETURN_IF_ERROR(MapDelete(ExclMap(), key, absl::StrCat("exclusion ", p.ToString())));
  }

  // The trie is complete; now the bank, then the switch (see the header).
  ASSIGN_OR_RETURN(rp_snat_cfg cfg, ReadCfg());
  const uint32_t zero = 0;
  if (wanted.size() > RP_SNAT_FAST_EXCLUSIONS) {
    if (cfg.excl_bank == RP_EXCL_BANK_TRIE) return absl::OkStatus();
    cfg.excl_bank = RP_EXCL_BANK_TRIE;
    return MapUpdate(CfgMap(), zero, cfg, BPF_ANY, absl::StrCat(wanted.size(), " exclusions: use the trie"));
  }
  std::vector<Ipv4Prefix> sorted;
  for (uint64_t packed : wanted) {
    sorted.push_back(Ipv4Prefix{Ipv4Addr::FromNetworkOrder(static_cast<uint32_t>(packed)),
                                static_cast<uint8_t>(packed >> 32)});
  }
  std::sort(sorted.begin(), sorted.end());
  rp_excl_bank bank{};
  for (const Ipv4Prefix& p : sorted) {
    const uint32_t mask_host = p.len == 0 ? 0 : ~uint32_t{0} << (32 - p.len);
    rp_excl4& e = bank.prefix[bank.count++];
    e.addr = p.addr.network_order();  // canonical: host bits clear
    e.mask = htonl(mask_host);
  }
  const uint32_t slot = cfg.excl_bank == RP_EXCL_BANK_0 ? 1 : 0;
  RETURN_IF_ERROR(MapUpdate(ExclBankMap(), slot, bank, BPF_ANY, absl::StrCat("exclusion bank ", slot)));
  cfg.excl_bank = slot == 0 ? RP_EXCL_BANK_0 : RP_EXCL_BANK_1;
  return MapUpdate(CfgMap(), zero, cfg, BPF_ANY, absl::StrCat("switch to exclusion bank ", slot));
}

absl::StatusOr<std::optional<std::vector<Ipv4Prefix>>> SnatProgram::ReadExclusionBank() const {
  ASSIGN_OR_RETURN(const rp_snat_cfg cfg, ReadCfg());
  if (cfg.excl_bank != RP_EXCL_BANK_0 && cfg.excl_bank != RP_EXCL_BANK_1) return std::nullopt;
  const uint32_t slot = cfg.excl_bank - RP_EXCL_BANK_0;
  ASSIGN_OR_RETURN(std::optional<rp_excl_bank> bank,
                   (MapLookup<uint32_t, rp_excl_bank>(ExclBankMap(), slot, absl::StrCat("exclusion bank ", slot))));
  std::vector<Ipv4Prefix> out;
  if (!bank) return out;
  for (uint32_t i = 0; i < std::min<uint32_t>(bank->count, RP_SNAT_FAST_EXCLUSIONS); ++i) {
    const uint8_t len = static_cast<uint8_t>(std::popcount(ntohl(bank->prefix[i].mask)));
    out.push_back(Ipv4Prefix{Ipv4Addr::FromNetworkOrder(bank->prefix[i].addr), len});
  }
  return out;
}

absl::StatusOr<std::vector<Ipv4Prefix>> SnatProgram::ListExclusions() const {
  ASSIGN_OR_RETURN(std::vector<rp_lpm4_key> keys, MapKeys<rp_lpm4_key>(ExclMap()));
  std::vector<Ipv4Prefix> out;
  out.reserve(keys.size());
  for (const rp_lpm4_key& k : keys) {
    out.push_back(Ipv4Prefix{Ipv4Addr::FromNetworkOrder(k.addr), static_cast<uint8_t>(k.prefixlen)});
  }
  std::sort(out.begin(), out.end());
  return out;
}

// --- egress addresses ---

absl::Status SnatProgram::SetEgressAddresses(absl::Span<const EgressAddress> addrs) {
  if (addrs.size() > RP_SNAT_MAX_EGRESS_ADDRS) {
    return absl::InvalidArgumentError(absl::StrCat("set egress addresses: ", addrs.size(), " given, at most ",
                                                   RP_SNAT_MAX_EGRESS_ADDRS, " supported"));
  }
  absl::flat_hash_set<uint32_t> seen;
  for (const EgressAddress& a : addrs) {
    if (a.addr.IsUnspecified()) return absl::InvalidArgumentError("set egress addresses: 0.0.0.0 is not an address");
    if (!seen.insert(a.addr.network_order()).second) {
      return absl::InvalidArgumentError(absl::StrCat("set egress addresses: duplicate ", a.addr.ToString()));
    }
  }
  // Slots first, then the count, then clear the tail (see the header).
  for (uint32_t slot = 0; slot < addrs.size(); ++slot) {
    rp_egress_addr value{};
    value.addr = addrs[slot].addr.network_order();
    value.flags = addrs[slot].draining ? RP_EGRESS_F_DRAINING : 0;
    RETURN_IF_ERROR(MapUpdate(EgressAddrMap(), slot, value, BPF_ANY,
                              absl::StrCat("egress slot ", slot, " (", addrs[slot].addr.ToString(), ")")));
  }
  ASSIGN_OR_RETURN(rp_snat_cfg cfg, ReadCfg());  // keeps excl_bank
  cfg.egress_count = static_cast<uint32_t>(addrs.size());
  const uint32_t zero = 0;
  RETURN_IF_ERROR(MapUpdate(CfgMap(), zero, cfg, BPF_ANY, absl::StrCat("egress count ", addrs.size())));
  for (uint32_t slot = static_cast<uint32_t>(addrs.size()); slot < RP_SNAT_MAX_EGRESS_ADDRS; ++slot) {
    const rp_egress_addr empty{};
    RETURN_IF_ERROR(MapUpdate(EgressAddrMap(), slot, empty, BPF_ANY, absl::StrCat("egress slot ", slot, " (clear)")));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<EgressAddress>> SnatProgram::ListEgressAddresses() const {
  ASSIGN_OR_RETURN(const rp_snat_cfg cfg, ReadCfg());
  const uint32_t count = std::min<uint32_t>(cfg.egress_count, RP_SNAT_MAX_EGRESS_ADDRS);
  std::vector<EgressAddress> out;
  for (uint32_t slot = 0; slot < count; ++slot) {
    ASSIGN_OR_RETURN(std::optional<rp_egress_addr> v,
                     (MapLookup<uint32_t, rp_egress_addr>(EgressAddrMap(), slot, absl::StrCat("egress slot ", slot))));
    if (!v) continue;
    out.push_back(EgressAddress{Ipv4Addr::FromNetworkOrder(v->addr), (v->flags & RP_EGRESS_F_DRAINING) != 0});
  }
  return out;
}

// --- statistics ---

absl::StatusOr<ReasonCounters> SnatProgram::ReadReasonCounters() const {
  ReasonCounters counters{};
  for (uint32_t reason = 0; reason < RP_REASON_SLOTS; ++reason) {
    ASSIGN_OR_RETURN(std::vector<uint64_t> per_cpu, PerCpuLookup<uint64_t>(ReasonMap(), reason));
    for (uint64_t v : per_cpu) counters[reason] += v;
  }
  return counters;
}

absl::StatusOr<std::vector<EgressUsage>> SnatProgram::ReadEgressUsage() const {
  ASSIGN_OR_RETURN(const rp_snat_cfg cfg, ReadCfg());
  const uint32_t count = cfg.egress_count;
  std::vector<EgressUsage> out;
  for (uint32_t slot = 0; slot < RP_SNAT_MAX_EGRESS_ADDRS; ++slot) {
    EgressUsage usage;
    usage.slot = slot;
    usage.live = slot < count;
    ASSIGN_OR_RETURN(std::optional<rp_egress_addr> a,
                     (MapLookup<uint32_t, rp_egress_addr>(EgressAddrMap(), slot, absl::StrCat("egress slot ", slot))));
    if (a) usage.address = EgressAddress{Ipv4Addr::FromNetworkOrder(a->addr), (a->flags & RP_EGRESS_F_DRAINING) != 0};
    ASSIGN_OR_RETURN(std::vector<rp_egress_stats> per_cpu, PerCpuLookup<rp_egress_stats>(EgressStatsMap(), slot));
    for (const rp_egress_stats& s : per_cpu) {
      usage.allocs += s.allocs;
      usage.collisions += s.collisions;
      usage.exhausted += s.exhausted;
    }
    out.push_back(usage);
  }
  return out;
}

absl::StatusOr<std::optional<rp_nat_val>> SnatProgram::LookupNat(const rp_nat_key& key) const {
  return MapLookup<rp_nat_key, rp_nat_val>(NatMap(), key, "nat entry");
}

absl::StatusOr<std::optional<rp_rnat_val>> SnatProgram::LookupReverseNat(const rp_rnat_key& key) const {
  return MapLookup<rp_rnat_key, rp_rnat_val>(ReverseNatMap(), key, "reverse nat entry");
}

std::vector<std::string> SnatMapNames() {
  std::vector<std::string> names;
  // Opening (not loading) the skeleton parses the embedded object only.
  absl::StatusOr<BpfSkeleton<snat>> skel = BpfSkeleton<snat>::Open("snat");
  if (!skel.ok()) return names;
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, skel->obj()) {
    if (!bpf_map__is_internal(map)) names.push_back(bpf_map__name(map));
  }
  return names;
}

absl::Status RemoveSnatPins(const std::string& pin_dir) {
  if (pin_dir.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(RemovePinnedTcxLinks(pin_dir));
  const std::vector<std::string> names = SnatMapNames();
  if (names.empty()) return absl::InternalError("remove snat pins: cannot list the program's maps");
  for (const std::string& name : names) {
    const std::string path = absl::StrCat(pin_dir, "/", name);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return BpfError(errno, absl::StrCat("remove pin ", path));
    }
  }
  if (::rmdir(pin_dir.c_str()) != 0 && errno != ENOTEMPTY && errno != ENOENT && errno != EEXIST) {
    return BpfError(errno, absl::StrCat("remove bpf pin dir ", pin_dir));
  }
  return absl::OkStatus();
}

absl::Status SnatProgram::UnpinMaps() {
  if (options_.pin_dir.empty()) return absl::OkStatus();
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, skel_.obj()) {
    if (bpf_map__is_internal(map) || bpf_map__pin_path(map) == nullptr) continue;
    const std::string path = bpf_map__pin_path(map);
    if (const int err = bpf_map__unpin(map, nullptr); err != 0 && err != -ENOENT) {
      return BpfError(err, absl::StrCat("unpin map ", bpf_map__name(map), " at ", path));
    }
  }
  // A flow map migration never finished: the predecessor's pins are ours.
  for (const auto& [name, path] : migrating_) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return BpfError(errno, absl::StrCat("remove the old pin ", path, " of ", name));
    }
  }
  migrating_.clear();
  // Best effort: other ruleplane objects may share the directory.
  if (::rmdir(options_.pin_dir.c_str()) != 0 && errno != ENOTEMPTY && errno != ENOENT) {
    return BpfError(errno, absl::StrCat("remove bpf pin dir ", options_.pin_dir));
  }
  return absl::OkStatus();
}

}  // namespace ruleplane::kernel::bpf
