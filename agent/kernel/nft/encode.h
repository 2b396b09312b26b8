// Plan -> nf_tables netlink messages: the mechanical translation of typed
// ops into libnftnl objects, built straight into a batch.
//
// Pure apart from memory: no I/O. Called on the engine thread by
// NetlinkNftPort::Commit().
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "agent/kernel/nl/batch.h"
#include "agent/render/plan.h"
#include "agent/txn/nft_port.h"

namespace ruleplane::kernel::nft {

struct EncodeOptions {
  // Upper bound for one NEWSETELEM/DELSETELEM message; larger element lists
  // are split across several messages of the same batch. Clamped to
  // [kMinMessageBytes, kMaxElementMessageBytes].
  size_t max_message_bytes = 32 * 1024;
};

// The NFTA_SET_ELEM_LIST_ELEMENTS nest has a 16-bit length, so one message
// can carry at most ~64 KiB of elements; stay well below.
inline constexpr size_t kMaxElementMessageBytes = 60 * 1024;
inline constexpr size_t kMinMessageBytes = 1024;

// render::OpSummary(op), except that table ops name plan.table (OpSummary
// uses TableSpec::name, which an engine may leave empty): "add table x".
std::string OpSummaryIn(const render::Plan& plan, const render::Op& op);

// Checks what the kernel would refuse for reasons that are ours to fix
// (names, comment lengths, key sizes, message size) without sending
// anything. One OpError (InvalidArgument) per offending op.
std::vector<txn::OpError> ValidatePlan(const render::Plan& plan);

// Appends one message per op (several per element op when split) to
// `batch`, each tagged with its op index and element range. Every message
// asks for an ACK. Table/chain/set/element creation uses NLM_F_CREATE
// without NLM_F_EXCL, so re-adding what exists is a no-op. A set created in
// this batch gets an NFTNL_SET_ID, and rules/elements referencing it carry
// that id, as nft does. Call ValidatePlan first; returns ResourceExhausted
// only when memory runs out.
[[nodiscard]] absl::Status EncodePlan(const render::Plan& plan, const EncodeOptions& options,
                                      nl::Batch& batch);

}  // namespace ruleplane::kernel::nft
