#include <variant>

#include "absl/strings/str_cat.h"
#include "agent/render/render.h"
#include "gtest/gtest.h"
#include "test/unit/test_util.h"

namespace ruleplane::render {
namespace {

using core::Change;
using testing::Ip;
using testing::Pod;
using testing::Tcp;

size_t CountElements(const std::vector<Op>& ops, bool adds) {
  size_t n = 0;
  for (const Op& o : ops) {
    if (adds) {
      if (const auto* a = std::get_if<op::AddElements>(&o)) n += a->elements.size();
    } else if (const auto* d = std::get_if<op::DeleteElements>(&o)) {
      n += d->elements.size();
    }
  }
  return n;
}

TEST(ElementIndexTest, AddThenDeleteInOneBatchIsNoDelta) {
  ElementIndex idx;
  core::Attachment a = Pod("a", "10.0.0.2", {Tcp(80, 80)});
  idx.Apply(Change{a.key, std::nullopt, a}, 1);
  idx.Apply(Change{a.key, a, std::nullopt}, 2);
  EXPECT_TRUE(idx.TakeDelta().empty());
}

// The index is hashed; the ops it emits must still come in key order (stable
// plans and golden text), whatever order the changes arrived in.
TEST(ElementIndexTest, DeltaIsInKeyOrderWhateverTheArrivalOrder) {
  ElementIndex idx;
  for (int i = 200; i >= 1; --i) {
    core::Attachment a = Pod(absl::StrCat("c", i), absl::StrCat("10.0.", i % 7, ".", i));
    idx.Apply(a.key, nullptr, &a, static_cast<uint64_t>(i));
  }
  std::vector<Op> ops = idx.TakeDelta();
  ASSERT_EQ(ops.size(), 1u);
  const auto& add = std::get<op::AddElements>(ops[0]);
  ASSERT_EQ(add.elements.size(), 200u);
  for (size_t i = 1; i < add.elements.size(); ++i) {
    EXPECT_LT(add.elements[i - 1].key, add.elements[i].key) << add.elements[i].text;
  }
  std::vector<Element> all = idx.ElementsIn(kSetPodIpv4);
  ASSERT_EQ(all.size(), 200u);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].key, add.elements[i].key);
}

TEST(ElementIndexTest, SharedPodIpSurvivesDeleteOfOneOwner) {
  // A pod IP reused by a new container before the old one's DEL arrived.
  ElementIndex idx;
  core::Attachment old_pod = Pod("old", "10.0.0.7");
  core::Attachment new_pod = Pod("new", "10.0.0.7");
  idx.Apply(Change{old_pod.key, std::nullopt, old_pod}, 1);
  idx.Apply(Change{new_pod.key, std::nullopt, new_pod}, 2);
  EXPECT_EQ(CountElements(idx.TakeDelta(), true), 1u);
  idx.Apply(Change{old_pod.key, old_pod, std::nullopt}, 3);
  EXPECT_TRUE(idx.TakeDelta().empty()) << "the address is still owned by the new pod";
  idx.Apply(Change{new_pod.key, new_pod, std::nullopt}, 4);
  std::vector<Op> ops = idx.TakeDelta();
  EXPECT_EQ(CountElements(ops, false), 1u);
}

TEST(ElementIndexTest, ChangedMapDataIsDeleteThenAddWithOrigin) {
  ElementIndex idx;
  core::Attachment v1 = Pod("a", "10.0.0.2", {Tcp(8080, 80)});
  core::Attachment v2 = Pod("a", "10.0.0.2", {Tcp(8080, 81)});
  idx.Apply(Change{v1.key, std::nullopt, v1}, 1);
  idx.TakeDelta();
  idx.Apply(Change{v1.key, v1, v2}, 7);
  std::vector<Op> ops = idx.TakeDelta();
  ASSERT_EQ(ops.size(), 2u);
  const auto* del = std::get_if<op::DeleteElements>(&ops[0]);
  const auto* add = std::get_if<op::AddElements>(&ops[1]);
  ASSERT_TRUE(del && add) << "deletes must come before adds";
  EXPECT_EQ(del->set, kMapHostportV4);
  EXPECT_EQ(add->elements[0].origin, 7u);
}

TEST(ElementIndexTest, OrphansYieldToLiveOwnersAndDropOnGc) {
  ElementIndex idx;
  core::Attachment a = Pod("a", "10.0.0.2", {Tcp(8080, 80)});
  std::vector<SetElement> orphan = ElementsOf(Pod("ghost", "10.0.0.2", {Tcp(8080, 99)}));
  idx.AdoptOrphans(orphan);
  idx.DiscardDelta();
  EXPECT_EQ(idx.orphans(), orphan.size());
  idx.Apply(Change{a.key, std::nullopt, a}, 1);
  idx.TakeDelta();
  auto hp = idx.Find(kMapHostportV4, ElementsOf(a)[1].element.key);
  ASSERT_TRUE(hp.has_value());
  EXPECT_EQ(hp->data, ElementsOf(a)[1].element.data) << "the live attachment's data wins";
  idx.DropOrphans(2);
  idx.TakeDelta();
  EXPECT_EQ(idx.orphans(), 0u);
  EXPECT_TRUE(idx.Find(kSetPodIpv4, Ip("10.0.0.2").bytes()).has_value());
}

}  // namespace
}  // namespace ruleplane::render
