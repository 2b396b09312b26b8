// The SNAT monitor's scan pacing (pure; the scans themselves are covered by
// the privileged and e2e SNAT tests).
#include "agent/txn/snat_monitor.h"

#include "gtest/gtest.h"

namespace ruleplane::txn {
namespace {

TEST(NextSnatScanWait, CheapScansKeepTheConfiguredInterval) {
  EXPECT_EQ(NextSnatScanWait(absl::Seconds(1), absl::Milliseconds(2)), absl::Seconds(1));
  EXPECT_EQ(NextSnatScanWait(absl::Seconds(1), absl::Milliseconds(50)), absl::Seconds(1));
}

TEST(NextSnatScanWait, ExpensiveScansAreStretchedToTheDutyCap) {
  // 200 ms per scan: wait 19 x 200 ms, so scans take 1/20 of the time.
  EXPECT_EQ(NextSnatScanWait(absl::Seconds(1), absl::Milliseconds(200)), absl::Milliseconds(3800));
}

TEST(NextSnatScanWait, NeverLongerThanTheCapOrShorterThanTheInterval) {
  EXPECT_EQ(NextSnatScanWait(absl::Seconds(1), absl::Seconds(10)), kSnatScanMaxWait);
  // A configured interval above the cap wins.
  EXPECT_EQ(NextSnatScanWait(absl::Seconds(60), absl::Seconds(10)), absl::Seconds(60));
  EXPECT_EQ(NextSnatScanWait(absl::Seconds(60), absl::Seconds(5)), absl::Seconds(60));
}

}  // namespace
}  // namespace ruleplane::txn
