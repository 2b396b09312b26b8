// Helpers shared by unit tests: attachment builders.
#pragma once

#include <string>
#include <vector>

#include "agent/core/types.h"

namespace ruleplane::testing {

inline core::IpAddress Ip(const std::string& s) { return *core::IpAddress::Parse(s); }

inline core::Attachment Pod(const std::string& cid, const std::string& ip,
                            std::vector<core::PortMapping> ports = {}) {
  core::Attachment a;
  a.key = {cid, "eth0"};
  a.netns = "/var/run/netns/" + cid;
  a.pod_namespace = "default";
  a.pod_name = "pod-" + cid;
  a.pod_uid = "uid-" + cid;
  a.ips.push_back(Ip(ip));
  a.port_mappings = std::move(ports);
  return a;
}

inline core::PortMapping Tcp(uint16_t host, uint16_t container) {
  return core::PortMapping{host, container, core::L4Proto::kTcp, std::nullopt};
}

}  // namespace ruleplane::testing
