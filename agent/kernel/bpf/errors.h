// errno -> absl::Status for the BPF kernel layer (STYLE.md section 4).
//
// The shared code table and errno payload of agent/kernel/common (one errno
// means one code in every kernel backend); BPF adds E2BIG (a full hash map).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "agent/kernel/common/errno_status.h"

namespace ruleplane::kernel::bpf {

// kernel::ErrnoToCode, plus E2BIG ResourceExhausted (htab_map_update_elem():
// the hash map is full).
absl::StatusCode BpfErrnoToCode(int err);

// "<what>: <strerror text> (errno <n>)" with BpfErrnoToCode(err) and the errno
// attached under kErrnoPayloadUrl. `err` is a positive errno; libbpf's
// negative return values are accepted too.
absl::Status BpfError(int err, absl::string_view what);

// Same payload URL as agent/kernel/nl, so nl::StatusErrno() reads ours too.
using kernel::ErrnoText;
using kernel::kErrnoPayloadUrl;

}  // namespace ruleplane::kernel::bpf
