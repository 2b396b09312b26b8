#include "agent/txn/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "agent/common/status_macros.h"
#include "agent/txn/state_proto.h"
#include "ruleplane/v1/state.pb.h"

namespace ruleplane::txn {
namespace {

constexpr char kSnapshot[] = "checkpoint.pb";
constexpr char kJournal[] = "journal.log";
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kMinCompactBytes = 4 << 20;

absl::Status Errno(absl::string_view what, const std::string& path) {
  int err = errno;
  return absl::ErrnoToStatus(err, absl::StrCat(what, " ", path));
}

absl::Status WriteAll(int fd, const char* data, size_t len, const std::string& path) {
  while (len > 0) {
    ssize_t n = ::write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("write", path);
    }
    data += n;
    len -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Errno("open", path);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("read", path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

void PutU32(std::string& s, uint32_t v) {
  char b[4];
  std::memcpy(b, &v, 4);
  s.append(b, 4);
}
uint32_t GetU32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void SetU32(char* p, uint32_t v) { std::memcpy(p, &v, 4); }
uint32_t Crc(absl::string_view s) {
  return static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
}

absl::Status FsyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Errno("open directory", dir);
  if (::fsync(fd.get()) != 0) return Errno("fsync directory", dir);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& dir, Options options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("state dir ", dir, ": cannot create: ", ec.message()));
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(absl::StrCat("state dir ", dir, " is not a directory"));
  }
  ::chmod(dir.c_str(), 0700);
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("state dir ", dir, " is not writable: ", std::strerror(errno)));
  }
  auto store = std::unique_ptr<StateStore>(new StateStore(dir, options));
  return store;
}

absl::Status StateStore::OpenJournal() {
  if (journal_.valid()) return absl::OkStatus();
  std::string path = absl::StrCat(dir_, "/", kJournal);
  journal_.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!journal_.valid()) return Errno("open journal", path);
  struct stat st {};
  if (::fstat(journal_.get(), &st) == 0) journal_bytes_ = static_cast<size_t>(st.st_size);
  return absl::OkStatus();
}

StateStore::Loaded StateStore::Load() {
  Loaded out;
  std::string snap_path = absl::StrCat(dir_, "/", kSnapshot);
  std::string journal_path = absl::StrCat(dir_, "/", kJournal);
  auto add_problem = [&out](std::string p) {
    if (!out.problem.empty()) out.problem += "; ";
    out.problem += p;
  };

  if (auto data = ReadFile(snap_path); data.ok()) {
    out.found = true;
    snapshot_bytes_ = data->size();
    v1::Checkpoint cp;
    if (data->size() < 8 || GetU32(data->data()) != data->size() - 8 ||
        GetU32(data->data() + 4) != Crc(data->substr(8)) || !cp.ParseFromString(data->substr(8))) {
      out.corrupt = true;
      add_problem(absl::StrCat("checkpoint ", snap_path, " is corrupt (", data->size(), " bytes)"));
    } else if (cp.format_version() != kFormatVersion) {
      out.corrupt = true;
      add_problem(absl::StrCat("checkpoint ", snap_path, " has unknown format version ", cp.format_version()));
    } else {
      for (const v1::Attachment& pa : cp.attachments()) {
        auto a = FromProto(pa);
        if (!a.ok()) {
          add_problem(absl::StrCat("checkpoint entry ", pa.container_id(), " dropped: ", a.status().message()));
          continue;
        }
        if (absl::Status s = out.state.Apply(core::Mutation::Upsert(*std::move(a))); !s.ok()) {
          add_problem(absl::StrCat("checkpoint entry ", pa.container_id(), " dropped: ", s.message()));
        }
      }
    }
  } else if (!absl::IsNotFound(data.status())) {
    out.corrupt = true;
    add_problem(std::string(data.status().message()));
  }
  if (out.corrupt) {
    // A journal without its base snapshot cannot be replayed meaningfully.
    return out;
  }

  if (auto data = ReadFile(journal_path); data.ok()) {
    if (!data->empty()) out.found = true;
    size_t pos = 0;
    while (pos + 8 <= data->size()) {
      uint32_t len = GetU32(data->data() + pos);
      uint32_t crc = GetU32(data->data() + pos + 4);
      if (pos + 8 + len > data->size()) break;  // torn tail
      std::string body = data->substr(pos + 8, len);
      v1::JournalRecord rec;
      if (Crc(body) != crc || !rec.ParseFromString(body)) break;
      for (const v1::Mutation& pm : rec.mutations()) {
        auto m = FromProto(pm);
        if (!m.ok()) continue;
        // Already validated when committed; a failure here means the
        // snapshot and journal disagree: keep going, report it.
        if (absl::Status s = out.state.Apply(*m); !s.ok()) {
          add_problem(absl::StrCat("journal record ", rec.commit_id(), ": ", s.message()));
        }
      }
      ++out.journal_records;
      pos += 8 + len;
    }
    if (pos != data->size()) {
      add_problem(absl::StrCat("journal ", journal_path, ": dropped ", data->size() - pos,
                               " bytes of unacknowledged tail"));
      // Cut the tail so new records are not appended after garbage.
      if (::truncate(journal_path.c_str(), static_cast<off_t>(pos)) != 0) {
        add_problem(absl::StrCat("truncate ", journal_path, ": ", std::strerror(errno)));
      }
    }
    journal_bytes_ = pos;
  }
  return out;
}

absl::Status StateStore::Append(uint64_t commit_id, const std::vector<const core::Mutation*>& mutations) {
  RETURN_IF_ERROR(OpenJournal());
  // [u32 length][u32 crc32][JournalRecord], the record encoded in place
  // after an 8-byte header that is filled in once its length is known.
  std::string path = absl::StrCat(dir_, "/", kJournal);
  if (journal_damaged_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "append to journal ", path, ": a failed append could not be cut off; a snapshot must replace it first"));
  }
  std::string framed(8, '\0');
  AppendJournalRecord(commit_id, mutations, &framed);
  SetU32(framed.data(), static_cast<uint32_t>(framed.size() - 8));
  SetU32(framed.data() + 4, Crc(absl::string_view(framed).substr(8)));
  absl::Status s = WriteAll(journal_.get(), framed.data(), framed.size(), path);
  // Without sync_journal the record is in the page cache now: it survives
  // the agent's death, which is what it is for (file comment in checkpoint.h).
  if (s.ok() && options_.sync_journal && ::fdatasync(journal_.get()) != 0) s = Errno("fdatasync", path);
  if (!s.ok()) {
    // A write that failed part-way (ENOSPC, EFBIG, EIO) may have left part
    // of the record in the file. Later records would land after it and
    // Load() stops at the first bad record, so everything appended after a
    // failure would be lost on restart. Cut the file back to the last good
    // record; the caller was told this commit is not persisted.
    if (::ftruncate(journal_.get(), static_cast<off_t>(journal_bytes_)) != 0) {
      journal_damaged_ = true;  // refuse appends until WriteSnapshot() truncates the journal
      return absl::Status(s.code(), absl::StrCat(s.message(), "; cutting the journal back to ", journal_bytes_,
                                                 " bytes failed too: ", std::strerror(errno)));
    }
    return s;
  }
  journal_bytes_ += framed.size();
  return absl::OkStatus();
}

absl::Status StateStore::WriteSnapshot(const core::DesiredState& state) {
  v1::Checkpoint cp;
  cp.set_format_version(kFormatVersion);
  for (const auto& [key, a] : state.attachments()) *cp.add_attachments() = ToProto(a);
  std::string body = cp.SerializeAsString();
  std::string framed;
  PutU32(framed, static_cast<uint32_t>(body.size()));
  PutU32(framed, Crc(body));
  framed += body;

  std::string path = absl::StrCat(dir_, "/", kSnapshot);
  std::string tmp = path + ".tmp";
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.valid()) return Errno("open", tmp);
    RETURN_IF_ERROR(WriteAll(fd.get(), framed.data(), framed.size(), tmp));
    if (::fsync(fd.get()) != 0) return Errno("fsync", tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Errno("rename", tmp);
  RETURN_IF_ERROR(FsyncDir(dir_));
  snapshot_bytes_ = framed.size();
  // The snapshot now contains everything in the journal.
  RETURN_IF_ERROR(OpenJournal());
  if (::ftruncate(journal_.get(), 0) != 0) return Errno("truncate", absl::StrCat(dir_, "/", kJournal));
  journal_bytes_ = 0;
  journal_damaged_ = false;
  if (::fdatasync(journal_.get()) != 0) return Errno("fdatasync", absl::StrCat(dir_, "/", kJournal));
  return absl::OkStatus();
}

bool StateStore::ShouldCompact() const {
  return journal_bytes_ > kMinCompactBytes && journal_bytes_ > snapshot_bytes_;
}

}  // namespace ruleplane::txn
