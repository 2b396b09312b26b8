// Conversions between core types and their ruleplane.v1 proto form (used by
// the checkpoint and by the gRPC layer).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/core/types.h"
#include "ruleplane/v1/state.pb.h"

namespace ruleplane::txn {

v1::Attachment ToProto(const core::Attachment& a);
// InvalidArgument naming the field for bad addresses, ports or protocols.
absl::StatusOr<core::Attachment> FromProto(const v1::Attachment& a);
v1::Mutation ToProto(const core::Mutation& m);
absl::StatusOr<core::Mutation> FromProto(const v1::Mutation& m);

// Appends v1::JournalRecord{commit_id, mutations} in protobuf wire format to
// `out`: the bytes SerializeAsString() gives for the record built with
// ToProto() (fields in number order, proto3 defaults omitted), written
// straight from the core types. Why: it runs on the engine's writer for
// every commit, and building then destroying a message tree cost ~15% of
// the writer's time at 100+ mutations per commit (5+ heap allocations per
// mutation); this allocates only `out`. Parse with JournalRecord as before.
void AppendJournalRecord(uint64_t commit_id, const std::vector<const core::Mutation*>& mutations,
                         std::string* out);

}  // namespace ruleplane::txn
