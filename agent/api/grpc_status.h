// The one conversion between absl::Status and grpc::Status (codes 1:1).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace ruleplane::api {

grpc::Status ToGrpcStatus(const absl::Status& s);

}  // namespace ruleplane::api
