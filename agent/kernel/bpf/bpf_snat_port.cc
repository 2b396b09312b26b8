#include "agent/kernel/bpf/bpf_snat_port.h"

#include <net/if.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/common/status_macros.h"
#include "agent/kernel/bpf/errors.h"
#include "glog/logging.h"

namespace ruleplane::kernel::bpf {
namespace {

Ipv4Addr V4(const render::Ipv4Bytes& b) { return Ipv4Addr::FromBytes(b); }

// Removes our filter slot in both directions of `ifindex` (and the clsact
// qdisc when `owns_qdisc`), if anything of ours is there.
absl::Status DetachOurFilters(int ifindex, bool owns_qdisc) {
  ASSIGN_OR_RETURN(const bool in, TcHook::HasFilter(ifindex, TcDirection::kIngress));
  ASSIGN_OR_RETURN(const bool eg, TcHook::HasFilter(ifindex, TcDirection::kEgress));
  if (!in && !eg && !owns_qdisc) return absl::OkStatus();
  TcHook hook = TcHook::Adopt(ifindex, owns_qdisc, in, eg);
  return hook.Destroy();
}

// plan.attach resolved against this kernel. FailedPrecondition: tcx asked
// for and missing.
absl::StatusOr<TcAttach> ResolveAttach(const render::BpfSnatPlan& plan) {
  switch (plan.attach) {
    case core::BpfAttach::kClsact: return TcAttach::kClsact;
    case core::BpfAttach::kAuto: return KernelHasTcx() ? TcAttach::kTcx : TcAttach::kClsact;
    case core::BpfAttach::kTcx:
      if (!KernelHasTcx()) {
        return absl::FailedPreconditionError(
            "snat_bpf_attach tcx: this kernel has no tcx (Linux 6.6 or later); use auto or clsact");
      }
      return TcAttach::kTcx;
  }
  return absl::InternalError("snat_bpf_attach: unknown value");
}

}  // namespace

BpfSnatPort::BpfSnatPort(BpfSnatPortOptions options) : options_(std::move(options)) {}

BpfSnatPort::~BpfSnatPort() { Release(); }

std::string BpfSnatPort::RecordPath() const { return options_.state_dir + "/bpf-snat-hooks"; }

std::map<std::string, BpfSnatPort::HookRecord> BpfSnatPort::ReadRecord(std::string* pin_dir) const {
  std::map<std::string, HookRecord> out;
  std::ifstream in(RecordPath());
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string what;
    ls >> what;
    if (what == "pin_dir") {
      ls >> *pin_dir;
    } else if (what == "hook") {
      // "hook IF OWNS_QDISC [KIND]": the kind is for people; tcx hooks
      // never own a qdisc, and cleanup looks for both kinds anyway.
      std::string ifname;
      int owns = 0;
      if (ls >> ifname >> owns) out[ifname].owns_qdisc = owns != 0;
    }
  }
  return out;
}

absl::Status BpfSnatPort::WriteRecord() const {
  if (options_.state_dir.empty()) return absl::OkStatus();
  const std::string tmp = RecordPath() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "# written by ruleplane-agent: tc hooks of the bpf snat dataplane\n";
    out << "pin_dir " << loaded_.pin_dir << "\n";
    for (const auto& [ifname, hook] : hooks_) {
      out << "hook " << ifname << " " << (hook.created_qdisc() ? 1 : 0) << " " << TcAttachName(hook.attach()) << "\n";
    }
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("write ", tmp));
  }
  if (::rename(tmp.c_str(), RecordPath().c_str()) != 0) {
    return BpfError(errno, absl::StrCat("rename ", tmp, " to ", RecordPath()));
  }
  return absl::OkStatus();
}

void BpfSnatPort::DeleteRecord() const {
  if (!options_.state_dir.empty()) ::unlink(RecordPath().c_str());
}

absl::Status BpfSnatPort::RemoveOurHooksOn(int ifindex, bool owns_qdisc, std::optional<TcAttach> keep,
                                           const std::string& recorded_pin_dir) const {
  if (keep != TcAttach::kClsact) RETURN_IF_ERROR(DetachOurFilters(ifindex, owns_qdisc));
  if (keep != TcAttach::kTcx) {
    for (const std::string& dir : std::set<std::string>{loaded_.pin_dir, recorded_pin_dir, options_.pin_dir}) {
      RETURN_IF_ERROR(RemovePinnedTcxLinks(dir, ifindex));
    }
  }
  return absl::OkStatus();
}

absl::Status BpfSnatPort::Converge(const render::BpfSnatPlan& plan, const std::vector<render::Ipv4Bytes>& pods) {
  if (!plan.enabled) return Teardown(plan);
  clean_ = false;
  std::string recorded_pin_dir;
  const std::map<std::string, HookRecord> recorded = ReadRecord(&recorded_pin_dir);

  std::vector<EgressAddress> egress;
  for (const render::Ipv4Bytes& a : plan.egress) egress.push_back(EgressAddress{V4(a), false});
  std::vector<Ipv4Prefix> exclusions;
  for (const render::BpfPrefix4& p : plan.exclusions) exclusions.push_back(Ipv4Prefix{V4(p.addr), p.len});
  std::vector<Ipv4Addr> pod_addrs;
  for (const render::Ipv4Bytes& p : pods) pod_addrs.push_back(V4(p));
  auto fill = [&](SnatProgram& program) -> absl::Status {
    // Pods and exclusions before the egress addresses: a slot only becomes
    // live when the sources and exceptions it serves are known.
    RETURN_IF_ERROR(program.ReplacePodAddresses(pod_addrs));
    RETURN_IF_ERROR(program.ReplaceExclusions(exclusions));
    return program.SetEgressAddresses(egress);
  };

  // Interfaces deleted (and perhaps created again under the same name: a
  // bond or VLAN rebuilt, a veth recreated) took our filters, the clsact
  // qdisc and the attachment of our tcx links with them; the new device has
  // a new ifindex and none of our hooks. Forget such a hook (only the pins
  // of its defunct links remain, removed here) so the loops below treat the
  // name as new: attached again if it is still wanted and exists.
  bool forgot = false;
  for (auto it = hooks_.begin(); it != hooks_.end();) {
    const unsigned now = ::if_nametoindex(it->first.c_str());
    if (now != 0 && static_cast<int>(now) == it->second.ifindex()) {
      ++it;
      continue;
    }
    // Renamed rather than deleted: the device is still there under another
    // name, with our hooks on it; take them off (it is not an egress
    // interface under that name). (The kernel hands out ifindexes
    // cyclically, so the old one is not another device's this soon.)
    char renamed[IF_NAMESIZE] = {};
    if (::if_indextoname(static_cast<unsigned>(it->second.ifindex()), renamed) != nullptr) {
      LOG(WARNING) << "bpf snat: interface " << it->first << " (ifindex " << it->second.ifindex()
                   << ") was renamed to " << renamed << "; removing our hooks from it";
      if (absl::Status s = it->second.Destroy(); !s.ok()) LOG(WARNING) << "hooks on " << renamed << ": " << s;
      it = hooks_.erase(it);
      forgot = true;
      continue;
    }
    LOG(WARNING) << "bpf snat: interface " << it->first << " (ifindex " << it->second.ifindex() << ") "
                 << (now == 0 ? "is gone" : absl::StrCat("was replaced (now ifindex ", now, ")"))
                 << "; its hooks went with it";
    if (it->second.attach() == TcAttach::kTcx) {
      if (absl::Status s = RemovePinnedTcxLinks(loaded_.pin_dir, it->second.ifindex()); !s.ok()) {
        LOG(WARNING) << "pins of the links of the old " << it->first << ": " << s;
      }
    }
    it->second.Release();
    it = hooks_.erase(it);
    forgot = true;
  }
  if (forgot) {
    if (absl::Status s = WriteRecord(); !s.ok()) LOG(WARNING) << "bpf hook record: " << s;
  }

  ASSIGN_OR_RETURN(const TcAttach attach, ResolveAttach(plan));
  const bool reload = !program_ || loaded_.pin_dir != plan.pin_dir || loaded_.port_min != plan.port_min ||
                      loaded_.port_max != plan.port_max || loaded_.max_retries != plan.max_retries ||
                      loaded_.max_flows != plan.max_flows || loaded_.fully_random != plan.fully_random ||
                      program_->attach() != attach;
  // Hooks of the other kind (the attach setting changed) are replaced below:
  // the new ones attach first, then these go.
  std::map<std::string, TcHook> replaced;
  // On an early return they are ours again, still attached: a failed
  // switch must not leave an interface without a program.
  absl::Cleanup restore = [&] {
    for (auto& [ifname, hook] : replaced) hooks_.emplace(ifname, std::move(hook));
    replaced.clear();
  };
  if (reload) {
    SnatProgramOptions o;
    o.attach = attach;
    o.config.port_min = plan.port_min;
    o.config.port_max = plan.port_max;
    o.config.max_retries = plan.max_retries;
    o.config.max_flows = plan.max_flows;
    o.config.keep_port = !plan.fully_random;
    o.pin_dir = plan.pin_dir;
    ASSIGN_OR_RETURN(std::unique_ptr<SnatProgram> program, SnatProgram::Create(o));
    RETURN_IF_ERROR(fill(*program));
    // Hooks we hold switch to the new programs atomically (same slot or
    // link); tcx link pins follow the maps to a new pin dir.
    for (auto it = hooks_.begin(); it != hooks_.end();) {
      TcHook& hook = it->second;
      if (hook.attach() != attach) {
        replaced.emplace(it->first, std::move(hook));
        it = hooks_.erase(it);
        continue;
      }
      RETURN_IF_ERROR(hook.AttachFilter(TcDirection::kIngress, program->ingress_prog_fd(), "snat_ingress"));
      RETURN_IF_ERROR(hook.AttachFilter(TcDirection::kEgress, program->egress_prog_fd(), "snat_egress"));
      RETURN_IF_ERROR(hook.MoveLinkPins(plan.pin_dir));
      ++it;
    }
    // (Hooks of the other kind keep their old pins: if the pin dir changed
    // too, removing the old pins below detaches them before the new kind is
    // attached, a short gap in a change that loses the NAT state anyway.)
    const std::string old_pin_dir = program_ ? loaded_.pin_dir : recorded_pin_dir;
    LOG(INFO) << "bpf snat program loaded pin_dir=" << plan.pin_dir << " reused_maps=" << program->reused_maps().size()
              << " ports=" << plan.port_min << "-" << plan.port_max
              << (plan.fully_random ? " fully_random" : " keep_port") << " attach=" << TcAttachName(attach);
    program_ = std::move(program);
    PublishDatapath();  // a program's maps never change: once per load
    loaded_ = plan;
    if (!old_pin_dir.empty() && old_pin_dir != plan.pin_dir) {
      if (absl::Status s = RemoveSnatPins(old_pin_dir); !s.ok()) LOG(WARNING) << "old bpf pins: " << s;
    }
  } else {
    RETURN_IF_ERROR(fill(*program_));
  }

  // Interfaces: attach where missing, detach where no longer wanted (ours,
  // or a predecessor's according to the record).
  const std::set<std::string> wanted(plan.interfaces.begin(), plan.interfaces.end());
  for (auto it = hooks_.begin(); it != hooks_.end();) {
    if (wanted.count(it->first)) {
      ++it;
      continue;
    }
    if (absl::Status s = it->second.Destroy(); !s.ok()) return s;
    it = hooks_.erase(it);
  }
  for (const auto& [ifname, rec] : recorded) {
    if (wanted.count(ifname) || hooks_.count(ifname)) continue;
    const unsigned ifindex = ::if_nametoindex(ifname.c_str());
    if (ifindex == 0) continue;  // the interface is gone, and our filters with it
    RETURN_IF_ERROR(RemoveOurHooksOn(static_cast<int>(ifindex), rec.owns_qdisc, std::nullopt, recorded_pin_dir));
  }
  for (const std::string& ifname : plan.interfaces) {
    if (hooks_.count(ifname)) continue;
    ASSIGN_OR_RETURN(TcHook hook, program_->AttachToInterface(ifname));
    auto rec = recorded.find(ifname);
    const bool owns_qdisc = rec != recorded.end() && rec->second.owns_qdisc;
    if (owns_qdisc && attach == TcAttach::kClsact) hook.MarkQdiscOwned();
    const int ifindex = hook.ifindex();
    hooks_.emplace(ifname, std::move(hook));
    // Record right away: a crash between attaches must not lose ownership.
    if (absl::Status s = WriteRecord(); !s.ok()) LOG(WARNING) << "bpf hook record: " << s;
    // Now that ours run: what an earlier attach kind left on the interface.
    if (auto old = replaced.find(ifname); old != replaced.end()) {
      RETURN_IF_ERROR(old->second.Destroy());
      replaced.erase(old);
    }
    RETURN_IF_ERROR(RemoveOurHooksOn(ifindex, owns_qdisc, attach, recorded_pin_dir));
  }
  // The rest of the old kind hooked interfaces that are no longer wanted.
  absl::Status destroyed;
  for (auto& [ifname, hook] : replaced) {
    if (absl::Status s = hook.Destroy(); !s.ok() && destroyed.ok()) destroyed = s;
  }
  replaced.clear();  // done with them, even on error: `restore` must not bring them back
  // Our programs run everywhere now: a flow map resize can take over the
  // old map's pin (and what it gained since the load).
  if (absl::Status s = program_->FinishFlowMapMigration(); !s.ok() && destroyed.ok()) destroyed = s;
  loaded_ = plan;
  pods_ = pods.size();
  absl::Status recorded_now = WriteRecord();
  return destroyed.ok() ? recorded_now : destroyed;
}

absl::Status BpfSnatPort::Teardown(const render::BpfSnatPlan&) {
  if (clean_) return absl::OkStatus();
  std::string recorded_pin_dir;
  const std::map<std::string, HookRecord> recorded = ReadRecord(&recorded_pin_dir);
  absl::Status first;
  auto note = [&first](absl::Status s) {
    if (!s.ok() && first.ok()) first = std::move(s);
  };
  for (auto& [ifname, hook] : hooks_) note(hook.Destroy());
  hooks_.clear();
  for (const auto& [ifname, rec] : recorded) {
    const unsigned ifindex = ::if_nametoindex(ifname.c_str());
    if (ifindex != 0) note(DetachOurFilters(static_cast<int>(ifindex), rec.owns_qdisc));
  }
  // Our slot on any other interface of this namespace (a predecessor whose
  // record was lost): the handle/priority pair is ours alone.
  if (struct if_nameindex* all = ::if_nameindex(); all != nullptr) {
    for (struct if_nameindex* i = all; i->if_index != 0; ++i) {
      note(DetachOurFilters(static_cast<int>(i->if_index), false));
    }
    ::if_freenameindex(all);
  }
  // RemoveSnatPins also detaches the tcx links pinned there.
  std::set<std::string> pin_dirs = {loaded_.pin_dir, recorded_pin_dir, options_.pin_dir};
  for (const std::string& dir : pin_dirs) {
    if (!dir.empty()) note(RemoveSnatPins(dir));
  }
  if (!first.ok()) return first;
  if (program_) LOG(INFO) << "bpf snat dataplane removed";
  program_.reset();
  if (options_.datapath_board) options_.datapath_board->Clear();
  loaded_ = {};
  pods_ = 0;
  DeleteRecord();
  clean_ = true;
  return absl::OkStatus();
}

absl::Status BpfSnatPort::UpdatePods(const std::vector<render::Ipv4Bytes>& added,
                                     const std::vector<render::Ipv4Bytes>& removed) {
  if (!program_) return absl::FailedPreconditionError("update bpf pod addresses: program not loaded");
  // Deletes first: a re-added address (pod IP reuse) ends up present.
  for (const render::Ipv4Bytes& p : removed) RETURN_IF_ERROR(program_->DeletePodAddress(V4(p)));
  for (const render::Ipv4Bytes& p : added) RETURN_IF_ERROR(program_->UpsertPodAddress(V4(p)));
  pods_ = pods_ + added.size() >= removed.size() ? pods_ + added.size() - removed.size() : 0;
  return absl::OkStatus();
}

void BpfSnatPort::Release() {
  for (auto& [ifname, hook] : hooks_) hook.Release();
  hooks_.clear();
  program_.reset();
  if (options_.datapath_board) options_.datapath_board->Clear();
}

void BpfSnatPort::PublishDatapath() const {
  if (!options_.datapath_board || !program_) return;
  absl::StatusOr<uint32_t> id = program_->flow_map_id();
  if (!id.ok()) {
    LOG(WARNING) << "bpf snat datapath for the statistics: " << id.status();
    return;
  }
  options_.datapath_board->Publish(*id, txn::BpfDatapath{program_->csum_direct() ? "direct" : "helper",
                                                         program_->clock_jiffies() ? "jiffies" : "ktime"});
}

std::string BpfSnatPort::Describe() const {
  if (!program_) return "bpf dataplane off";
  std::vector<std::string> names;
  for (const auto& [ifname, hook] : hooks_) names.push_back(absl::StrCat(ifname, "(", TcAttachName(hook.attach()), ")"));
  return absl::StrCat("bpf hooks=", absl::StrJoin(names, ","), " pods=", pods_, " egress=", loaded_.egress.size(),
                      " pin_dir=", loaded_.pin_dir);
}

}  // namespace ruleplane::kernel::bpf
