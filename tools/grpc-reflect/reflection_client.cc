#include "tools/grpc-reflect/reflection_client.h"

#include <grpcpp/generic/generic_stub.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"

namespace ruleplane::tools {
namespace {

namespace refl = grpc::reflection::v1alpha;

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), absl::StrCat(what, ": ", s.error_message()));
}

std::chrono::system_clock::time_point Deadline(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoMilliseconds(d);
}

}  // namespace

std::shared_ptr<grpc::Channel> DialUnix(const std::string& socket_path) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_SERVICE_CONFIG_DISABLE_RESOLUTION, 1);
  return grpc::CreateCustomChannel("unix:" + socket_path, grpc::InsecureChannelCredentials(), args);
}

ReflectionClient::ReflectionClient(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
    : channel_(std::move(channel)), timeout_(timeout) {}

absl::StatusOr<std::vector<std::string>> ReflectionClient::ListServices() {
  auto stub = refl::ServerReflection::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(timeout_));
  auto stream = stub->ServerReflectionInfo(&ctx);
  refl::ServerReflectionRequest req;
  req.set_list_services("*");
  refl::ServerReflectionResponse resp;
  if (!stream->Write(req) || !stream->Read(&resp)) {
    stream->WritesDone();
    return FromGrpc(stream->Finish(), "reflection list_services");
  }
  stream->WritesDone();
  grpc::Status done = stream->Finish();
  if (resp.has_error_response()) {
    return absl::Status(static_cast<absl::StatusCode>(resp.error_response().error_code()),
                        "reflection list_services: " + resp.error_response().error_message());
  }
  std::vector<std::string> out;
  for (const auto& s : resp.list_services_response().service()) out.push_back(s.name());
  return out;
}

absl::StatusOr<std::vector<std::string>> ReflectionClient::FileDescriptorsFor(const std::string& kind,
                                                                              const std::string& what) {
  auto stub = refl::ServerReflection::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(timeout_));
  auto stream = stub->ServerReflectionInfo(&ctx);
  refl::ServerReflectionRequest req;
  if (kind == "symbol") {
    req.set_file_containing_symbol(what);
  } else {
    req.set_file_by_filename(what);
  }
  refl::ServerReflectionResponse resp;
  bool got = stream->Write(req) && stream->Read(&resp);
  stream->WritesDone();
  grpc::Status st = stream->Finish();
  if (!got) return FromGrpc(st.ok() ? grpc::Status(grpc::StatusCode::UNKNOWN, "no answer") : st,
                            absl::StrCat("reflection ", kind, " ", what));
  if (resp.has_error_response()) {
    return absl::Status(static_cast<absl::StatusCode>(resp.error_response().error_code()),
                        absl::StrCat("reflection ", kind, " ", what, ": ", resp.error_response().error_message()));
  }
  const auto& files = resp.file_descriptor_response().file_descriptor_proto();
  return std::vector<std::string>(files.begin(), files.end());
}

absl::Status ReflectionClient::AddFiles(const std::vector<std::string>& serialized) {
  for (const std::string& bytes : serialized) {
    google::protobuf::FileDescriptorProto fd;
    if (!fd.ParseFromString(bytes)) return absl::DataLossError("reflection: unparsable FileDescriptorProto");
    if (pool_.FindFileByName(fd.name()) == nullptr) pending_[fd.name()] = bytes;
  }
  return absl::OkStatus();
}

// Builds `name` after its dependencies; asks the server for any dependency
// it did not send along.
absl::Status ReflectionClient::BuildFile(const std::string& name) {
  if (pool_.FindFileByName(name) != nullptr) return absl::OkStatus();
  auto it = pending_.find(name);
  if (it == pending_.end()) {
    absl::StatusOr<std::vector<std::string>> more = FileDescriptorsFor("file", name);
    if (!more.ok()) return more.status();
    if (absl::Status s = AddFiles(*more); !s.ok()) return s;
    it = pending_.find(name);
    if (it == pending_.end()) return absl::NotFoundError(absl::StrCat("reflection: server did not send ", name));
  }
  google::protobuf::FileDescriptorProto fd;
  fd.ParseFromString(it->second);
  pending_.erase(it);
  for (const std::string& dep : fd.dependency()) {
    if (absl::Status s = BuildFile(dep); !s.ok()) return s;
  }
  if (pool_.BuildFile(fd) == nullptr) return absl::InternalError(absl::StrCat("reflection: cannot build ", name));
  return absl::OkStatus();
}

absl::StatusOr<const google::protobuf::ServiceDescriptor*> ReflectionClient::FindService(const std::string& service) {
  if (const auto* s = pool_.FindServiceByName(service)) return s;
  absl::StatusOr<std::vector<std::string>> files = FileDescriptorsFor("symbol", service);
  if (!files.ok()) return files.status();
  if (files->empty()) return absl::NotFoundError(absl::StrCat("service ", service, ": no descriptor"));
  if (absl::Status s = AddFiles(*files); !s.ok()) return s;
  google::protobuf::FileDescriptorProto first;
  first.ParseFromString(files->front());  // the file defining the symbol comes first
  if (absl::Status s = BuildFile(first.name()); !s.ok()) return s;
  for (const std::string& bytes : *files) {
    google::protobuf::FileDescriptorProto fd;
    fd.ParseFromString(bytes);
    if (absl::Status s = BuildFile(fd.name()); !s.ok()) return s;
  }
  if (const auto* s = pool_.FindServiceByName(service)) return s;
  return absl::NotFoundError(absl::StrCat("service ", service, " not found"));
}

absl::StatusOr<const google::protobuf::MethodDescriptor*> ReflectionClient::FindMethod(const std::string& name) {
  std::string full = name;
  size_t slash = full.rfind('/');
  if (slash == std::string::npos) slash = full.rfind('.');
  if (slash == std::string::npos || slash == 0) {
    return absl::InvalidArgumentError(absl::StrCat("\"", name, "\": want Service/Method"));
  }
  std::string service = full.substr(0, slash);
  std::string method = full.substr(slash + 1);
  absl::StatusOr<const google::protobuf::ServiceDescriptor*> svc = FindService(service);
  if (!svc.ok()) return svc.status();
  const google::protobuf::MethodDescriptor* m = (*svc)->FindMethodByName(method);
  if (m == nullptr) return absl::NotFoundError(absl::StrCat("service ", service, " has no method ", method));
  return m;
}

absl::Status ReflectionClient::Call(const google::protobuf::MethodDescriptor* method, const std::string& json_request,
                                    absl::Duration deadline, size_t max_responses,
                                    const std::function<bool(const std::string& json)>& on_response) {
  if (method->client_streaming()) {
    return absl::UnimplementedError(absl::StrCat(method->full_name(), ": client streaming is not supported"));
  }
  std::unique_ptr<google::protobuf::Message> request(factory_.GetPrototype(method->input_type())->New());
  if (!json_request.empty()) {
    auto st = google::protobuf::util::JsonStringToMessage(json_request, request.get());
    if (!st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("request for ", method->full_name(), ": ", std::string(st.message())));
    }
  }
  std::string bytes;
  request->SerializeToString(&bytes);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer send(&slice, 1);

  // The generic stub speaks bytes; one bidi call shape carries unary and
  // server-streaming methods alike (one message out, half-close, read all).
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(deadline));
  const std::string path = absl::StrCat("/", method->service()->full_name(), "/", method->name());
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = stub.PrepareCall(&ctx, path, &cq);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](void* want) { return cq.Next(&tag, &ok) && tag == want && ok; };
  call->StartCall(reinterpret_cast<void*>(1));
  bool alive = step(reinterpret_cast<void*>(1));
  if (alive) {
    call->Write(send, reinterpret_cast<void*>(2));
    alive = step(reinterpret_cast<void*>(2));
  }
  if (alive) {
    call->WritesDone(reinterpret_cast<void*>(3));
    alive = step(reinterpret_cast<void*>(3));
  }
  size_t received = 0;
  bool stopped_by_us = false;
  while (alive) {
    grpc::ByteBuffer buf;
    call->Read(&buf, reinterpret_cast<void*>(4));
    if (!step(reinterpret_cast<void*>(4))) break;
    std::vector<grpc::Slice> slices;
    (void)buf.Dump(&slices);  // a ByteBuffer from the library is always dumpable
    std::string data;
    for (const grpc::Slice& s : slices) data.append(reinterpret_cast<const char*>(s.begin()), s.size());
    std::unique_ptr<google::protobuf::Message> resp(factory_.GetPrototype(method->output_type())->New());
    if (!resp->ParseFromString(data)) {
      ctx.TryCancel();
      return absl::DataLossError(absl::StrCat(method->full_name(), ": unparsable response"));
    }
    std::string json;
    google::protobuf::util::JsonPrintOptions o;
    o.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(*resp, &json, o);  // a parsed message always prints
    ++received;
    if (!on_response(json) || (max_responses && received >= max_responses)) {
      stopped_by_us = true;
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(5)) {
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (stopped_by_us) return absl::OkStatus();
  return FromGrpc(status, method->full_name());
}

}  // namespace ruleplane::tools
