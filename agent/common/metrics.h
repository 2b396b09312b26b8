// A small Prometheus metrics registry and its text exposition.
//
// Why not prometheus-cpp: Debian 12 does not package it, and the project
// builds only from Debian packages (BUILD.md). This covers what we use:
// counters, gauges and histograms with constant label names, rendered in the
// text format 0.0.4. All methods are thread-safe; observing is lock-free for
// counters/gauges and takes one short mutex for histograms.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace ruleplane::metrics {

using Labels = std::map<std::string, std::string>;

class Counter {
 public:
  void Increment(double v = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v) ABSL_LOCKS_EXCLUDED(mu_);
  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Get() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const std::vector<double> bounds_;
  mutable absl::Mutex mu_;
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

// Exponential bucket bounds: start, start*factor, ... (count bounds).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

class Registry {
 public:
  // Returns the series for (name, labels), creating it on first use. The
  // pointer stays valid for the registry's lifetime. A name keeps the type and
  // help text of its first registration.
  Counter* GetCounter(const std::string& name, const std::string& help, const Labels& labels = {})
      ABSL_LOCKS_EXCLUDED(mu_);
  Gauge* GetGauge(const std::string& name, const std::string& help, const Labels& labels = {})
      ABSL_LOCKS_EXCLUDED(mu_);
  Histogram* GetHistogram(const std::string& name, const std::string& help,
                          const std::vector<double>& bounds, const Labels& labels = {})
      ABSL_LOCKS_EXCLUDED(mu_);

  // Makes gauge family `name` hold exactly `series` (labels -> value):
  // listed series are set, every other series of the family is removed.
  // For families whose label values come and go (a top-k); never keep a
  // Gauge* of such a family, since removed series are freed.
  void ReplaceGauges(const std::string& name, const std::string& help,
                     const std::map<Labels, double>& series) ABSL_LOCKS_EXCLUDED(mu_);

  // Prometheus text exposition format 0.0.4.
  std::string Render() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family {
    Type type;
    std::string help;
    std::map<Labels, std::unique_ptr<Counter>> counters;
    std::map<Labels, std::unique_ptr<Gauge>> gauges;
    std::map<Labels, std::unique_ptr<Histogram>> histograms;
  };
  Family& FamilyFor(const std::string& name, Type type, const std::string& help)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Family> families_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ruleplane::metrics
