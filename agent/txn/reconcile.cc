#include "agent/txn/reconcile.h"

#include <algorithm>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace ruleplane::txn {
namespace {

using render::Element;
using render::Op;
namespace op = render::op;

bool SameBase(const std::optional<render::BaseChainSpec>& a, const std::optional<render::BaseChainSpec>& b) {
  if (a.has_value() != b.has_value()) return false;
  if (!a) return true;
  return a->type == b->type && a->hook == b->hook && a->priority == b->priority && a->policy == b->policy;
}

bool SameSet(const render::SetSpec& want, const KernelSet& have) {
  // NFT_SET_MAP/CONCAT and kernel-added flags are derived; compare the shape.
  constexpr uint32_t kShapeFlags = 0x4;  // NFT_SET_INTERVAL: changes how elements are stored
  return want.KeyLen() == have.key_len && want.DataLen() == have.data_len &&
         want.KeyTypeId() == have.key_type && want.DataTypeId() == have.data_type &&
         want.size == have.size && (want.flags & kShapeFlags) == (have.flags & kShapeFlags);
}

Element FromKernel(const KernelElement& k) {
  Element e;
  e.key = k.key;
  e.data = k.data;
  e.comment = k.comment;
  e.flags = k.flags;
  return e;
}

}  // namespace

std::string ReconcileSummary::ToString() const {
  return absl::StrCat("table_created=", table_created, " chains_rewritten=", chains_rewritten,
                      " sets_recreated=", sets_recreated, " elements_added=", elements_added,
                      " elements_deleted=", elements_deleted);
}

DesiredElements KernelElements(const KernelTable& kernel) {
  DesiredElements out;
  for (const auto& [name, set] : kernel.sets) {
    auto& v = out[name];
    for (const KernelElement& k : set.elements) v.push_back(FromKernel(k));
  }
  return out;
}

std::vector<Op> Reconcile(const render::BaseRuleset& base, const DesiredElements& desired,
                          const KernelTable& kernel, ReconcileSummary* summary) {
  ReconcileSummary local;
  ReconcileSummary& sum = summary ? *summary : local;
  std::vector<Op> ops;

  if (!kernel.exists) {
    sum.table_created = true;
    ops = render::BaseOps(base);
    for (const render::SetSpec& s : base.sets) {
      auto it = desired.find(s.name);
      if (it == desired.end() || it->second.empty()) continue;
      sum.elements_added += it->second.size();
      ops.push_back(op::AddElements{s.name, it->second});
    }
    return ops;
  }

  // Table flags/comment: AddTable updates them in place.
  if (kernel.flags != base.table.flags || kernel.comment != base.table.comment) {
    ops.push_back(op::AddTable{base.table});
  }

  std::set<std::string> recreate_sets;
  for (const render::SetSpec& s : base.sets) {
    auto it = kernel.sets.find(s.name);
    if (it != kernel.sets.end() && !SameSet(s, it->second)) recreate_sets.insert(s.name);
  }
  std::set<std::string> extra_sets;
  std::set<std::string> wanted_sets;
  for (const render::SetSpec& s : base.sets) wanted_sets.insert(s.name);
  for (const auto& [name, set] : kernel.sets) {
    if (!wanted_sets.count(name)) extra_sets.insert(name);
  }

  // Desired rule tags per chain, in order.
  std::map<std::string, std::vector<const render::RuleSpec*>> rules_by_chain;
  for (const render::RuleSpec& r : base.rules) rules_by_chain[r.chain].push_back(&r);

  std::set<std::string> wanted_chains;
  std::set<std::string> rewrite_chains;  // flush + re-add rules
  std::set<std::string> recreate_chains;  // delete + add (base spec changed)
  for (const render::ChainSpec& c : base.chains) {
    wanted_chains.insert(c.name);
    auto it = kernel.chains.find(c.name);
    if (it == kernel.chains.end()) continue;
    if (!SameBase(c.base, it->second.base)) {
      recreate_chains.insert(c.name);
      continue;
    }
    std::vector<std::string> have, want;
    for (const KernelRule& r : it->second.rules) have.push_back(r.tag);
    for (const render::RuleSpec* r : rules_by_chain[c.name]) want.push_back(r->tag);
    // Rules referencing a set we must delete go with it.
    if (have != want || !recreate_sets.empty() || !extra_sets.empty()) rewrite_chains.insert(c.name);
  }
  std::set<std::string> extra_chains;
  for (const auto& [name, chain] : kernel.chains) {
    if (!wanted_chains.count(name)) extra_chains.insert(name);
  }

  // 1. Empty chains that change, go or whose rules may reference doomed sets
  //    or chains. All of this is inside one batch: the kernel never shows an
  //    intermediate state to packets.
  for (const std::string& c : rewrite_chains) ops.push_back(op::FlushChain{c});
  for (const std::string& c : recreate_chains) ops.push_back(op::FlushChain{c});
  for (const std::string& c : extra_chains) ops.push_back(op::FlushChain{c});
  if (!extra_chains.empty() || !recreate_chains.empty()) {
    // Jumps into a deleted chain live in other chains: rewrite them all.
    for (const render::ChainSpec& c : base.chains) {
      if (kernel.chains.count(c.name) && !rewrite_chains.count(c.name) && !recreate_chains.count(c.name)) {
        ops.push_back(op::FlushChain{c.name});
        rewrite_chains.insert(c.name);
      }
    }
  }
  for (const std::string& c : extra_chains) ops.push_back(op::DeleteChain{c});
  for (const std::string& c : recreate_chains) ops.push_back(op::DeleteChain{c});
  for (const std::string& s : extra_sets) ops.push_back(op::DeleteSet{s});
  for (const std::string& s : recreate_sets) ops.push_back(op::DeleteSet{s});

  // 2. Create what is missing (regular chains before base chains).
  for (int pass = 0; pass < 2; ++pass) {
    for (const render::ChainSpec& c : base.chains) {
      if ((pass == 0) != !c.base) continue;
      if (!kernel.chains.count(c.name) || recreate_chains.count(c.name)) ops.push_back(op::AddChain{c});
    }
  }
  for (const render::SetSpec& s : base.sets) {
    if (!kernel.sets.count(s.name) || recreate_sets.count(s.name)) ops.push_back(op::AddSet{s});
  }
  for (const render::RuleSpec& r : base.rules) {
    bool missing_chain = !kernel.chains.count(r.chain);
    if (missing_chain || rewrite_chains.count(r.chain) || recreate_chains.count(r.chain)) {
      ops.push_back(op::AddRule{r});
    }
  }
  sum.chains_rewritten = rewrite_chains.size() + recreate_chains.size();
  sum.sets_recreated = recreate_sets.size();

  // 3. Elements: delete what should not be there, then add what is missing.
  std::vector<Op> adds;
  for (const render::SetSpec& s : base.sets) {
    static const std::vector<Element> kNone;
    auto dit = desired.find(s.name);
    const std::vector<Element>& want = dit == desired.end() ? kNone : dit->second;
    auto kit = kernel.sets.find(s.name);
    bool fresh = kit == kernel.sets.end() || recreate_sets.count(s.name);
    op::DeleteElements del{s.name, {}};
    op::AddElements add{s.name, {}};
    if (fresh) {
      add.elements = want;
    } else {
      // Keyed by key and flags: an interval's end element may share its key
      // with nothing else, but a start and an end are different elements.
      using Identity = std::pair<std::vector<uint8_t>, uint32_t>;
      std::map<Identity, const KernelElement*> have;
      for (const KernelElement& k : kit->second.elements) have[{k.key, k.flags}] = &k;
      std::set<Identity> wanted_keys;
      for (const Element& e : want) {
        wanted_keys.insert({e.key, e.flags});
        auto h = have.find({e.key, e.flags});
        if (h == have.end()) {
          add.elements.push_back(e);
        } else if (h->second->data != e.data) {
          del.elements.push_back(FromKernel(*h->second));
          add.elements.push_back(e);
        }
      }
      for (const KernelElement& k : kit->second.elements) {
        if (!wanted_keys.count({k.key, k.flags})) del.elements.push_back(FromKernel(k));
      }
      // Key order (dumps list rbtree sets backwards): an interval's start is
      // deleted before its end; the kernel (6.18) refuses the end first
      // with ENOENT.
      std::sort(del.elements.begin(), del.elements.end(), [](const Element& a, const Element& b) {
        return std::tie(a.key, a.flags) < std::tie(b.key, b.flags);
      });
    }
    sum.elements_added += add.elements.size();
    sum.elements_deleted += del.elements.size();
    if (!del.elements.empty()) ops.push_back(std::move(del));
    if (!add.elements.empty()) adds.push_back(std::move(add));
  }
  for (Op& a : adds) ops.push_back(std::move(a));
  return ops;
}

}  // namespace ruleplane::txn
