// A tiny JSON span scanner: finds where a top-level member's value sits in a
// JSON text without re-serializing anything.
//
// Why: a chained CNI plugin must print prevResult exactly as it received it.
// Parsing into a DOM and dumping it again would reorder keys, rewrite number
// formats and escapes; runtimes and later plugins then see a different
// result. So the plugin validates stdin with nlohmann::json and then copies
// the raw bytes of "prevResult" out of stdin with this scanner.
//
// Pure, allocation-light, no recursion (nesting depth is bounded only by
// memory for a small std::vector<char>), thread-compatible.
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ruleplane::cni {

// Returns the exact bytes of the value of the top-level member `key` of the
// JSON object `json`, as a view into `json` (from the first byte of the value
// to its last byte; surrounding whitespace excluded).
//
// Member names are compared after decoding escapes ("prev\u0052esult" matches
// "prevResult"). With duplicate names the last one wins, as in
// nlohmann::json's parser, so both agree on which value is meant.
// A leading UTF-8 byte order mark is skipped (nlohmann skips it too).
//
// NotFound: `json` is a well-formed object without `key`.
// InvalidArgument: `json` is not a single well-formed JSON object; the
// message gives the byte offset.
[[nodiscard]] absl::StatusOr<absl::string_view> FindTopLevelMember(absl::string_view json,
                                                                   absl::string_view key);

}  // namespace ruleplane::cni
