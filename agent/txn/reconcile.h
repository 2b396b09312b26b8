// Reconcile: the one diff transaction that makes the kernel's copy of our
// table equal the desired one. Pure: takes the base ruleset, the desired
// elements and a KernelTable read back from the kernel; returns ops.
//
// Used at start (adopt: no flush, no window without rules), after drift
// (someone changed or deleted our table) and after an unknown commit outcome.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "agent/render/plan.h"
#include "agent/render/render.h"
#include "agent/txn/nft_port.h"

namespace ruleplane::txn {

struct ReconcileSummary {
  size_t chains_rewritten = 0;
  size_t sets_recreated = 0;
  size_t elements_added = 0;
  size_t elements_deleted = 0;
  bool table_created = false;
  std::string ToString() const;
};

// Desired elements of every set, by set name.
using DesiredElements = std::map<std::string, std::vector<render::Element>>;

std::vector<render::Op> Reconcile(const render::BaseRuleset& base, const DesiredElements& desired,
                                  const KernelTable& kernel, ReconcileSummary* summary);

// Kernel elements that no desired set covers (used to adopt orphans when the
// checkpoint is lost): set name -> elements.
DesiredElements KernelElements(const KernelTable& kernel);

}  // namespace ruleplane::txn
