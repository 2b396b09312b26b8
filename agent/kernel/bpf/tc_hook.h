// TcHook: our tc BPF filters on one interface, and the clsact qdisc if we
// created it (STYLE.md sections 1 and 5).
//
// Owns: the filters it attached (identified by our fixed handle/priority,
// kRuleplaneTcFilter) and, only if Create() made it, the interface's clsact
// qdisc. It never removes a filter with another handle/priority, and never a
// qdisc that existed before us. Move-only; engine thread only.
//
// Destruction detaches (Destroy()); agent shutdown that must leave traffic
// untouched calls Release() instead, so the filters keep running with their
// programs after the process exits.
//
// Caveat: clsact is one qdisc for both directions and all owners. If we
// created it and someone else attached filters to it afterwards, Destroy()
// removes theirs too; libbpf has no filter dump to check first.
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

  TcHook(TcHook&& other) noexcept;
  TcHook& operator=(TcHook&& other) noexcept;
  TcHook(const TcHook&) = delete;
  TcHook& operator=(const TcHook&) = delete;
  ~TcHook();

  // Attaches `prog_fd` in direct-action mode as filter `id` of direction
  // `dir`, atomically replacing a filter already in that slot (an earlier
  // agent's), so there is no window without a program. `prog_name` labels
  // messages.
  [[nodiscard]] absl::Status AttachFilter(TcDirection dir, int prog_fd, absl::string_view prog_name,
                                          TcFilterId id = kRuleplaneTcFilter);

  // Removes the filters this object attached (already gone: fine), then the
  // clsact qdisc if Create() created it. Idempotent.
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

  int ifindex() const { return ifindex_; }
  const std::string& ifname() const { return ifname_; }
  bool created_qdisc() const { return created_qdisc_; }

 private:
  TcHook(int ifindex, std::string ifname, bool created_qdisc)
      : ifindex_(ifindex), ifname_(std::move(ifname)), created_qdisc_(created_qdisc) {}

  std::string Describe() const;

  int ifindex_ = 0;
  std::string ifname_;
  bool created_qdisc_ = false;
  std::vector<std::pair<TcDirection, TcFilterId>> filters_;
};

// if_nametoindex() as a StatusOr: NotFound names the interface.
absl::StatusOr<int> InterfaceIndex(absl::string_view ifname);

}  // namespace ruleplane::kernel::bpf
