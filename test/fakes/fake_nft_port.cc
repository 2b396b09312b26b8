#include "test/fakes/fake_nft_port.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace ruleplane::testing {
namespace {

using txn::KernelElement;
using txn::KernelTable;

struct Applier {
  KernelTable& t;
  std::vector<txn::OpError>& errors;
  FakeKernel& k;
  size_t index = 0;

  void Fail(absl::Status s, std::optional<size_t> element = std::nullopt) {
    errors.push_back(txn::OpError{index, element, std::move(s)});
  }
  bool NeedTable() {
    if (t.exists) return true;
    Fail(absl::NotFoundError("No such file or directory (table)"));
    return false;
  }
  void operator()(const render::op::AddTable& o) {
    t.exists = true;
    t.flags = o.table.flags;
    t.comment = o.table.comment;
  }
  void operator()(const render::op::AddChain& o) {
    if (!NeedTable()) return;
    auto it = t.chains.find(o.chain.name);
    if (it == t.chains.end()) {
      txn::KernelChain c;
      c.name = o.chain.name;
      c.base = o.chain.base;
      c.comment = o.chain.comment;
      t.chains.emplace(o.chain.name, std::move(c));
    }
  }
  void operator()(const render::op::AddSet& o) {
    if (!NeedTable()) return;
    if (t.sets.count(o.set.name)) return;
    txn::KernelSet s;
    s.name = o.set.name;
    s.key_len = o.set.KeyLen();
    s.key_type = o.set.KeyTypeId();
    s.data_len = o.set.DataLen();
    s.data_type = o.set.DataTypeId();
    s.size = o.set.size;
    s.flags = o.set.flags;
    s.comment = o.set.comment;
    t.sets.emplace(o.set.name, std::move(s));
  }
  void operator()(const render::op::AddRule& o) {
    if (!NeedTable()) return;
    auto it = t.chains.find(o.rule.chain);
    if (it == t.chains.end()) return Fail(absl::NotFoundError("No such file or directory (chain)"));
    it->second.rules.push_back(txn::KernelRule{o.rule.tag, 0});
  }
  void operator()(const render::op::FlushChain& o) {
    if (!NeedTable()) return;
    auto it = t.chains.find(o.chain);
    if (it == t.chains.end()) return Fail(absl::NotFoundError("No such file or directory (chain)"));
    it->second.rules.clear();
  }
  void operator()(const render::op::DeleteChain& o) {
    if (!NeedTable()) return;
    if (!t.chains.erase(o.chain)) Fail(absl::NotFoundError("No such file or directory (chain)"));
  }
  void operator()(const render::op::DeleteSet& o) {
    if (!NeedTable()) return;
    if (!t.sets.erase(o.set)) Fail(absl::NotFoundError("No such file or directory (set)"));
  }
  void operator()(const render::op::DeleteTable&) {
    if (!NeedTable()) return;
    t = KernelTable{};
  }
  void operator()(const render::op::AddElements& o) {
    if (!NeedTable()) return;
    auto it = t.sets.find(o.set);
    if (it == t.sets.end()) return Fail(absl::NotFoundError("No such file or directory (set)"));
    auto& elems = it->second.elements;
    for (size_t i = 0; i < o.elements.size(); ++i) {
      const render::Element& e = o.elements[i];
      if (auto inj = k.element_errors.find(e.key); inj != k.element_errors.end()) {
        Fail(inj->second, i);
        continue;
      }
      auto found = std::find_if(elems.begin(), elems.end(),
                                [&](const KernelElement& x) { return x.key == e.key && x.flags == e.flags; });
      if (found != elems.end()) {
        if (found->data != e.data) Fail(absl::AlreadyExistsError("File exists"), i);
        continue;
      }
      elems.push_back(KernelElement{e.key, e.data, e.comment, e.flags});
    }
  }
  void operator()(const render::op::DeleteElements& o) {
    if (!NeedTable()) return;
    auto it = t.sets.find(o.set);
    if (it == t.sets.end()) return Fail(absl::NotFoundError("No such file or directory (set)"));
    auto& elems = it->second.elements;
    for (size_t i = 0; i < o.elements.size(); ++i) {
      auto found = std::find_if(elems.begin(), elems.end(),
                                [&](const KernelElement& x) {
                                  return x.key == o.elements[i].key && x.flags == o.elements[i].flags;
                                });
      if (found == elems.end()) {
        Fail(absl::NotFoundError("No such file or directory (element)"), i);
        continue;
      }
      elems.erase(found);
    }
  }
};

}  // namespace

size_t FakeKernel::ElementCount(const std::string& set) {
  absl::MutexLock lock(&mu);
  if (!table) return 0;
  auto it = table->sets.find(set);
  return it == table->sets.end() ? 0 : it->second.elements.size();
}

bool FakeKernel::HasElement(const std::string& set, const std::vector<uint8_t>& key) {
  absl::MutexLock lock(&mu);
  if (!table) return false;
  auto it = table->sets.find(set);
  if (it == table->sets.end()) return false;
  for (const auto& e : it->second.elements) {
    if (e.key == key) return true;
  }
  return false;
}

txn::CommitReport FakeNftPort::Commit(const render::Plan& plan) {
  if (kernel_->on_commit) kernel_->on_commit();
  absl::MutexLock lock(&kernel_->mu);
  FakeKernel& k = *kernel_;
  k.plans.push_back(plan);
  txn::CommitReport report;
  report.messages = static_cast<uint32_t>(plan.ops.size());
  KernelTable work = k.table.value_or(KernelTable{});
  Applier apply{work, report.errors, k};
  for (size_t i = 0; i < plan.ops.size(); ++i) {
    apply.index = i;
    if (k.op_error) {
      if (auto s = k.op_error(plan.ops[i])) {
        apply.Fail(*s);
        continue;
      }
    }
    std::visit(apply, plan.ops[i]);
  }
  if (!report.errors.empty()) {
    ++k.rejected;
    report.status = absl::Status(report.errors[0].status.code(),
                                 absl::StrCat("commit nft batch op=", render::OpSummary(plan.ops[report.errors[0].op_index]),
                                              ": ", report.errors[0].status.message()));
    return report;
  }
  ++k.commits;
  k.table = work.exists ? std::optional<KernelTable>(work) : std::nullopt;
  if (k.lose_next_ack) {
    k.lose_next_ack = false;
    report.outcome_unknown = true;
    report.status = absl::UnknownError("ENOBUFS while draining acks");
  }
  return report;
}

absl::StatusOr<txn::KernelTable> FakeNftPort::Dump(std::string_view, uint32_t) {
  absl::MutexLock lock(&kernel_->mu);
  if (!kernel_->table) return KernelTable{};
  return *kernel_->table;
}

}  // namespace ruleplane::testing
