#include "agent/common/metrics.h"

#include "gtest/gtest.h"

namespace ruleplane::metrics {
namespace {

TEST(MetricsTest, RendersPrometheusText) {
  Registry r;
  r.GetCounter("rp_things_total", "Things", {{"result", "ok"}})->Increment(3);
  r.GetGauge("rp_depth", "Depth")->Set(7);
  Histogram* h = r.GetHistogram("rp_seconds", "Latency", {0.1, 1});
  h->Observe(0.05);
  h->Observe(0.5);
  h->Observe(5);
  std::string t = r.Render();
  EXPECT_NE(t.find("# TYPE rp_things_total counter\nrp_things_total{result=\"ok\"} 3\n"), std::string::npos) << t;
  EXPECT_NE(t.find("rp_depth 7\n"), std::string::npos) << t;
  EXPECT_NE(t.find("rp_seconds_bucket{le=\"0.1\"} 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("rp_seconds_bucket{le=\"1\"} 2\n"), std::string::npos) << t;
  EXPECT_NE(t.find("rp_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos) << t;
  EXPECT_NE(t.find("rp_seconds_count 3\n"), std::string::npos) << t;
}

TEST(MetricsTest, SameSeriesIsReturnedTwice) {
  Registry r;
  EXPECT_EQ(r.GetCounter("a", "h", {{"x", "1"}}), r.GetCounter("a", "h", {{"x", "1"}}));
  EXPECT_NE(r.GetCounter("a", "h", {{"x", "1"}}), r.GetCounter("a", "h", {{"x", "2"}}));
}

}  // namespace
}  // namespace ruleplane::metrics
