// Kernel errno -> absl::Status, with the project's explicit code table
// (STYLE.md section 4). Every netlink error in agent/kernel goes through here
// so one errno always means one code.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "agent/kernel/common/errno_status.h"

namespace ruleplane::kernel::nl {

// The shared table (agent/kernel/common/errno_status.h).
inline absl::StatusCode KernelErrnoToCode(int err) { return kernel::ErrnoToCode(err); }
using kernel::ErrnoText;
using kernel::kErrnoPayloadUrl;

// A Status with KernelErrnoToCode(err), `message` verbatim, and the errno
// attached as payload (see StatusErrno).
absl::Status KernelError(int err, absl::string_view message);

// The errno attached by KernelError, if any.
std::optional<int> StatusErrno(const absl::Status& status);

// Attaches the batch sequence number / op index as payloads (structured data
// for the engine, STYLE.md section 4).
void SetSeqPayload(absl::Status& status, uint32_t seq);
void SetOpIndexPayload(absl::Status& status, size_t op_index);

inline constexpr absl::string_view kSeqPayloadUrl = "type.ruleplane.dev/nl-seq";
inline constexpr absl::string_view kOpIndexPayloadUrl = "type.ruleplane.dev/op-index";

}  // namespace ruleplane::kernel::nl
