#include "test/bpf/packet.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ruleplane::testing {
namespace {

constexpr size_t kEthLen = 14;
constexpr size_t kIpLen = 20;
constexpr uint16_t kEthIpv4 = 0x0800;
constexpr uint16_t kEthIpv6 = 0x86dd;

void Put16(Bytes& b, size_t off, uint16_t v) {
  b[off] = static_cast<uint8_t>(v >> 8);
  b[off + 1] = static_cast<uint8_t>(v);
}
uint16_t Get16(absl::Span<const uint8_t> b, size_t off) {
  return static_cast<uint16_t>((b[off] << 8) | b[off + 1]);
}
void PutAddr(Bytes& b, size_t off, Ipv4Addr a) {
  const auto bytes = a.bytes();
  std::copy(bytes.begin(), bytes.end(), b.begin() + static_cast<std::ptrdiff_t>(off));
}
Ipv4Addr GetAddr(absl::Span<const uint8_t> b, size_t off) {
  return Ipv4Addr::FromBytes({b[off], b[off + 1], b[off + 2], b[off + 3]});
}

// Unfolded sum of 16-bit big-endian words.
uint32_t Sum16(absl::Span<const uint8_t> data, uint32_t sum = 0) {
  size_t i = 0;
  for (; i + 1 < data.size(); i += 2) sum += static_cast<uint32_t>((data[i] << 8) | data[i + 1]);
  if (i < data.size()) sum += static_cast<uint32_t>(data[i] << 8);
  return sum;
}

uint32_t PseudoHeaderSum(Ipv4Addr src, Ipv4Addr dst, uint8_t proto, size_t l4_len) {
  const auto s = src.bytes();
  const auto d = dst.bytes();
  uint32_t sum = Sum16(s);
  sum = Sum16(d, sum);
  sum += proto;
  sum += static_cast<uint32_t>(l4_len);
  return sum;
}

Bytes EthernetHeader(uint16_t ethertype) {
  Bytes b = {0x02, 0, 0, 0, 0, 0x02,   // dst MAC (locally administered)
             0x02, 0, 0, 0, 0, 0x01};  // src MAC
  b.push_back(static_cast<uint8_t>(ethertype >> 8));
  b.push_back(static_cast<uint8_t>(ethertype));
  return b;
}

// Ethernet + IPv4 header for `l4` (already complete), with header checksum.
Bytes Wrap(Ipv4Addr src, Ipv4Addr dst, uint8_t proto, const Bytes& l4) {
  Bytes b = EthernetHeader(kEthIpv4);
  Bytes ip(kIpLen, 0);
  ip[0] = 0x45;
  Put16(ip, 2, static_cast<uint16_t>(kIpLen + l4.size()));
  Put16(ip, 4, 0x1234);  // id
  ip[8] = 64;            // ttl
  ip[9] = proto;
  PutAddr(ip, 12, src);
  PutAddr(ip, 16, dst);
  Put16(ip, 10, InternetChecksum(ip));
  b.insert(b.end(), ip.begin(), ip.end());
  b.insert(b.end(), l4.begin(), l4.end());
  return b;
}

}  // namespace

uint16_t InternetChecksum(absl::Span<const uint8_t> data, uint32_t seed) {
  uint32_t sum = Sum16(data, seed);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

Bytes Text(absl::string_view s) { return Bytes(s.begin(), s.end()); }

Bytes BuildTcp(Ipv4Addr src, uint16_t sport, Ipv4Addr dst, uint16_t dport, absl::Span<const uint8_t> payload,
               uint8_t flags) {
  Bytes l4(20, 0);
  Put16(l4, 0, sport);
  Put16(l4, 2, dport);
  Put16(l4, 4, 0x0102);  // seq
  Put16(l4, 6, 0x0304);
  l4[12] = 5 << 4;  // data offset
  l4[13] = flags;
  Put16(l4, 14, 64240);  // window
  l4.insert(l4.end(), payload.begin(), payload.end());
  Put16(l4, 16, InternetChecksum(l4, PseudoHeaderSum(src, dst, kProtoTcp, l4.size())));
  return Wrap(src, dst, kProtoTcp, l4);
}

Bytes BuildUdp(Ipv4Addr src, uint16_t sport, Ipv4Addr dst, uint16_t dport, absl::Span<const uint8_t> payload,
               bool zero_checksum) {
  Bytes l4(8, 0);
  Put16(l4, 0, sport);
  Put16(l4, 2, dport);
  Put16(l4, 4, static_cast<uint16_t>(8 + payload.size()));
  l4.insert(l4.end(), payload.begin(), payload.end());
  if (!zero_checksum) {
    uint16_t c = InternetChecksum(l4, PseudoHeaderSum(src, dst, kProtoUdp, l4.size()));
    Put16(l4, 6, c == 0 ? 0xffff : c);  // RFC 768: computed 0 is sent as all ones
  }
  return Wrap(src, dst, kProtoUdp, l4);
}

Bytes BuildIcmpEcho(Ipv4Addr src, Ipv4Addr dst, uint8_t type, uint16_t id, uint16_t seq,
                    absl::Span<const uint8_t> payload) {
  Bytes l4(8, 0);
  l4[0] = type;
  Put16(l4, 4, id);
  Put16(l4, 6, seq);
  l4.insert(l4.end(), payload.begin(), payload.end());
  Put16(l4, 2, InternetChecksum(l4));
  return Wrap(src, dst, kProtoIcmp, l4);
}

Bytes BuildIcmpError(Ipv4Addr src, Ipv4Addr dst, uint8_t type, uint8_t code, uint16_t mtu, const Bytes& original) {
  Bytes l4(8, 0);
  l4[0] = type;
  l4[1] = code;
  Put16(l4, 6, mtu);  // next-hop MTU (RFC 1191) for "fragmentation needed"
  const size_t ihl = static_cast<size_t>(original[kEthLen] & 0x0f) * 4;
  const size_t quote = std::min(original.size() - kEthLen, ihl + 8);
  l4.insert(l4.end(), original.begin() + kEthLen, original.begin() + static_cast<std::ptrdiff_t>(kEthLen + quote));
  Put16(l4, 2, InternetChecksum(l4));
  return Wrap(src, dst, kProtoIcmp, l4);
}

Bytes BuildIpv4(Ipv4Addr src, Ipv4Addr dst, uint8_t proto, absl::Span<const uint8_t> payload) {
  return Wrap(src, dst, proto, Bytes(payload.begin(), payload.end()));
}

Bytes BuildIpv6Udp(uint16_t sport, uint16_t dport) {
  Bytes b = EthernetHeader(kEthIpv6);
  Bytes ip(40, 0);
  ip[0] = 0x60;
  Put16(ip, 4, 8);  // payload length
  ip[6] = kProtoUdp;
  ip[7] = 64;
  ip[8] = 0xfd;  // src fd00::1
  ip[23] = 1;
  ip[24] = 0x20;  // dst 2001:db8::2
  ip[25] = 0x01;
  ip[26] = 0x0d;
  ip[27] = 0xb8;
  ip[39] = 2;
  b.insert(b.end(), ip.begin(), ip.end());
  Bytes udp(8, 0);
  Put16(udp, 0, sport);
  Put16(udp, 2, dport);
  Put16(udp, 4, 8);
  Put16(udp, 6, 0x1234);
  b.insert(b.end(), udp.begin(), udp.end());
  return b;
}

std::pair<Bytes, Bytes> Fragment(const Bytes& frame, size_t first_bytes) {
  const size_t l3 = kEthLen;
  const size_t payload_len = frame.size() - l3 - kIpLen;
  Bytes first(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(l3 + kIpLen + first_bytes));
  Put16(first, l3 + 2, static_cast<uint16_t>(kIpLen + first_bytes));
  Put16(first, l3 + 6, 0x2000);  // MF, offset 0
  Put16(first, l3 + 10, 0);
  Put16(first, l3 + 10, InternetChecksum(absl::MakeSpan(first).subspan(l3, kIpLen)));

  Bytes second(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(l3 + kIpLen));
  second.insert(second.end(), frame.begin() + static_cast<std::ptrdiff_t>(l3 + kIpLen + first_bytes), frame.end());
  Put16(second, l3 + 2, static_cast<uint16_t>(kIpLen + payload_len - first_bytes));
  Put16(second, l3 + 6, static_cast<uint16_t>(first_bytes / 8));  // offset in 8-byte units, MF clear
  Put16(second, l3 + 10, 0);
  Put16(second, l3 + 10, InternetChecksum(absl::MakeSpan(second).subspan(l3, kIpLen)));
  return {first, second};
}

absl::StatusOr<Bytes> Reassemble(const Bytes& first, const Bytes& second) {
  const size_t l3 = kEthLen;
  if (first.size() < l3 + kIpLen || second.size() < l3 + kIpLen) return absl::InvalidArgumentError("short fragment");
  if (Get16(first, l3 + 4) != Get16(second, l3 + 4)) return absl::InvalidArgumentError("fragment ids differ");
  if (GetAddr(first, l3 + 12) != GetAddr(second, l3 + 12) || GetAddr(first, l3 + 16) != GetAddr(second, l3 + 16)) {
    return absl::InvalidArgumentError("fragment addresses differ: the datagram would never reassemble");
  }
  const size_t first_payload = first.size() - l3 - kIpLen;
  if ((Get16(second, l3 + 6) & 0x1fff) * 8u != first_payload) return absl::InvalidArgumentError("fragment offset");
  Bytes whole = first;
  whole.insert(whole.end(), second.begin() + static_cast<std::ptrdiff_t>(l3 + kIpLen), second.end());
  Put16(whole, l3 + 2, static_cast<uint16_t>(whole.size() - l3));
  Put16(whole, l3 + 6, 0);
  Put16(whole, l3 + 10, 0);
  Put16(whole, l3 + 10, InternetChecksum(absl::MakeSpan(whole).subspan(l3, kIpLen)));
  return whole;
}

absl::StatusOr<ParsedPacket> ParseIpv4(absl::Span<const uint8_t> ip, bool verify_l4) {
  if (ip.size() < kIpLen) return absl::InvalidArgumentError("short IPv4 header");
  if ((ip[0] >> 4) != 4) return absl::InvalidArgumentError("not IPv4");
  const size_t ihl = static_cast<size_t>(ip[0] & 0x0f) * 4;
  if (ihl < kIpLen || ip.size() < ihl) return absl::InvalidArgumentError("bad IHL");
  ParsedPacket p;
  p.src = GetAddr(ip, 12);
  p.dst = GetAddr(ip, 16);
  p.proto = ip[9];
  p.frag_field = Get16(ip, 6);
  p.ip_checksum_ok = InternetChecksum(ip.subspan(0, ihl)) == 0;
  const size_t total = verify_l4 ? Get16(ip, 2) : ip.size();
  if (total > ip.size() || total < ihl) return absl::InvalidArgumentError("bad total length");
  const absl::Span<const uint8_t> l4 = ip.subspan(ihl, total - ihl);
  const bool later_fragment = (p.frag_field & 0x1fff) != 0;
  const bool fragment = later_fragment || (p.frag_field & 0x2000) != 0;
  if (later_fragment) return p;

  size_t hdr = 0;
  switch (p.proto) {
    case kProtoTcp:
      hdr = 20;
      break;
    case kProtoUdp:
    case kProtoIcmp:
      hdr = 8;
      break;
    default:
      return p;
  }
  if (l4.size() < std::min<size_t>(hdr, 8)) return absl::InvalidArgumentError("short L4 header");
  p.has_l4 = true;
  if (p.proto == kProtoIcmp) {
    p.icmp_type = l4[0];
    p.icmp_code = l4[1];
    p.l4_checksum = Get16(l4, 2);
    p.icmp_id = Get16(l4, 4);
  } else {
    p.sport = Get16(l4, 0);
    p.dport = Get16(l4, 2);
    if (l4.size() >= hdr) p.l4_checksum = Get16(l4, p.proto == kProtoTcp ? 16 : 6);
  }
  if (l4.size() >= hdr) p.l4_payload.assign(l4.begin() + static_cast<std::ptrdiff_t>(hdr), l4.end());
  if (!verify_l4 || fragment) return p;
  if (p.proto == kProtoIcmp) {
    p.l4_checksum_ok = InternetChecksum(l4) == 0;
  } else if (p.proto == kProtoUdp && p.l4_checksum == 0) {
    p.l4_checksum_ok = true;  // "no checksum"
  } else {
    p.l4_checksum_ok = InternetChecksum(l4, PseudoHeaderSum(p.src, p.dst, p.proto, l4.size())) == 0;
  }
  return p;
}

absl::StatusOr<ParsedPacket> ParseFrame(const Bytes& frame) {
  if (frame.size() < kEthLen) return absl::InvalidArgumentError("short Ethernet header");
  if (Get16(frame, 12) != kEthIpv4) return absl::InvalidArgumentError("not an IPv4 frame");
  return ParseIpv4(absl::MakeConstSpan(frame).subspan(kEthLen), /*verify_l4=*/true);
}

}  // namespace ruleplane::testing
