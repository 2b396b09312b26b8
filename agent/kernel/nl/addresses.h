// The addresses of one interface as rtnetlink reports them (RTM_GETADDR
// dump), with the flags getifaddrs() hides: which IPv4 address is primary,
// which IPv6 address is still tentative (DAD not done), failed DAD,
// deprecated or temporary. Read-only; any thread (one socket per call).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ruleplane::kernel::nl {

struct InterfaceAddress {
  int family = 0;              // AF_INET or AF_INET6
  std::vector<uint8_t> bytes;  // 4 or 16, network order (IFA_LOCAL, else IFA_ADDRESS)
  uint8_t prefix_len = 0;
  uint8_t scope = 0;           // RT_SCOPE_*
  uint32_t flags = 0;          // IFA_F_* (IFA_FLAGS when present, else ifa_flags)
};

// Every address of `ifname` in the current netns, of `family` (AF_INET,
// AF_INET6 or AF_UNSPEC), in the kernel's order (IPv4: the primary of each
// subnet before its secondaries). NotFound: no such interface.
absl::StatusOr<std::vector<InterfaceAddress>> DumpInterfaceAddresses(const std::string& ifname, int family);

// The address SNAT should use by default, or none:
//  - IPv4: the first address that is not IFA_F_SECONDARY;
//  - IPv6: global scope only, never IFA_F_TENTATIVE or IFA_F_DADFAILED (the
//    node cannot receive on them); prefer what is neither IFA_F_DEPRECATED
//    nor IFA_F_TEMPORARY, then the first usable.
// Returned in order of preference (the first is the choice).
std::vector<InterfaceAddress> PreferredSourceAddresses(const std::vector<InterfaceAddress>& all, int family);

}  // namespace ruleplane::kernel::nl
