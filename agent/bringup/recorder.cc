#include "agent/bringup/recorder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/coexist/proc_info.h"
#include "agent/common/unique_fd.h"
#include "google/protobuf/util/json_util.h"

namespace ruleplane::bringup {
namespace {

constexpr char kHistoryFile[] = "bringup-history.json";

const char* StatusName(PhaseStatus s) {
  switch (s) {
    case PhaseStatus::kOk: return "ok";
    case PhaseStatus::kFailed: return "failed";
    case PhaseStatus::kSkipped: return "skipped";
  }
  return "ok";
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("write bring-up history: open ", tmp));
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, absl::StrCat("write bring-up history: write ", tmp));
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("write bring-up history: fsync ", tmp));
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("write bring-up history: rename to ", path));
  }
  return absl::OkStatus();
}

}  // namespace

double BootSecondsNow() {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

BringupRecorder::BringupRecorder(Options options) : options_(std::move(options)) {
  const double now_boot = BootSecondsNow();
  const absl::Time now = absl::Now();
  process_start_boot_ = now_boot;  // fallback: when /proc cannot tell
  std::optional<std::string> stat = coexist::ReadSmallFile(options_.proc_root + "/self/stat", 4096);
  std::optional<coexist::ProcStat> ps = stat ? coexist::ParseProcStat(*stat) : std::nullopt;
  const long ticks = sysconf(_SC_CLK_TCK);
  if (ps && ticks > 0) process_start_boot_ = static_cast<double>(ps->start_ticks) / static_cast<double>(ticks);
  std::optional<std::string> boot_id = coexist::ReadSmallFile(options_.proc_root + "/sys/kernel/random/boot_id", 64);
  boot_id_ = boot_id ? std::string(absl::StripAsciiWhitespace(*boot_id)) : "";

  absl::MutexLock lock(&mu_);
  current_.set_id(absl::StrCat(boot_id_.substr(0, 8), "-", getpid(), "-", ps ? ps->start_ticks : 0));
  current_.set_boot_id(boot_id_);
  current_.set_pid(getpid());
  current_.set_process_start_since_boot_seconds(process_start_boot_);
  current_.set_process_start_unix_us(
      absl::ToUnixMicros(now - absl::Seconds(now_boot - process_start_boot_)));
  current_.set_version(options_.version);
  current_.set_first_since_boot(true);
  current_.set_outcome("running");
}

absl::Status BringupRecorder::AttachStateDir(const std::string& state_dir, size_t keep) {
  const std::string path = absl::StrCat(state_dir, "/", kHistoryFile);
  v1::BringupHistory history;
  absl::Status problem;
  if (std::optional<std::string> text = coexist::ReadSmallFile(path, 16 << 20)) {
    google::protobuf::util::JsonParseOptions o;
    o.ignore_unknown_fields = true;  // written by a newer version
    auto st = google::protobuf::util::JsonStringToMessage(*text, &history, o);
    if (!st.ok()) {
      history.Clear();
      problem = absl::DataLossError(
          absl::StrCat("bring-up history ", path, " is unreadable (", std::string(st.message()), "); starting anew"));
    }
  }
  absl::MutexLock lock(&mu_);
  history_path_ = path;
  keep_ = keep == 0 ? 1 : keep;
  previous_.clear();
  for (const v1::BringupReport& r : history.reports()) {
    if (r.id() == current_.id()) continue;
    previous_.push_back(r);
    if (!boot_id_.empty() && r.boot_id() == boot_id_) current_.set_first_since_boot(false);
  }
  return problem;
}

void BringupRecorder::Observe(const v1::BringupPhase& p) {
  if (options_.registry == nullptr) return;
  options_.registry
      ->GetGauge("ruleplane_bringup_phase_seconds",
                 "Duration of each phase of this agent start; for events (ready, API server reachable, first "
                 "CNI ADD served) the time since process start.",
                 {{"phase", p.name()}})
      ->Set(p.end_seconds() != p.start_seconds() ? p.end_seconds() - p.start_seconds() : p.end_seconds());
}

int BringupRecorder::Begin(const std::string& name, const std::string& detail) {
  const double now = BootSecondsNow();
  absl::MutexLock lock(&mu_);
  v1::BringupPhase* p = current_.add_phases();
  p->set_name(name);
  p->set_status("running");
  p->set_detail(detail);
  p->set_start_seconds(SinceProcessStart(now));
  p->set_end_seconds(SinceProcessStart(now));
  p->set_start_since_boot_seconds(now);
  return current_.phases_size() - 1;
}

void BringupRecorder::End(int id, PhaseStatus status, const std::string& detail) {
  const double now = BootSecondsNow();
  v1::BringupPhase copy;
  {
    absl::MutexLock lock(&mu_);
    if (id < 0 || id >= current_.phases_size()) return;
    v1::BringupPhase* p = current_.mutable_phases(id);
    p->set_status(StatusName(status));
    if (!detail.empty()) p->set_detail(detail);
    p->set_end_seconds(SinceProcessStart(now));
    copy = *p;
  }
  Observe(copy);
}

void BringupRecorder::Record(const std::string& name, PhaseStatus status, const std::string& detail,
                             double start_boot, double end_boot) {
  v1::BringupPhase copy;
  {
    absl::MutexLock lock(&mu_);
    v1::BringupPhase* p = current_.add_phases();
    p->set_name(name);
    p->set_status(StatusName(status));
    p->set_detail(detail);
    p->set_start_seconds(SinceProcessStart(start_boot));
    p->set_end_seconds(SinceProcessStart(end_boot));
    p->set_start_since_boot_seconds(start_boot);
    copy = *p;
  }
  Observe(copy);
}

void BringupRecorder::Instant(const std::string& name, PhaseStatus status, const std::string& detail) {
  const double now = BootSecondsNow();
  Record(name, status, detail, now, now);
}

bool BringupRecorder::InstantOnce(const std::string& name, PhaseStatus status, const std::string& detail) {
  {
    absl::MutexLock lock(&mu_);
    for (const v1::BringupPhase& p : current_.phases()) {
      if (p.name() == name) return false;
    }
    // Claim the name under the lock so two racing callers record it once.
    const double now = BootSecondsNow();
    v1::BringupPhase* p = current_.add_phases();
    p->set_name(name);
    p->set_status(StatusName(status));
    p->set_detail(detail);
    p->set_start_seconds(SinceProcessStart(now));
    p->set_end_seconds(SinceProcessStart(now));
    p->set_start_since_boot_seconds(now);
  }
  v1::BringupPhase copy;
  copy.set_name(name);
  copy.set_end_seconds(SinceProcessStart(BootSecondsNow()));
  Observe(copy);
  return true;
}

bool BringupRecorder::Has(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  for (const v1::BringupPhase& p : current_.phases()) {
    if (p.name() == name) return true;
  }
  return false;
}

void BringupRecorder::MarkReady() {
  const double now = BootSecondsNow();
  {
    absl::MutexLock lock(&mu_);
    current_.set_ready_seconds(SinceProcessStart(now));
    current_.set_outcome("ready");
  }
  if (options_.registry != nullptr) {
    options_.registry
        ->GetGauge("ruleplane_bringup_ready_seconds", "Seconds from process start to ready (health SERVING).")
        ->Set(SinceProcessStart(now));
  }
  Instant(kReady);
}

void BringupRecorder::MarkFinished(const std::string& why) {
  const double now = BootSecondsNow();
  absl::MutexLock lock(&mu_);
  current_.set_outcome(current_.ready_seconds() > 0 ? "stopped" : "failed");
  for (v1::BringupPhase& p : *current_.mutable_phases()) {
    if (p.status() != "running") continue;
    p.set_status("failed");
    p.set_detail(p.detail().empty() ? why : absl::StrCat(p.detail(), "; ", why));
    p.set_end_seconds(SinceProcessStart(now));
  }
}

v1::BringupReport BringupRecorder::Current() const {
  const double now = BootSecondsNow();
  absl::MutexLock lock(&mu_);
  v1::BringupReport r = current_;
  // A phase still running lasts "so far": readers see how long it has been
  // waiting, not a zero-length event.
  for (v1::BringupPhase& p : *r.mutable_phases()) {
    if (p.status() == "running") p.set_end_seconds(SinceProcessStart(now));
  }
  return r;
}

std::vector<v1::BringupReport> BringupRecorder::Previous(size_t n) const {
  absl::MutexLock lock(&mu_);
  size_t first = previous_.size() > n ? previous_.size() - n : 0;
  return std::vector<v1::BringupReport>(previous_.begin() + static_cast<long>(first), previous_.end());
}

absl::Status BringupRecorder::Save() {
  absl::MutexLock save_lock(&save_mu_);
  v1::BringupHistory history;
  std::string path;
  {
    absl::MutexLock lock(&mu_);
    if (history_path_.empty()) return absl::OkStatus();
    path = history_path_;
    size_t keep_previous = keep_ - 1;
    size_t first = previous_.size() > keep_previous ? previous_.size() - keep_previous : 0;
    for (size_t i = first; i < previous_.size(); ++i) *history.add_reports() = previous_[i];
    *history.add_reports() = current_;
  }
  // Normally the engine created the state dir already; when a start failed
  // before that (bad kernel, priority collision), create it as it would (0700).
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  std::filesystem::create_directories(dir.parent_path(), ec);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::ErrnoToStatus(errno, absl::StrCat("write bring-up history: mkdir ", dir.string()));
  }
  std::string json;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  auto st = google::protobuf::util::MessageToJsonString(history, &json, o);
  if (!st.ok()) return absl::InternalError(absl::StrCat("encode bring-up history: ", std::string(st.message())));
  return WriteFileAtomically(path, json);
}

}  // namespace ruleplane::bringup
