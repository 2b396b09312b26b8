// Renders a KernelTable (what the kernel holds) as nft-style text for
// DumpRuleset, decoding element keys from the set's datatype ids. Pure.
#pragma once

#include <string>

#include "agent/txn/nft_port.h"

namespace ruleplane::api {

std::string KernelTableToText(const std::string& table, const txn::KernelTable& t);
// Decodes one element key/data given the set's composite datatype id.
std::string DecodeTyped(uint32_t type_id, const std::vector<uint8_t>& bytes);

}  // namespace ruleplane::api
