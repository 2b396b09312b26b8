#include "agent/backend/snat_stats.h"

#include <algorithm>
#include <tuple>

namespace ruleplane::backend {

SnatStats SummarizeUsage(core::SnatMode mode, const std::vector<SnatTupleUsage>& usage,
                         const std::vector<core::IpAddress>& pool, uint32_t capacity, size_t top_k) {
  SnatStats out;
  out.mode = mode;
  out.capacity_per_tuple = capacity;
  for (size_t i = 0; i < pool.size(); ++i) {
    SnatEgressStat e;
    e.addr = pool[i];
    e.slot = static_cast<uint32_t>(i);
    out.egress.push_back(e);
  }
  auto stat_for = [&](const core::IpAddress& addr) -> SnatEgressStat& {
    for (SnatEgressStat& e : out.egress) {
      if (e.addr == addr) return e;
    }
    SnatEgressStat e;
    e.addr = addr;
    e.slot = static_cast<uint32_t>(out.egress.size());
    e.in_pool = false;
    out.egress.push_back(e);
    return out.egress.back();
  };
  // Sum duplicates (a tuple may be reported more than once by a reader).
  using Key = std::tuple<core::IpAddress, core::IpAddress, uint16_t, uint8_t>;
  std::map<Key, uint32_t> tuples;
  for (const SnatTupleUsage& u : usage) tuples[Key{u.egress, u.remote, u.remote_port, u.proto}] += u.in_use;
  for (const auto& [key, n] : tuples) {
    const auto& [egress, remote, port, proto] = key;
    SnatEgressStat& e = stat_for(egress);
    e.translations += n;
    e.busiest_in_use = std::max(e.busiest_in_use, n);
    out.translations_total += n;
    SnatTupleStat t;
    t.egress = egress;
    t.remote = remote;
    t.remote_port = port;
    t.proto = proto;
    t.in_use = n;
    t.capacity = capacity;
    t.utilization = capacity ? static_cast<double>(n) / capacity : 0.0;
    out.top.push_back(t);
  }
  std::sort(out.top.begin(), out.top.end(), [](const SnatTupleStat& a, const SnatTupleStat& b) {
    return std::tie(b.in_use, a.egress, a.remote, a.remote_port, a.proto) <
           std::tie(a.in_use, b.egress, b.remote, b.remote_port, b.proto);
  });
  if (out.top.size() > top_k) out.top.resize(top_k);
  return out;
}

}  // namespace ruleplane::backend
