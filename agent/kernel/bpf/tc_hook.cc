#include "agent/kernel/bpf/tc_hook.h"

#include <bpf/libbpf.h>
#include <net/if.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
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

std::string NameOf(int ifindex) {
  char buf[IF_NAMESIZE] = {};
  if (::if_indextoname(static_cast<unsigned>(ifindex), buf) == nullptr) return "";
  return buf;
}

}  // namespace

absl::string_view TcDirectionName(TcDirection dir) {
  return dir == TcDirection::kIngress ? "ingress" : "egress";
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

TcHook::TcHook(TcHook&& other) noexcept
    : ifindex_(std::exchange(other.ifindex_, 0)),
      ifname_(std::move(other.ifname_)),
      created_qdisc_(std::exchange(other.created_qdisc_, false)),
      filters_(std::move(other.filters_)) {
  other.filters_.clear();
}

TcHook& TcHook::operator=(TcHook&& other) noexcept {
  if (this != &other) {
    if (absl::Status s = Destroy(); !s.ok()) LOG(WARNING) << "tc hook replaced by move: " << s;
    ifindex_ = std::exchange(other.ifindex_, 0);
    ifname_ = std::move(other.ifname_);
    created_qdisc_ = std::exchange(other.created_qdisc_, false);
    filters_ = std::move(other.filters_);
    other.filters_.clear();
  }
  return *this;
}

TcHook::~TcHook() {
  // Errors are handled (logged) here: a destructor has nobody to return to.
  if (absl::Status s = Destroy(); !s.ok()) LOG(WARNING) << "tc hook teardown: " << s;
}

std::string TcHook::Describe() const { return absl::StrCat(ifname_, " (ifindex ", ifindex_, ")"); }

absl::Status TcHook::AttachFilter(TcDirection dir, int prog_fd, absl::string_view prog_name, TcFilterId id) {
  if (ifindex_ == 0) return absl::FailedPreconditionError("attach tc filter: hook was moved from or released");
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
  filters_.clear();
  created_qdisc_ = false;
}

TcHook TcHook::Adopt(int ifindex, bool owns_qdisc, bool ingress, bool egress) {
  TcHook hook(ifindex, NameOf(ifindex), owns_qdisc);
  if (ingress) hook.filters_.emplace_back(TcDirection::kIngress, kRuleplaneTcFilter);
  if (egress) hook.filters_.emplace_back(TcDirection::kEgress, kRuleplaneTcFilter);
  return hook;
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
