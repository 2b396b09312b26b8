// AgentConfig (proto) -> core::SnatSettings: parsing, defaults and
// validation of the SNAT fields, with errors naming the config field.
//
// The one default that needs the running system: with no snat_egress_ips,
// the primary IPv4 address of the first egress interface (getifaddrs(),
// read-only). Called at start and on every SIGHUP, on the main thread.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/core/snat.h"
#include "ruleplane/v1/config.pb.h"

namespace ruleplane::config {

// Addresses of one interface in the order the kernel lists them (the
// primary first), for one family (AF_INET / AF_INET6). NotFound: no such
// interface.
using InterfaceAddressLookup =
    std::function<absl::StatusOr<std::vector<core::IpAddress>>(const std::string& ifname, int family)>;

// The real lookup (getifaddrs). IPv6: global addresses only.
absl::StatusOr<std::vector<core::IpAddress>> SystemInterfaceAddresses(const std::string& ifname, int family);

// InvalidArgument "<field>: ..." for anything malformed or inconsistent.
absl::StatusOr<core::SnatSettings> SnatSettingsFromConfig(const v1::AgentConfig& cfg,
                                                          const InterfaceAddressLookup& lookup = SystemInterfaceAddresses);

// Warnings about a valid config that probably does not do what was meant
// (logged at start and on SIGHUP): keep-port that can keep nothing
// (core::KeepPortNote); several egress interfaces with the default egress
// address, which is the first interface's, so flows leaving the others get
// an address that is not theirs.
std::vector<std::string> SnatConfigWarnings(const v1::AgentConfig& cfg, const core::SnatSettings& s);

}  // namespace ruleplane::config
