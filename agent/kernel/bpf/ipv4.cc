#include "agent/kernel/bpf/ipv4.h"

#include <arpa/inet.h>

#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ruleplane::kernel::bpf {

absl::StatusOr<Ipv4Addr> Ipv4Addr::Parse(absl::string_view text) {
  in_addr addr{};
  if (::inet_pton(AF_INET, std::string(text).c_str(), &addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 address: \"", text, "\""));
  }
  return FromNetworkOrder(addr.s_addr);
}

std::string Ipv4Addr::ToString() const {
  const auto b = bytes();
  return absl::StrCat(b[0], ".", b[1], ".", b[2], ".", b[3]);
}

absl::StatusOr<Ipv4Prefix> Ipv4Prefix::Parse(absl::string_view text) {
  Ipv4Prefix prefix;
  const size_t slash = text.find('/');
  auto addr = Ipv4Addr::Parse(text.substr(0, slash));
  if (!addr.ok()) return addr.status();
  prefix.addr = *addr;
  if (slash != absl::string_view::npos) {
    uint32_t len = 0;
    if (!absl::SimpleAtoi(text.substr(slash + 1), &len) || len > 32) {
      return absl::InvalidArgumentError(absl::StrCat("bad IPv4 prefix length in \"", text, "\""));
    }
    prefix.len = static_cast<uint8_t>(len);
  }
  if (prefix.Canonical() != prefix) {
    return absl::InvalidArgumentError(
        absl::StrCat("IPv4 prefix \"", text, "\" has host bits set (did you mean ", prefix.Canonical().ToString(), "?)"));
  }
  return prefix;
}

Ipv4Prefix Ipv4Prefix::Canonical() const {
  const uint32_t host = ntohl(addr.network_order());
  const uint32_t mask = len == 0 ? 0 : ~uint32_t{0} << (32 - std::min<uint8_t>(len, 32));
  return Ipv4Prefix{Ipv4Addr::FromNetworkOrder(htonl(host & mask)), std::min<uint8_t>(len, 32)};
}

std::string Ipv4Prefix::ToString() const { return absl::StrCat(addr.ToString(), "/", len); }

}  // namespace ruleplane::kernel::bpf
