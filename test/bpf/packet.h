// A small packet builder and parser for BPF_PROG_TEST_RUN tests: Ethernet +
// IPv4 + TCP/UDP/ICMP frames with correct checksums, and a parser that
// recomputes every checksum independently of the kernel's helpers.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "agent/kernel/bpf/ipv4.h"

namespace ruleplane::testing {

using Bytes = std::vector<uint8_t>;
using kernel::bpf::Ipv4Addr;

inline constexpr uint8_t kProtoIcmp = 1;
inline constexpr uint8_t kProtoTcp = 6;
inline constexpr uint8_t kProtoUdp = 17;
inline constexpr uint8_t kProtoGre = 47;

inline constexpr uint8_t kIcmpEchoReply = 0;
inline constexpr uint8_t kIcmpDestUnreach = 3;
inline constexpr uint8_t kIcmpEchoRequest = 8;
inline constexpr uint8_t kIcmpFragNeeded = 4;  // code of kIcmpDestUnreach

inline constexpr uint8_t kTcpSyn = 0x02;
inline constexpr uint8_t kTcpAck = 0x10;

// RFC 1071 one's complement sum, folded and inverted (the checksum field
// value). `seed` is a partial (unfolded) sum, e.g. of a pseudo header.
uint16_t InternetChecksum(absl::Span<const uint8_t> data, uint32_t seed = 0);

// Ethernet (unicast MACs, IPv4 ethertype) + IPv4 (no options, DF clear) + L4.
Bytes BuildTcp(Ipv4Addr src, uint16_t sport, Ipv4Addr dst, uint16_t dport, absl::Span<const uint8_t> payload = {},
               uint8_t flags = kTcpSyn);
// zero_checksum: send the UDP "no checksum" value 0.
Bytes BuildUdp(Ipv4Addr src, uint16_t sport, Ipv4Addr dst, uint16_t dport, absl::Span<const uint8_t> payload = {},
               bool zero_checksum = false);
Bytes BuildIcmpEcho(Ipv4Addr src, Ipv4Addr dst, uint8_t type, uint16_t id, uint16_t seq,
                    absl::Span<const uint8_t> payload = {});
// ICMP error from `src` to `dst` quoting the IPv4 header + 8 bytes of the L4
// header of `original` (a frame from the Build* functions), as RFC 792 says.
Bytes BuildIcmpError(Ipv4Addr src, Ipv4Addr dst, uint8_t type, uint8_t code, uint16_t mtu, const Bytes& original);
// IPv4 with an arbitrary protocol number and opaque payload.
Bytes BuildIpv4(Ipv4Addr src, Ipv4Addr dst, uint8_t proto, absl::Span<const uint8_t> payload);
// A minimal IPv6/UDP frame (checksum not meaningful: it must pass untouched).
Bytes BuildIpv6Udp(uint16_t sport, uint16_t dport);

// Splits an IPv4 frame into a first fragment carrying `first_bytes` of the IP
// payload (a multiple of 8) and a second carrying the rest.
std::pair<Bytes, Bytes> Fragment(const Bytes& frame, size_t first_bytes);
// Joins two fragments made by Fragment() (possibly rewritten since) into one
// unfragmented frame; the IP header comes from `first`.
absl::StatusOr<Bytes> Reassemble(const Bytes& first, const Bytes& second);

Bytes Text(absl::string_view s);

struct ParsedPacket {
  Ipv4Addr src;
  Ipv4Addr dst;
  uint8_t proto = 0;
  uint16_t frag_field = 0;  // host order: flags | offset
  bool ip_checksum_ok = false;
  // L4 (present unless this is a non-first fragment); ports host order.
  bool has_l4 = false;
  uint16_t sport = 0;
  uint16_t dport = 0;
  uint8_t icmp_type = 0;
  uint8_t icmp_code = 0;
  uint16_t icmp_id = 0;
  uint16_t l4_checksum = 0;  // the raw field, host order (UDP: 0 = none)
  // Recomputed over the whole L4 segment (with pseudo header for TCP/UDP).
  // False for fragments: the checksum covers the reassembled datagram.
  bool l4_checksum_ok = false;
  Bytes l4_payload;  // after the 20/8/8-byte TCP/UDP/ICMP header
};

// Parses an Ethernet + IPv4 frame.
absl::StatusOr<ParsedPacket> ParseFrame(const Bytes& frame);
// Parses a bare IPv4 packet (e.g. the one quoted in an ICMP error; its L4
// checksum is not checked: the quote is truncated).
absl::StatusOr<ParsedPacket> ParseIpv4(absl::Span<const uint8_t> packet, bool verify_l4);

}  // namespace ruleplane::testing
