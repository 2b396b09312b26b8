// RAII owners for libnftnl objects and the userdata (udata) TLVs nft writes.
//
// Userdata is opaque to the kernel; nft(8) stores comments and byte-order
// hints there as TLVs (libnftnl/udata.h) and reads them back when listing.
// Writing the same TLVs makes our objects print like hand-written ones:
// `comment "..."` and addresses instead of hex.
#pragma once

#include <libnftnl/chain.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "agent/kernel/nl/c_ptr.h"

namespace ruleplane::kernel::nft {

using NftnlTablePtr = CPtr<nftnl_table, &nftnl_table_free>;
using NftnlChainPtr = CPtr<nftnl_chain, &nftnl_chain_free>;
using NftnlSetPtr = CPtr<nftnl_set, &nftnl_set_free>;
using NftnlSetElemPtr = CPtr<nftnl_set_elem, &nftnl_set_elem_free>;
using NftnlSetElemsIterPtr = CPtr<nftnl_set_elems_iter, &nftnl_set_elems_iter_destroy>;
using NftnlRulePtr = CPtr<nftnl_rule, &nftnl_rule_free>;
using NftnlExprPtr = CPtr<nftnl_expr, &nftnl_expr_free>;
using NftnlUdataBufPtr = CPtr<nftnl_udata_buf, &nftnl_udata_buf_free>;

// nft(8) rejects longer comments (NFTNL_UDATA_COMMENT_MAXLEN); the kernel caps
// a whole userdata blob at 256 bytes (NFT_USERDATA_MAXLEN).
inline constexpr size_t kMaxCommentBytes = NFTNL_UDATA_COMMENT_MAXLEN;

// nftables' `enum byteorder` values stored in NFTNL_UDATA_SET_*BYTEORDER.
inline constexpr uint32_t kByteOrderHost = 1;
inline constexpr uint32_t kByteOrderBigEndian = 2;

// Builder of one userdata blob.
class Udata {
 public:
  Udata();
  bool ok() const { return buf_ != nullptr; }
  // A NUL-terminated string TLV, as nft writes comments.
  void PutString(uint8_t type, std::string_view value);
  void PutU32(uint8_t type, uint32_t value);
  bool empty() const;
  const void* data() const;
  uint32_t size() const;

 private:
  NftnlUdataBufPtr buf_;
};

// The string TLV `type` of a userdata blob, without its NUL; "" if absent.
std::string UdataString(const void* data, uint32_t len, uint8_t type);

// "inet", "ip", "ip6", "arp", "bridge", "netdev" or "family<N>".
std::string FamilyName(uint32_t family);

}  // namespace ruleplane::kernel::nft
