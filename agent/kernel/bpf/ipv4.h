// IPv4 values in the form the BPF maps store them (network byte order).
// Pure values; the kernel layer keeps its own so it does not depend on
// agent/core (the backend converts core::IpAddress with FromBytes()).
#pragma once

#include <array>
#include <bit>
#include <compare>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ruleplane::kernel::bpf {

class Ipv4Addr {
 public:
  constexpr Ipv4Addr() = default;

  static constexpr Ipv4Addr FromOctets(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    return FromBytes({a, b, c, d});
  }
  static constexpr Ipv4Addr FromBytes(const std::array<uint8_t, 4>& bytes) {
    return Ipv4Addr(std::bit_cast<uint32_t>(bytes));
  }
  // `be` exactly as in a packet header / BPF map key.
  static constexpr Ipv4Addr FromNetworkOrder(uint32_t be) { return Ipv4Addr(be); }
  // Dotted quad; InvalidArgument otherwise.
  static absl::StatusOr<Ipv4Addr> Parse(absl::string_view text);

  constexpr uint32_t network_order() const { return be_; }
  constexpr std::array<uint8_t, 4> bytes() const { return std::bit_cast<std::array<uint8_t, 4>>(be_); }
  constexpr bool IsUnspecified() const { return be_ == 0; }
  std::string ToString() const;

  friend constexpr bool operator==(Ipv4Addr a, Ipv4Addr b) { return a.be_ == b.be_; }
  // Orders by address value (not by the byte-swapped integer).
  friend constexpr std::strong_ordering operator<=>(Ipv4Addr a, Ipv4Addr b) { return a.bytes() <=> b.bytes(); }

  template <typename H>
  friend H AbslHashValue(H h, Ipv4Addr a) {
    return H::combine(std::move(h), a.be_);
  }

 private:
  constexpr explicit Ipv4Addr(uint32_t be) : be_(be) {}
  uint32_t be_ = 0;
};

struct Ipv4Prefix {
  Ipv4Addr addr;
  uint8_t len = 32;  // 0..32

  // "10.0.0.0/8" or a bare address (/32). Host bits must be zero: InvalidArgument
  // otherwise, so a typo cannot silently widen an exclusion.
  static absl::StatusOr<Ipv4Prefix> Parse(absl::string_view text);
  // The same prefix with host bits cleared.
  Ipv4Prefix Canonical() const;
  std::string ToString() const;

  friend bool operator==(const Ipv4Prefix&, const Ipv4Prefix&) = default;
  friend auto operator<=>(const Ipv4Prefix&, const Ipv4Prefix&) = default;
};

}  // namespace ruleplane::kernel::bpf
