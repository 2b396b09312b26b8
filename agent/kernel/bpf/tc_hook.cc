#include "agent/kernel/bpf/tc_hook.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/common/status_macros.h"
#include "agent/kernel/bpf/errors.h"
#include "agent/kernel/bpf/libbpf_log.h"
#include "glog/logging.h"

namespace ruleplane::kernel::bpf {
namespace {

bpf_tc_attach_point AttachPoint(TcDirection dir) {
  return dir == TcDirection::kIngress ? BPF_TC_INGRESS : BPF_TC_EGRESS;
}

// clsact is one qdisc serving both directions: libbpf creates/destroys it for
// BPF_TC_INGRESS|BPF_TC_EGRESS, whereas BPF_TC_INGRESS alone would mean the
// legacy ingress qdisc.
constexpr auto kClsact = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);

// libbpf opts structs carry their own size (forward/backward compatibility);
// LIBBPF_OPTS() does this with GNU C extensions, hence plain C++ here.
bpf_tc_hook MakeHook(int ifindex, bpf_tc_attach_point point) {
  bpf_tc_hook hook{};
  hook.sz = sizeof(hook);
  hook.ifindex = ifindex;
  hook.attach_point = point;
  return hook;
}

bpf_tc_opts MakeOpts(TcFilterId id, int prog_fd, uint32_t flags) {
  bpf_tc_opts opts{};
  opts.sz = sizeof(opts);
  opts.prog_fd = prog_fd;
  opts.flags = flags;
  opts.handle = id.handle;
  opts.priority = id.priority;
  return opts;
}

// tcx uapi (Linux 6.6); Debian 12's headers are from 6.1 and lack them.
constexpr auto kBpfTcxIngress = static_cast<bpf_attach_type>(46);
constexpr auto kBpfTcxEgress = static_cast<bpf_attach_type>(47);
constexpr uint32_t kBpfLinkTypeTcx = 11;

bpf_attach_type TcxAttachType(TcDirection dir) {
  return dir == TcDirection::kIngress ? kBpfTcxIngress : kBpfTcxEgress;
}

int Idx(TcDirection dir) { return dir == TcDirection::kIngress ? 0 : 1; }

std::string LinkPinName(int ifindex, TcDirection dir) {
  return absl::StrCat(kTcxLinkPinPrefix, ifindex, "_", TcDirectionName(dir));
}

// What a tcx link is attached to: struct bpf_link_info's tcx member
// (ifindex, attach_type) starts the union after type, id and prog_id; 6.1's
// struct has the same layout without naming it. ifindex 0: the interface is
// gone (the link is defunct).
struct TcxLinkInfo {
  uint32_t type = 0;
  uint32_t ifindex = 0;
  uint32_t attach_type = 0;
};

absl::StatusOr<TcxLinkInfo> ReadTcxLinkInfo(int link_fd) {
  bpf_link_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(link_fd, &info, &len) != 0) return BpfError(errno, "read bpf link info");
  TcxLinkInfo out;
  out.type = info.type;
  const char* u = reinterpret_cast<const char*>(&info) + offsetof(bpf_link_info, raw_tracepoint);
  std::memcpy(&out.ifindex, u, sizeof(out.ifindex));
  std::memcpy(&out.attach_type, u + sizeof(out.ifindex), sizeof(out.attach_type));
  return out;
}

// Detaches the link behind `fd` (already detached or defunct: fine).
absl::Status DetachLink(int fd, absl::string_view what) {
  if (bpf_link_detach(fd) != 0 && errno != ENOLINK && errno != ENOENT && errno != ENODEV) {
    return BpfError(errno, absl::StrCat("detach tcx link ", what));
  }
  return absl::OkStatus();
}

std::string NameOf(int ifindex) {
  char buf[IF_NAMESIZE] = {};
  if (::if_indextoname(static_cast<unsigned>(ifindex), buf) == nullptr) return "";
  return buf;
}

}  // namespace

absl::string_view TcDirectionName(TcDirection dir) {
  return dir == TcDirection::kIngress ? "ingress" : "egress";
}

absl::string_view TcAttachName(TcAttach attach) { return attach == TcAttach::kTcx ? "tcx" : "clsact"; }

bool KernelHasTcx() {
  uint32_t attach_flags = 0, count = 0;
  return bpf_prog_query(/*lo*/ 1, kBpfTcxIngress, 0, &attach_flags, nullptr, &count) == 0;
}

namespace {

// Names of our tcx link pins in `pin_dir` (all, or those of `ifindex` when
// non-zero). An absent dir has none.
absl::StatusOr<std::vector<std::string>> PinnedTcxLinkNames(const std::string& pin_dir, int ifindex) {
  std::vector<std::string> names;
  if (pin_dir.empty()) return names;
  DIR* d = ::opendir(pin_dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return names;
    return BpfError(errno, absl::StrCat("open pin dir ", pin_dir));
  }
  const std::string want = ifindex == 0 ? std::string(kTcxLinkPinPrefix) : absl::StrCat(kTcxLinkPinPrefix, ifindex, "_");
  while (const dirent* e = ::readdir(d)) {
    if (absl::string_view(e->d_name).substr(0, want.size()) == want) names.emplace_back(e->d_name);
  }
  ::closedir(d);
  return names;
}

}  // namespace

bool HasPinnedTcxLinks(const std::string& pin_dir) {
  absl::StatusOr<std::vector<std::string>> names = PinnedTcxLinkNames(pin_dir, 0);
  return names.ok() && !names->empty();
}

absl::Status RemovePinnedTcxLinks(const std::string& pin_dir, int ifindex) {
  ASSIGN_OR_RETURN(const std::vector<std::string> names, PinnedTcxLinkNames(pin_dir, ifindex));
  absl::Status first;
  for (const std::string& name : names) {
    const std::string path = absl::StrCat(pin_dir, "/", name);
    const int fd = bpf_obj_get(path.c_str());
    if (fd >= 0) {
      absl::Status s = DetachLink(fd, path);
      ::close(fd);
      if (!s.ok()) {
        if (first.ok()) first = s;
        continue;  // keep the pin: it is the only handle left on the link
      }
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT && first.ok()) {
      first = BpfError(errno, absl::StrCat("remove pin ", path));
    }
  }
  return first;
}

absl::StatusOr<int> InterfaceIndex(absl::string_view ifname) {
  const unsigned idx = ::if_nametoindex(std::string(ifname).c_str());
  if (idx == 0) {
    const int err = errno;
    return BpfError(err == 0 ? ENODEV : err, absl::StrCat("look up interface ", ifname));
  }
  return static_cast<int>(idx);
}

absl::StatusOr<TcHook> TcHook::Create(int ifindex) {
  RouteLibbpfLogsToGlog();
  std::string ifname = NameOf(ifindex);
  bpf_tc_hook hook = MakeHook(ifindex, kClsact);
  const int err = bpf_tc_hook_create(&hook);
  bool created = false;
  if (err == 0) {
    created = true;
  } else if (err != -EEXIST) {  // EEXIST: a clsact that is not ours
    return BpfError(err, absl::StrCat("create clsact qdisc on ", ifname, " (ifindex ", ifindex, ")"));
  }
  VLOG(1) << "tc hook ifname=" << ifname << " ifindex=" << ifindex << " created_qdisc=" << created;
  return TcHook(ifindex, std::move(ifname), created);
}

absl::StatusOr<TcHook> TcHook::CreateTcx(int ifindex, std::string link_pin_dir) {
  RouteLibbpfLogsToGlog();
  std::string ifname = NameOf(ifindex);
  if (ifname.empty()) return BpfError(ENODEV, absl::StrCat("tcx hook on ifindex ", ifindex));
  if (!KernelHasTcx()) {
    return absl::FailedPreconditionError(
        absl::StrCat("tcx hook on ", ifname, ": this kernel has no tcx (Linux 6.6 or later); use clsact"));
  }
  TcHook hook(ifindex, std::move(ifname), false);
  hook.attach_ = TcAttach::kTcx;
  hook.link_pin_dir_ = std::move(link_pin_dir);
  return hook;
}

TcHook::TcHook(TcHook&& other) noexcept
    : ifindex_(std::exchange(other.ifindex_, 0)),
      ifname_(std::move(other.ifname_)),
      created_qdisc_(std::exchange(other.created_qdisc_, false)),
      filters_(std::move(other.filters_)),
      attach_(other.attach_),
      link_pin_dir_(std::move(other.link_pin_dir_)) {
  other.filters_.clear();
  for (int i = 0; i < 2; ++i) link_fds_[i] = std::exchange(other.link_fds_[i], -1);
}

TcHook& TcHook::operator=(TcHook&& other) noexcept {
  if (this != &other) {
    if (absl::Status s = Destroy(); !s.ok()) LOG(WARNING) << "tc hook replaced by move: " << s;
    ifindex_ = std::exchange(other.ifindex_, 0);
    ifname_ = std::move(other.ifname_);
    created_qdisc_ = std::exchange(other.created_qdisc_, false);
    filters_ = std::move(other.filters_);
    other.filters_.clear();
    attach_ = other.attach_;
    link_pin_dir_ = std::move(other.link_pin_dir_);
    for (int i = 0; i < 2; ++i) link_fds_[i] = std::exchange(other.link_fds_[i], -1);
  }
  return *this;
}

TcHook::~TcHook() {
  // Errors are handled (logged) here: a destructor has nobody to return to.
  if (absl::Status s = Destroy(); !s.ok()) LOG(WARNING) << "tc hook teardown: " << s;
}

std::string TcHook::Describe() const { return absl::StrCat(ifname_, " (ifindex ", ifindex_, ")"); }

std::string TcHook::LinkPinPath(TcDirection dir) const {
  if (link_pin_dir_.empty()) return "";
  return absl::StrCat(link_pin_dir_, "/", LinkPinName(ifindex_, dir));
}

absl::Status TcHook::AttachLink(TcDirection dir, int prog_fd, absl::string_view prog_name) {
  int& fd = link_fds_[Idx(dir)];
  const std::string pin = LinkPinPath(dir);
  const std::string what = absl::StrCat(prog_name, " to tcx ", TcDirectionName(dir), " of ", Describe());
  if (fd < 0 && !pin.empty()) {
    // A predecessor's link, if its pin is there and it still hooks this
    // interface in this direction (an interface recreated under another
    // ifindex leaves a defunct link behind, which we only unpin).
    const int old = bpf_obj_get(pin.c_str());
    if (old >= 0) {
      absl::StatusOr<TcxLinkInfo> info = ReadTcxLinkInfo(old);
      if (info.ok() && info->type == kBpfLinkTypeTcx && info->ifindex == static_cast<uint32_t>(ifindex_) &&
          info->attach_type == static_cast<uint32_t>(TcxAttachType(dir))) {
        fd = old;
      } else {
        LOG(WARNING) << "tcx link pin " << pin << " is stale (type "
                     << (info.ok() ? info->type : 0) << ", ifindex " << (info.ok() ? info->ifindex : 0)
                     << "); replacing it";
        (void)DetachLink(old, pin);
        ::close(old);
        ::unlink(pin.c_str());
      }
    }
  }
  if (fd >= 0) {
    // Swap the program inside our link: atomic, no window without a program.
    if (bpf_link_update(fd, prog_fd, nullptr) == 0) {
      VLOG(1) << "tcx update prog=" << prog_name << " ifname=" << ifname_ << " dir=" << TcDirectionName(dir);
      return absl::OkStatus();
    }
    const int err = errno;
    if (err != ENOLINK) return BpfError(err, absl::StrCat("update ", what));
    // The interface went away under the link: start over with a new one.
    ::close(fd);
    fd = -1;
    if (!pin.empty()) ::unlink(pin.c_str());
  }
  const int link = bpf_link_create(prog_fd, ifindex_, TcxAttachType(dir), nullptr);
  if (link < 0) return BpfError(errno, absl::StrCat("attach ", what));
  if (!pin.empty() && bpf_obj_pin(link, pin.c_str()) != 0) {
    const int err = errno;
    (void)DetachLink(link, what);
    ::close(link);
    return BpfError(err, absl::StrCat("pin tcx link ", pin));
  }
  fd = link;
  VLOG(1) << "tcx attach prog=" << prog_name << " ifname=" << ifname_ << " dir=" << TcDirectionName(dir)
          << " pin=" << pin;
  return absl::OkStatus();
}

absl::Status TcHook::MoveLinkPins(const std::string& pin_dir) {
  if (attach_ != TcAttach::kTcx || pin_dir == link_pin_dir_) return absl::OkStatus();
  for (TcDirection dir : {TcDirection::kIngress, TcDirection::kEgress}) {
    const int fd = link_fds_[Idx(dir)];
    if (fd < 0) continue;
    const std::string to = absl::StrCat(pin_dir, "/", LinkPinName(ifindex_, dir));
    if (!pin_dir.empty() && bpf_obj_pin(fd, to.c_str()) != 0 && errno != EEXIST) {
      return BpfError(errno, absl::StrCat("pin tcx link ", to));
    }
    if (const std::string from = LinkPinPath(dir); !from.empty()) ::unlink(from.c_str());
  }
  link_pin_dir_ = pin_dir;
  return absl::OkStatus();
}

void TcHook::CloseLinks() {
  for (int& fd : link_fds_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
}

absl::Status TcHook::AttachFilter(TcDirection dir, int prog_fd, absl::string_view prog_name, TcFilterId id) {
  if (ifindex_ == 0) return absl::FailedPreconditionError("attach tc filter: hook was moved from or released");
  if (attach_ == TcAttach::kTcx) return AttachLink(dir, prog_fd, prog_name);
  if (id.priority == 0 || id.priority > 0xffff || id.handle == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("attach tc filter: handle must be non-zero and priority 1..65535, got handle=", id.handle,
                     " priority=", id.priority));
  }
  bpf_tc_hook hook = MakeHook(ifindex_, AttachPoint(dir));
  bpf_tc_opts opts = MakeOpts(id, prog_fd, BPF_TC_F_REPLACE);
  if (const int err = bpf_tc_attach(&hook, &opts); err != 0) {
    return BpfError(err, absl::StrCat("attach ", prog_name, " to tc ", TcDirectionName(dir), " of ", Describe(),
                                      " handle=0x", absl::Hex(id.handle), " priority=", id.priority));
  }
  for (const auto& [d, f] : filters_) {
    if (d == dir && f.handle == id.handle && f.priority == id.priority) return absl::OkStatus();  // replaced
  }
  filters_.emplace_back(dir, id);
  VLOG(1) << "tc attach prog=" << prog_name << " ifname=" << ifname_ << " dir=" << TcDirectionName(dir)
          << " prog_id=" << opts.prog_id;
  return absl::OkStatus();
}

absl::Status TcHook::Destroy() {
  absl::Status first_error;
  for (TcDirection dir : {TcDirection::kIngress, TcDirection::kEgress}) {
    int& fd = link_fds_[Idx(dir)];
    if (fd < 0) continue;
    absl::Status s = DetachLink(fd, LinkPinPath(dir));
    ::close(fd);
    fd = -1;
    if (!s.ok()) {
      if (first_error.ok()) first_error = s;
      continue;  // keep the pin: a later teardown finds the link by it
    }
    if (const std::string pin = LinkPinPath(dir); !pin.empty()) ::unlink(pin.c_str());
  }
  while (!filters_.empty()) {
    const auto [dir, id] = filters_.back();
    filters_.pop_back();
    bpf_tc_hook hook = MakeHook(ifindex_, AttachPoint(dir));
    // Detach wants only handle and priority; prog_fd/flags must be 0.
    bpf_tc_opts opts = MakeOpts(id, 0, 0);
    const int err = bpf_tc_detach(&hook, &opts);
    // ENOENT: somebody (an operator, the interface going away) beat us to it.
    if (err != 0 && err != -ENOENT && err != -ENODEV && first_error.ok()) {
      first_error = BpfError(err, absl::StrCat("detach tc ", TcDirectionName(dir), " filter handle=0x",
                                               absl::Hex(id.handle), " priority=", id.priority, " from ", Describe()));
    }
  }
  if (created_qdisc_) {
    created_qdisc_ = false;
    bpf_tc_hook hook = MakeHook(ifindex_, kClsact);
    const int err = bpf_tc_hook_destroy(&hook);
    // ENOENT/EINVAL: the qdisc is already gone (the kernel answers "no such
    // qdisc" with either, depending on version); ENODEV: so is the interface.
    if (err != 0 && err != -ENOENT && err != -ENODEV && err != -EINVAL && first_error.ok()) {
      first_error = BpfError(err, absl::StrCat("destroy clsact qdisc on ", Describe()));
    }
  }
  return first_error;
}

void TcHook::Release() {
  CloseLinks();  // pinned links live on
  filters_.clear();
  created_qdisc_ = false;
}

TcHook TcHook::Adopt(int ifindex, bool owns_qdisc, bool ingress, bool egress) {
  TcHook hook(ifindex, NameOf(ifindex), owns_qdisc);
  if (ingress) hook.filters_.emplace_back(TcDirection::kIngress, kRuleplaneTcFilter);
  if (egress) hook.filters_.emplace_back(TcDirection::kEgress, kRuleplaneTcFilter);
  return hook;
}

absl::StatusOr<std::vector<uint32_t>> TcHook::TcxProgramIds(int ifindex, TcDirection dir) {
  std::vector<uint32_t> ids(64);
  for (;;) {
    uint32_t attach_flags = 0, count = static_cast<uint32_t>(ids.size());
    if (bpf_prog_query(ifindex, TcxAttachType(dir), 0, &attach_flags, ids.data(), &count) == 0) {
      ids.resize(count);
      return ids;
    }
    const int err = errno;
    if (err == EINVAL && !KernelHasTcx()) return std::vector<uint32_t>{};
    if (err == ENOSPC && count > ids.size()) {  // more than we asked for: count says how many
      ids.resize(count);
      continue;
    }
    return BpfError(err, absl::StrCat("query tcx ", TcDirectionName(dir), " programs on ifindex ", ifindex));
  }
}

absl::StatusOr<bool> TcHook::HasFilter(int ifindex, TcDirection dir, TcFilterId id) {
  RouteLibbpfLogsToGlog();
  bpf_tc_hook hook = MakeHook(ifindex, AttachPoint(dir));
  // Query wants handle and priority only; prog_fd, flags and prog_id zero.
  bpf_tc_opts opts = MakeOpts(id, 0, 0);
  const int err = bpf_tc_query(&hook, &opts);
  if (err == 0) return true;
  // ENOENT: no such filter; EINVAL: no clsact qdisc on the interface.
  if (err == -ENOENT || err == -EINVAL) return false;
  return BpfError(err, absl::StrCat("query tc ", TcDirectionName(dir), " filter handle=0x", absl::Hex(id.handle),
                                    " priority=", id.priority, " on ifindex ", ifindex));
}

}  // namespace ruleplane::kernel::bpf
