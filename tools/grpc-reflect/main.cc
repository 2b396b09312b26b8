// grpc-reflect: a grpcurl stand-in for the agent's unix socket, built on the
// server reflection service only (grpcurl is not packaged for Debian 12).
//
//   grpc-reflect [--socket PATH] list                      services
//   grpc-reflect [--socket PATH] describe SERVICE          methods and types
//   grpc-reflect [--socket PATH] [--data JSON] [--max N] call SERVICE/METHOD
//
// `call` prints each response as one JSON line (server streams: until the
// server ends it, --max responses, or --timeout). Exit codes: 0 ok, 1 the
// server answered with an error, 2 usage, 3 not reachable.
#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "tools/grpc-reflect/reflection_client.h"

ABSL_FLAG(std::string, socket, "/run/ruleplane/ruleplane.sock", "unix socket of the gRPC server");
ABSL_FLAG(std::string, data, "", "call: request as JSON (protobuf JSON mapping); empty = default message");
ABSL_FLAG(uint32_t, max, 0, "call: stop after this many responses (0 = until the server ends the call)");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(10), "deadline of each call");

namespace {

constexpr int kOk = 0, kFailed = 1, kUsage = 2, kUnreachable = 3;

int Fail(const absl::Status& s) {
  bool unreachable = s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kDeadlineExceeded;
  std::fprintf(stderr, "grpc-reflect: %s\n", std::string(s.message()).c_str());
  return unreachable ? kUnreachable : kFailed;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "grpc-reflect [--socket PATH] list | describe SERVICE | [--data JSON] [--max N] call SERVICE/METHOD");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() < 2) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return kUsage;
  }
  ruleplane::tools::ReflectionClient client(ruleplane::tools::DialUnix(absl::GetFlag(FLAGS_socket)),
                                            absl::GetFlag(FLAGS_timeout));
  const std::string cmd = rest[1];
  if (cmd == "list" && rest.size() == 2) {
    absl::StatusOr<std::vector<std::string>> services = client.ListServices();
    if (!services.ok()) return Fail(services.status());
    for (const std::string& s : *services) std::cout << s << "\n";
    return kOk;
  }
  if (cmd == "describe" && rest.size() == 3) {
    auto svc = client.FindService(rest[2]);
    if (!svc.ok()) return Fail(svc.status());
    std::cout << "service " << (*svc)->full_name() << " (" << (*svc)->file()->name() << ")\n";
    for (int i = 0; i < (*svc)->method_count(); ++i) {
      const auto* m = (*svc)->method(i);
      std::cout << "  rpc " << m->name() << "(" << (m->client_streaming() ? "stream " : "")
                << m->input_type()->full_name() << ") returns (" << (m->server_streaming() ? "stream " : "")
                << m->output_type()->full_name() << ")\n";
    }
    return kOk;
  }
  if (cmd == "call" && rest.size() == 3) {
    auto method = client.FindMethod(rest[2]);
    if (!method.ok()) return Fail(method.status());
    absl::Status s = client.Call(*method, absl::GetFlag(FLAGS_data), absl::GetFlag(FLAGS_timeout),
                                 absl::GetFlag(FLAGS_max), [](const std::string& json) {
                                   std::cout << json << std::endl;  // flushed: streams are followed live
                                   return true;
                                 });
    return s.ok() ? kOk : Fail(s);
  }
  std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
  return kUsage;
}
