#include "agent/kernel/nft/objects.h"

#include <linux/netfilter.h>

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace ruleplane::kernel::nft {
namespace {

// The kernel's limit for one userdata blob (NFT_USERDATA_MAXLEN).
constexpr uint32_t kUdataBytes = 256;

struct UdataLookup {
  uint8_t type;
  std::string value;
};

int UdataStringCallback(const nftnl_udata* attr, void* data) {
  auto* lookup = static_cast<UdataLookup*>(data);
  if (nftnl_udata_type(attr) != lookup->type) return 0;
  const char* value = static_cast<const char*>(nftnl_udata_get(attr));
  lookup->value.assign(value, ::strnlen(value, nftnl_udata_len(attr)));
  return 0;
}

}  // namespace

Udata::Udata() : buf_(nftnl_udata_buf_alloc(kUdataBytes)) {
  // Allocation failure is the one thing the style allows to CHECK.
  CHECK(buf_ != nullptr) << "allocate nftnl udata buffer";
}

void Udata::PutString(uint8_t type, std::string_view value) {
  std::string z(value);  // nftnl_udata_put_strz wants a C string
  // Callers bound comments by kMaxCommentBytes, so this always fits.
  CHECK(nftnl_udata_put_strz(buf_.get(), type, z.c_str())) << "udata overflow";
}

void Udata::PutU32(uint8_t type, uint32_t value) {
  CHECK(nftnl_udata_put_u32(buf_.get(), type, value)) << "udata overflow";
}

bool Udata::empty() const { return nftnl_udata_buf_len(buf_.get()) == 0; }

const void* Udata::data() const { return nftnl_udata_buf_data(buf_.get()); }

uint32_t Udata::size() const { return nftnl_udata_buf_len(buf_.get()); }

std::string UdataString(const void* data, uint32_t len, uint8_t type) {
  if (data == nullptr || len == 0) return "";
  UdataLookup lookup{type, ""};
  nftnl_udata_parse(data, len, UdataStringCallback, &lookup);
  return lookup.value;
}

std::string FamilyName(uint32_t family) {
  switch (family) {
    case NFPROTO_INET:
      return "inet";
    case NFPROTO_IPV4:
      return "ip";
    case NFPROTO_IPV6:
      return "ip6";
    case NFPROTO_ARP:
      return "arp";
    case NFPROTO_BRIDGE:
      return "bridge";
    case NFPROTO_NETDEV:
      return "netdev";
    default:
      return absl::StrCat("family", family);
  }
}

}  // namespace ruleplane::kernel::nft
