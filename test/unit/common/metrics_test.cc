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

TEST(MetricsTest, ReplaceGaugesKeepsExactlyTheGivenSeries) {
  Registry r;
  r.ReplaceGauges("rp_top", "h", {{{{"rank", "1"}, {"dst", "a"}}, 3}, {{{"rank", "2"}, {"dst", "b"}}, 1}});
  r.ReplaceGauges("rp_top", "h", {{{{"rank", "1"}, {"dst", "b"}}, 4}});
  std::string t = r.Render();
  EXPECT_NE(t.find("rp_top{dst=\"b\",rank=\"1\"} 4\n"), std::string::npos) << t;
  EXPECT_EQ(t.find("dst=\"a\""), std::string::npos) << t;
  EXPECT_EQ(t.find("rank=\"2\""), std::string::npos) << t;
  r.ReplaceGauges("rp_top", "h", {});
  EXPECT_EQ(r.Render().find("rp_top{"), std::string::npos);
}

}  // namespace
}  // namespace ruleplane::metrics
