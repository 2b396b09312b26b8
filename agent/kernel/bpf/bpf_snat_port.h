// BpfSnatPort: the real txn::DataplanePort. Executes a render::BpfSnatPlan
// with libbpf: loads the snat program (adopting pinned maps), fills its
// maps, attaches it to the egress interfaces, and removes all of it again
// when the plan is disabled.
//
// Owns: the loaded SnatProgram, one TcHook per hooked interface (tcx links or
// clsact filters, per plan.attach), and a small state file
// <state_dir>/bpf-snat-hooks listing the interfaces we hooked, how, and
// whether we created their clsact qdisc (a restarted agent cannot tell that
// from the kernel, and may only remove a qdisc it created). tcx links are
// pinned in the pin dir, so removing the pins' owner finds them too. Thread: the
// engine's writer only. Must not: detach anything on destruction or
// Release() (restart safety: the filters keep translating while no agent
// runs); touch filters other than our slot (kRuleplaneTcFilter).
//
// Map writes are not transactional; each step keeps every intermediate state
// safe (SnatProgram's writers order inserts before deletes, the egress slots
// before the count), and the maps are filled before the first attach.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "agent/kernel/bpf/snat_program.h"
#include "agent/kernel/bpf/tc_hook.h"
#include "agent/txn/dataplane_port.h"

namespace ruleplane::kernel::bpf {

struct BpfSnatPortOptions {
  // Directory for the hook state file (the agent's state dir).
  std::string state_dir;
  // The configured pin dir: cleaned up when bpf mode is off, even if this
  // agent never loaded the program (a predecessor may have).
  std::string pin_dir = std::string(kDefaultPinDir);
  // Where the port says how the loaded programs run, for the statistics
  // (optional).
  std::shared_ptr<txn::BpfDatapathBoard> datapath_board;
};

class BpfSnatPort : public txn::DataplanePort {
 public:
  explicit BpfSnatPort(BpfSnatPortOptions options);
  ~BpfSnatPort() override;

  absl::Status Converge(const render::BpfSnatPlan& plan, const std::vector<render::Ipv4Bytes>& pods) override;
  absl::Status UpdatePods(const std::vector<render::Ipv4Bytes>& added,
                          const std::vector<render::Ipv4Bytes>& removed) override;
  void Release() override;
  std::string Describe() const override;

 private:
  struct HookRecord {
    bool owns_qdisc = false;  // a clsact qdisc we created (never for tcx)
  };
  // Removes our hooks on `ifindex` of every kind but `keep` (none: all):
  // clsact filters in our slot (and the qdisc when `owns_qdisc`), tcx links
  // pinned in any pin dir we know of. What a predecessor, or an earlier
  // attach kind of ours, left there.
  absl::Status RemoveOurHooksOn(int ifindex, bool owns_qdisc, std::optional<TcAttach> keep,
                                const std::string& recorded_pin_dir) const;
  absl::Status Teardown(const render::BpfSnatPlan& plan);
  // Tells options_.datapath_board how the loaded programs run.
  void PublishDatapath() const;
  std::map<std::string, HookRecord> ReadRecord(std::string* pin_dir) const;
  absl::Status WriteRecord() const;
  void DeleteRecord() const;
  std::string RecordPath() const;

  BpfSnatPortOptions options_;
  std::unique_ptr<SnatProgram> program_;
  render::BpfSnatPlan loaded_;                  // plan the program was loaded for
  std::map<std::string, TcHook> hooks_;         // by interface name
  size_t pods_ = 0;
  // Nothing of ours is left in the kernel (after a teardown): a disabled
  // plan needs no interface scan.
  bool clean_ = false;
};

}  // namespace ruleplane::kernel::bpf
