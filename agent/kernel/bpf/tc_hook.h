// TcHook: our tc BPF programs on one interface (STYLE.md sections 1 and 5),
// attached one of two ways (TcAttach):
//
// - kClsact: cls_bpf filters in our fixed slot (kRuleplaneTcFilter) of the
//   interface's clsact qdisc, and the qdisc itself if Create() made it. It
//   never removes a filter with another handle/priority, and never a qdisc
//   that existed before us. Caveat: clsact is one qdisc for both directions
//   and all owners. If we created it and someone else attached filters to it
//   afterwards, Destroy() removes theirs too; libbpf has no filter dump to
//   check first.
// - kTcx: tcx links (Linux >= 6.6), appended after the interface's other tcx
//   programs; no qdisc. Each link is pinned as
//   <link pin dir>/tcx_<ifindex>_<ingress|egress> so it outlives the agent,
//   and a restarted agent swaps the program inside the same link
//   (BPF_LINK_UPDATE: no window without a program). Links of other owners
//   are never touched: a link only goes away through its own fd.
//
// Owns: what it attached (and the fds of its links). Move-only; engine thread
// only. Destruction detaches (Destroy()); agent shutdown that must leave
// traffic untouched calls Release() instead, so the programs keep running
// after the process exits (a tcx hook without a pin dir cannot: its links
// die with their last fd).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ruleplane::kernel::bpf {

enum class TcDirection { kIngress, kEgress };
absl::string_view TcDirectionName(TcDirection dir);

enum class TcAttach { kClsact, kTcx };
absl::string_view TcAttachName(TcAttach attach);  // "clsact", "tcx"

// Whether this kernel has tcx (Linux >= 6.6): a BPF_PROG_QUERY of tcx
// ingress on the loopback interface answers instead of EINVAL.
bool KernelHasTcx();

// Pin file name prefix of our tcx links inside a pin dir.
inline constexpr absl::string_view kTcxLinkPinPrefix = "tcx_";

// Detaches and unpins the tcx links pinned in `pin_dir` by TcHook: all of
// them, or only those of `ifindex` when it is non-zero. Links whose interface
// is gone are only unpinned. Absent dir or pins: fine.
[[nodiscard]] absl::Status RemovePinnedTcxLinks(const std::string& pin_dir, int ifindex = 0);
// Whether `pin_dir` holds any of our tcx link pins (read-only; any thread).
bool HasPinnedTcxLinks(const std::string& pin_dir);

// A tc filter's identity within a clsact hook.
struct TcFilterId {
  uint32_t handle = 0;
  uint32_t priority = 0;  // 1..0xffff; lower runs first
};

// The filter slot ruleplane owns on every hook ("rp" twice). The priority is
// deliberately high so filters of other agents with the usual low priorities
// run first: they see pod addresses on egress before our SNAT rewrites them.
// Fixed forever: a restarted agent finds and atomically replaces its
// predecessor's filters by this id.
inline constexpr TcFilterId kRuleplaneTcFilter{.handle = 0x7270, .priority = 0x7270};

class TcHook {
 public:
  // Ensures a clsact qdisc on `ifindex`, remembering whether we created it.
  // NotFound: no such interface. PermissionDenied: no CAP_NET_ADMIN.
  static absl::StatusOr<TcHook> Create(int ifindex);
  // A tcx hook on `ifindex`; touches nothing until AttachFilter(). Links are
  // pinned in `link_pin_dir` (an existing bpffs directory), or not at all
  // when it is empty. FailedPrecondition: the kernel has no tcx.
  static absl::StatusOr<TcHook> CreateTcx(int ifindex, std::string link_pin_dir);

  TcHook(TcHook&& other) noexcept;
  TcHook& operator=(TcHook&& other) noexcept;
  TcHook(const TcHook&) = delete;
  TcHook& operator=(const TcHook&) = delete;
  ~TcHook();

  // Attaches `prog_fd` in direction `dir`, atomically replacing what is
  // already ours there (an earlier agent's filter in slot `id`, or its pinned
  // tcx link), so there is no window without a program. clsact: a
  // direct-action filter in slot `id`. tcx: `id` is unused. `prog_name`
  // labels messages.
  [[nodiscard]] absl::Status AttachFilter(TcDirection dir, int prog_fd, absl::string_view prog_name,
                                          TcFilterId id = kRuleplaneTcFilter);

  // Removes the filters this object attached (already gone: fine), then the
  // clsact qdisc if Create() created it; tcx: detaches and unpins its links.
  // Idempotent.
  [[nodiscard]] absl::Status Destroy();

  // Forgets everything without touching the kernel (restart-safe shutdown).
  void Release();

  // Cleanup after an earlier agent: a hook that claims our filter slot in
  // the given directions and, if `owns_qdisc`, the clsact qdisc, without
  // touching the kernel. Destroy() then removes them (a filter that is
  // already gone is fine; claim only filters HasFilter() found, since
  // detaching from an interface without clsact is EINVAL).
  static TcHook Adopt(int ifindex, bool owns_qdisc, bool ingress, bool egress);
  // The clsact qdisc was created by an earlier instance of the agent (its
  // state file says so), so Destroy() may remove it.
  void MarkQdiscOwned() { created_qdisc_ = true; }
  // Whether filter slot `id` of direction `dir` on `ifindex` holds a
  // program. NotFound: no such interface.
  static absl::StatusOr<bool> HasFilter(int ifindex, TcDirection dir, TcFilterId id = kRuleplaneTcFilter);
  // Ids of the programs tcx runs in `dir` of `ifindex`, in run order (ours
  // and other owners'). Empty on a kernel without tcx. NotFound: no such
  // interface.
  static absl::StatusOr<std::vector<uint32_t>> TcxProgramIds(int ifindex, TcDirection dir);

  // tcx: pins the links in `pin_dir` instead and removes the old pins (the
  // pin dir of the program changed). clsact: nothing to do.
  [[nodiscard]] absl::Status MoveLinkPins(const std::string& pin_dir);

  int ifindex() const { return ifindex_; }
  const std::string& ifname() const { return ifname_; }
  bool created_qdisc() const { return created_qdisc_; }
  TcAttach attach() const { return attach_; }
  // tcx: the pin path of the link of `dir` (empty without a pin dir).
  std::string LinkPinPath(TcDirection dir) const;

 private:
  TcHook(int ifindex, std::string ifname, bool created_qdisc)
      : ifindex_(ifindex), ifname_(std::move(ifname)), created_qdisc_(created_qdisc) {}

  std::string Describe() const;
  absl::Status AttachLink(TcDirection dir, int prog_fd, absl::string_view prog_name);
  void CloseLinks();

  int ifindex_ = 0;
  std::string ifname_;
  bool created_qdisc_ = false;
  std::vector<std::pair<TcDirection, TcFilterId>> filters_;
  TcAttach attach_ = TcAttach::kClsact;
  std::string link_pin_dir_;
  int link_fds_[2] = {-1, -1};  // tcx, by TcDirection
};

// if_nametoindex() as a StatusOr: NotFound names the interface.
absl::StatusOr<int> InterfaceIndex(absl::string_view ifname);

}  // namespace ruleplane::kernel::bpf
