// Conversions between core types and their ruleplane.v1 proto form (used by
// the checkpoint and by the gRPC layer).
#pragma once

#include "absl/status/statusor.h"
#include "agent/core/types.h"
#include "ruleplane/v1/state.pb.h"

namespace ruleplane::txn {

v1::Attachment ToProto(const core::Attachment& a);
// InvalidArgument naming the field for bad addresses, ports or protocols.
absl::StatusOr<core::Attachment> FromProto(const v1::Attachment& a);
v1::Mutation ToProto(const core::Mutation& m);
absl::StatusOr<core::Mutation> FromProto(const v1::Mutation& m);

}  // namespace ruleplane::txn
