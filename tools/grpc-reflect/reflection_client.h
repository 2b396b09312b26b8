// ReflectionClient: what grpcurl does, in C++ (grpcurl is not packaged for
// Debian 12). Lists services through the server reflection service
// (grpc.reflection.v1alpha), fetches their file descriptors, and calls any
// unary or server-streaming method generically: JSON in, DynamicMessage,
// bytes on the wire, DynamicMessage, JSON out. No .proto file and no
// generated stub of the called service is needed, which is exactly what
// makes grpcurl work against the agent.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"

namespace ruleplane::tools {

class ReflectionClient {
 public:
  ReflectionClient(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout);

  // Fully qualified names of every service the server exposes.
  absl::StatusOr<std::vector<std::string>> ListServices();

  // The service's descriptor, built from the file descriptors the server
  // sent (its file and transitive dependencies).
  absl::StatusOr<const google::protobuf::ServiceDescriptor*> FindService(const std::string& service);

  // "pkg.Service/Method" or "pkg.Service.Method".
  absl::StatusOr<const google::protobuf::MethodDescriptor*> FindMethod(const std::string& name);

  // Calls `method` with `json_request` (protobuf JSON mapping; "" = empty
  // message). Every response is handed to `on_response` as JSON (one line);
  // returning false, or reaching `max_responses` (0 = no limit), cancels the
  // call and counts as success. Client-streaming methods are refused.
  absl::Status Call(const google::protobuf::MethodDescriptor* method, const std::string& json_request,
                    absl::Duration deadline, size_t max_responses,
                    const std::function<bool(const std::string& json)>& on_response);

 private:
  absl::StatusOr<std::vector<std::string>> FileDescriptorsFor(const std::string& kind, const std::string& what);
  absl::Status AddFiles(const std::vector<std::string>& serialized);
  absl::Status BuildFile(const std::string& name);

  std::shared_ptr<grpc::Channel> channel_;
  absl::Duration timeout_;
  google::protobuf::DescriptorPool pool_;
  google::protobuf::DynamicMessageFactory factory_{&pool_};
  std::map<std::string, std::string> pending_;  // file name -> serialized FileDescriptorProto, not built yet
};

// A channel to `unix:<path>` that fails fast instead of waiting for ready.
std::shared_ptr<grpc::Channel> DialUnix(const std::string& socket_path);

}  // namespace ruleplane::tools
