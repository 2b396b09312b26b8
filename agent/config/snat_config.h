// AgentConfig (proto) -> core::SnatSettings: parsing, defaults and
// validation of the SNAT fields, with errors naming the config field.
//
// The one default that needs the running system: with no snat_egress_ips,
// the primary IPv4 address of the first egress interface (through the
// caller's lookup). Called at start, on every SIGHUP and when the egress
// interfaces change.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/core/snat.h"
#include "ruleplane/v1/config.pb.h"

namespace ruleplane::config {

// Addresses of one interface usable as its default SNAT address, best
// first, for one family (AF_INET / AF_INET6). NotFound: no such interface.
using InterfaceAddressLookup =
    std::function<absl::StatusOr<std::vector<core::IpAddress>>(const std::string& ifname, int family)>;

// InvalidArgument "<field>: ..." for anything malformed or inconsistent.
// `lookup` gives the defaults of the egress interface (the agent's reads
// rtnetlink: agent/kernel/nl/addresses.h).
absl::StatusOr<core::SnatSettings> SnatSettingsFromConfig(const v1::AgentConfig& cfg,
                                                          const InterfaceAddressLookup& lookup);

// Warnings about a valid config that probably does not do what was meant
// (logged at start and on SIGHUP): keep-port that can keep nothing
// (core::KeepPortNote); several egress interfaces with the default egress
// address, which is the first interface's, so flows leaving the others get
// an address that is not theirs.
std::vector<std::string> SnatConfigWarnings(const v1::AgentConfig& cfg, const core::SnatSettings& s);

}  // namespace ruleplane::config
