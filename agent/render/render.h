// Rendering: desired state -> typed nftables plan. Pure (no I/O, no logging).
//
// Layout of the agent's table (`inet <table>`, default `inet ruleplane`);
// priorities and why are in agent/backend/README.md:
//
//   chain nat-prerouting   nat prerouting  -105  fib daddr type local jump hostports
//   chain nat-output       nat output      -105  fib daddr type local jump hostports
//   chain hostports        (regular)             DNAT via the hostport maps
//   chain nat-postrouting  nat postrouting  105  hairpin masquerade (+ SNAT, later)
//   set pod-ipv4 / pod-ipv6                      every pod address the agent knows
//   map hostport-v4/-v6       proto . port : pod ip . port         (any local address)
//   map hostport-ip-v4/-v6    host ip . proto . port : pod ip . port (one host address)
//   set hairpin-v4/-v6        pod ip . pod ip  (pods with host ports reaching themselves)
//
// Per-pod changes are element changes only; rules never change per pod.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "agent/core/desired_state.h"
#include "agent/core/snat.h"
#include "agent/core/types.h"
#include "agent/render/plan.h"

namespace ruleplane::render {

inline constexpr char kChainNatPrerouting[] = "nat-prerouting";
inline constexpr char kChainNatOutput[] = "nat-output";
inline constexpr char kChainNatPostrouting[] = "nat-postrouting";
inline constexpr char kChainHostports[] = "hostports";
inline constexpr char kSetPodIpv4[] = "pod-ipv4";
inline constexpr char kSetPodIpv6[] = "pod-ipv6";
inline constexpr char kMapHostportV4[] = "hostport-v4";
inline constexpr char kMapHostportV6[] = "hostport-v6";
inline constexpr char kMapHostportIpV4[] = "hostport-ip-v4";
inline constexpr char kMapHostportIpV6[] = "hostport-ip-v6";
inline constexpr char kSetHairpinV4[] = "hairpin-v4";
inline constexpr char kSetHairpinV6[] = "hairpin-v6";

// Base-chain priorities. None equals kube-proxy's (-110, -100, 0, 100) or
// Calico's (-300, -150, -90, 110); see agent/backend/README.md.
inline constexpr int32_t kDnatPriority = -105;
inline constexpr int32_t kSnatPriority = 105;

struct Layout {
  std::string table = "ruleplane";
  uint32_t table_flags = 0;  // NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST when enabled
  int32_t dnat_priority = kDnatPriority;
  int32_t snat_priority = kSnatPriority;
  // Pod egress SNAT; the backend for its mode adds its objects to the base
  // ruleset (backend::RenderFullBase) and/or plans the BPF dataplane.
  core::SnatSettings snat;
};

struct SetElement {
  std::string set;
  Element element;
};

// The table, chains, sets and rules: what must exist before any pod element
// can be added. Ops in dependency order.
struct BaseRuleset {
  TableSpec table;
  std::vector<ChainSpec> chains;
  std::vector<SetSpec> sets;
  std::vector<RuleSpec> rules;  // in chain order, grouped by chain
  // Elements that come from configuration, not from pods (e.g. SNAT
  // exclusions, egress interfaces). Converged like pod elements; they change
  // only when the layout changes.
  std::vector<SetElement> elements;
  // Sets whose elements the agent computes at run time from kernel
  // observations (SNAT failover steering): at start their kernel elements
  // are adopted as they are instead of being deleted.
  std::vector<std::string> dynamic_sets;
};
BaseRuleset RenderBase(const Layout& layout);
// A rule with its identity tag "ruleplane:<name>:<hash of chain, text and
// expressions>": a changed definition is a different rule on read-back.
RuleSpec MakeRule(std::string chain, std::string name, std::string text, std::vector<Expr> exprs);
// The base ruleset as create-if-missing ops.
std::vector<Op> BaseOps(const BaseRuleset& base);

// Every element one attachment owns. Pure and deterministic.
std::vector<SetElement> ElementsOf(const core::Attachment& a);

// The desired elements of every set, with ownership, and the delta since
// the last TakeDelta(). Engine-thread owned.
//
// Why hash maps keyed by the key bytes as a std::string: this index is on
// the writer's path for every mutation. With ordered maps keyed by vectors
// it cost ~10 allocations and a chain of memcmp()s per element (ruleplane-
// bench: a fifth of the writer's time). An IPv4 key fits in std::string's
// inline buffer, one owner fits inline in Owners, and order is only needed
// where ops are emitted (TakeDelta sorts the few dirty keys) and in
// ElementsIn() (a resync, rare).
class ElementIndex {
 public:
  // Records the element changes of one attachment change; `origin` is the
  // intent id that caused it and lands on the resulting element ops.
  void Apply(const core::Change& change, uint64_t origin) {
    Apply(change.key, change.before ? &*change.before : nullptr, change.after ? &*change.after : nullptr, origin);
  }
  // The same without a Change value: `before`/`after` null = absent. Both
  // are only read during the call.
  void Apply(const core::AttachmentKey& key, const core::Attachment* before, const core::Attachment* after,
             uint64_t origin);
  // Element ops (all deletes, then all adds; sets and keys in sorted order)
  // for everything that changed since the last TakeDelta()/DiscardDelta().
  std::vector<Op> TakeDelta();
  void DiscardDelta() { dirty_.clear(); }
  bool HasDelta() const { return !dirty_.empty(); }

  // Desired elements of `set` in key order.
  std::vector<Element> ElementsIn(const std::string& set) const;
  // Desired element with this key, if any.
  std::optional<Element> Find(const std::string& set, const std::vector<uint8_t>& key) const;
  size_t size() const;

  // Elements found in the kernel that no known attachment owns (the
  // checkpoint was lost): kept, so traffic is not disturbed, until the next
  // garbage collection (Retain) drops them.
  void AdoptOrphans(const std::vector<SetElement>& elements);
  // Drops every adopted orphan; returns how many.
  size_t DropOrphans(uint64_t origin);
  size_t orphans() const { return orphans_.size(); }

 private:
  // Element key bytes (std::string: short keys need no allocation).
  using KeyBytes = std::string;
  // Owners of one element, sorted by attachment key; almost always one.
  using Owners = absl::InlinedVector<std::pair<core::AttachmentKey, Element>, 1>;
  using SetMap = absl::flat_hash_map<KeyBytes, Owners>;
  struct Dirty {
    std::optional<Element> before;
    uint64_t origin = 0;
  };
  using DirtyMap = absl::flat_hash_map<KeyBytes, Dirty>;

  static KeyBytes ToKeyBytes(const std::vector<uint8_t>& key) { return KeyBytes(key.begin(), key.end()); }
  static const Element* ChosenIn(const SetMap* set, const KeyBytes& key);
  static void AddOwner(Owners& owners, const core::AttachmentKey& owner, Element element);
  static void RemoveOwner(Owners& owners, const core::AttachmentKey& owner);
  // The element the kernel should hold for (set, key), or null. Points into
  // sets_: valid until the next change of the index.
  const Element* Chosen(const std::string& set, const std::vector<uint8_t>& key) const;
  void Touch(const std::string& set, const SetMap* current, const KeyBytes& key, uint64_t origin);

  std::map<std::string, SetMap> sets_;
  std::map<std::string, DirtyMap> dirty_;
  std::vector<SetElement> orphans_;
};

}  // namespace ruleplane::render
