#include "agent/kernel/nft/netlink_nft_port.h"

#include <cerrno>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "agent/common/status_macros.h"
#include "agent/kernel/nft/dump.h"
#include "agent/kernel/nft/encode.h"
#include "agent/kernel/nft/objects.h"
#include "agent/kernel/nl/batch.h"
#include "agent/kernel/nl/errors.h"
#include "glog/logging.h"

namespace ruleplane::kernel::nft {
namespace {

const std::vector<render::Element>* OpElements(const render::Op& op) {
  if (const auto* add = std::get_if<render::op::AddElements>(&op)) return &add->elements;
  if (const auto* del = std::get_if<render::op::DeleteElements>(&op)) return &del->elements;
  return nullptr;
}

// " element 3 (10.0.0.7)"
std::string ElementText(const render::Op& op, size_t index) {
  const std::vector<render::Element>* elements = OpElements(op);
  if (elements == nullptr || index >= elements->size()) return absl::StrCat(" element ", index);
  const render::Element& e = (*elements)[index];
  std::string text =
      e.text.empty()
          ? absl::StrCat("0x", absl::BytesToHexString(absl::string_view(
                                   reinterpret_cast<const char*>(e.key.data()), e.key.size())))
          : e.text;
  return absl::StrCat(" element ", index, " (", text, ")");
}

// Errno values that mean "this kernel cannot do nf_tables at all".
bool MeansNoNfTables(int err) {
  return err == EOPNOTSUPP || err == EPROTONOSUPPORT || err == EAFNOSUPPORT || err == EINVAL ||
         err == ENOENT;
}

}  // namespace

NetlinkNftPort::NetlinkNftPort(Options options, std::unique_ptr<nl::NetlinkSocket> socket)
    : options_(std::move(options)), socket_(std::move(socket)) {}

NetlinkNftPort::~NetlinkNftPort() = default;

absl::StatusOr<std::unique_ptr<NetlinkNftPort>> NetlinkNftPort::Create(const Options& options) {
  absl::StatusOr<std::unique_ptr<nl::NetlinkSocket>> socket =
      nl::NetlinkSocket::OpenNetfilter(options.netns_path);
  if (!socket.ok()) {
    if (absl::IsUnimplemented(socket.status())) {
      // socket(AF_NETLINK, ..., NETLINK_NETFILTER) -> EPROTONOSUPPORT.
      return absl::FailedPreconditionError(
          absl::StrCat("kernel has no nfnetlink support (modprobe nfnetlink nf_tables?): ",
                       socket.status().message()));
    }
    return socket.status();
  }
  return std::unique_ptr<NetlinkNftPort>(new NetlinkNftPort(options, *std::move(socket)));
}

uint32_t NetlinkNftPort::portid() const { return socket_->portid(); }

absl::StatusOr<uint32_t> NetlinkNftPort::Generation() { return ReadGeneration(*socket_); }

absl::Status NetlinkNftPort::Probe() {
  absl::StatusOr<uint32_t> generation = Generation();
  if (generation.ok()) return absl::OkStatus();
  const std::optional<int> err = nl::StatusErrno(generation.status());
  if (err && (*err == EPERM || *err == EACCES)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "no CAP_NET_ADMIN over the target network namespace: nf_tables refuses netlink requests (",
        generation.status().message(), ")"));
  }
  if (err && MeansNoNfTables(*err)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "kernel has no nf_tables support (modprobe nf_tables?): ", generation.status().message()));
  }
  return generation.status();
}

txn::CommitReport NetlinkNftPort::Commit(const render::Plan& plan) {
  txn::CommitReport report;
  if (plan.empty()) return report;

  report.errors = ValidatePlan(plan);
  if (!report.errors.empty()) {
    const absl::Status& first = report.errors.front().status;
    report.status =
        absl::InvalidArgumentError(absl::StrCat("commit nft batch not sent, ", report.errors.size(),
                                                " invalid op(s); first: ", first.message()));
    return report;
  }

  absl::StatusOr<std::unique_ptr<nl::Batch>> batch = nl::Batch::Create(socket_->PeekSeq());
  if (!batch.ok()) {
    report.status = batch.status();
    return report;
  }
  absl::Status encoded = EncodePlan(plan, EncodeOptions{options_.max_message_bytes}, **batch);
  if (encoded.ok()) encoded = (*batch)->Finish();
  if (!encoded.ok()) {
    report.status = encoded;
    return report;
  }
  report.messages = (*batch)->message_count();

  nl::BatchResult result = nl::SendBatch(*socket_, **batch);
  report.bytes = result.bytes_sent;
  report.outcome_unknown = result.outcome_unknown;

  absl::Status batch_error;  // failure of the batch as a whole (no op to blame)
  for (const nl::MessageError& error : result.errors) {
    std::string text = nl::ErrnoText(error.error);
    if (!error.extack_message.empty())
      absl::StrAppend(&text, " (extack: ", error.extack_message, ")");
    if (error.tag == nullptr) {
      absl::Status status = nl::KernelError(
          error.error, absl::StrCat("commit nft batch seq=", error.seq, " (whole batch): ", text));
      nl::SetSeqPayload(status, error.seq);
      if (batch_error.ok()) batch_error = status;
      continue;
    }
    const size_t op_index = error.tag->op_index;
    const render::Op& op = plan.ops[op_index];
    std::string element = error.element_index ? ElementText(op, *error.element_index) : "";
    absl::Status status = nl::KernelError(
        error.error, absl::StrCat("commit nft batch seq=", error.seq, " op=", OpSummaryIn(plan, op),
                                  element, ": ", text));
    nl::SetSeqPayload(status, error.seq);
    nl::SetOpIndexPayload(status, op_index);
    report.errors.push_back(txn::OpError{op_index, error.element_index, std::move(status)});
  }

  if (result.outcome_unknown) {
    report.status = result.transport;
  } else if (!report.errors.empty()) {
    const absl::Status& first = report.errors.front().status;
    report.status =
        report.errors.size() == 1
            ? first
            : absl::Status(first.code(),
                           absl::StrCat("commit nft batch rejected, ", report.errors.size(),
                                        " ops failed; first: ", first.message()));
    if (report.errors.size() > 1) {
      first.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) {
        report.status.SetPayload(url, payload);
      });
    }
  } else if (!batch_error.ok()) {
    report.status = batch_error;
  } else {
    report.status = result.transport;
  }

  if (result.generation) {
    report.generation = *result.generation;
  } else {
    // No echoed NEWGEN (rejected batch, or an older kernel): ask. 0 = unknown.
    absl::StatusOr<uint32_t> generation = Generation();
    if (generation.ok()) report.generation = *generation;
  }

  VLOG(1) << "commit nft batch seq=" << (*batch)->begin_seq() << " ops=" << plan.ops.size()
          << " messages=" << report.messages << " bytes=" << report.bytes
          << " generation=" << report.generation << (result.generation ? " (echoed)" : " (getgen)")
          << " result=" << report.status;
  return report;
}

absl::StatusOr<txn::KernelTable> NetlinkNftPort::Dump(std::string_view table, uint32_t family) {
  if (dump_socket_ == nullptr) {
    ASSIGN_OR_RETURN(dump_socket_, nl::NetlinkSocket::OpenNetfilter(options_.netns_path));
    // Element dumps of large sets arrive in many datagrams; a roomy queue
    // avoids needless round trips. Best effort.
    absl::StatusOr<size_t> rcvbuf = dump_socket_->EnsureReceiveBuffer(4 * 1024 * 1024);
    if (!rcvbuf.ok()) VLOG(1) << "dump socket: " << rcvbuf.status();
  }
  absl::StatusOr<txn::KernelTable> result = DumpTable(*dump_socket_, table, family);
  // After a failure the socket may still hold parts of the aborted dump.
  if (!result.ok()) dump_socket_.reset();
  return result;
}

}  // namespace ruleplane::kernel::nft
