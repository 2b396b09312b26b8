// BpfSkeleton<T>: the owner of one bpftool-generated skeleton `T` (katran's
// BpfSkeleton pattern, STYLE.md section 5).
//
// Owns: the skeleton struct and through it the bpf_object, its programs and
// maps (T::destroy closes them all). Move-only. Not thread-safe: the owner
// (the engine thread) is its only caller.
//
// Lifecycle: Open() parses the embedded ELF (no kernel objects exist yet);
// the caller then sets rodata config and pin paths through get(); Load()
// creates maps (or adopts pinned ones) and verifies and loads the programs.
// Attaching is the caller's separate step (see tc_hook.h).
#pragma once

#include <bpf/libbpf.h>

#include <cerrno>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "agent/kernel/bpf/errors.h"
#include "agent/kernel/bpf/libbpf_log.h"

namespace ruleplane::kernel::bpf {

// Bytes of the verifier log kept per program during Load(). Kernels >= 6.4
// rotate the log and keep its tail, which is where the rejection reason is.
inline constexpr size_t kVerifierLogBytes = 1 << 20;
// Bytes of that tail quoted in a Status message.
inline constexpr size_t kVerifierLogQuoteBytes = 2048;

template <typename T>
class BpfSkeleton {
 public:
  BpfSkeleton(BpfSkeleton&&) noexcept = default;
  BpfSkeleton& operator=(BpfSkeleton&&) noexcept = default;
  BpfSkeleton(const BpfSkeleton&) = delete;
  BpfSkeleton& operator=(const BpfSkeleton&) = delete;
  ~BpfSkeleton() = default;

  // Opens the object embedded in the skeleton. `name` only labels messages.
  static absl::StatusOr<BpfSkeleton> Open(absl::string_view name, const bpf_object_open_opts* opts = nullptr) {
    RouteLibbpfLogsToGlog();
    errno = 0;
    T* skel = T::open(opts);
    if (skel == nullptr) {
      // libbpf >= 1.0 returns NULL and sets errno.
      return BpfError(errno != 0 ? errno : EINVAL, absl::StrCat("open bpf skeleton ", name));
    }
    return BpfSkeleton(std::string(name), skel);
  }

  // Creates or adopts the maps and loads every program. A verifier rejection
  // is Internal (the program is ours) and quotes the end of the verifier log;
  // a pinned map that cannot be reused surfaces as libbpf reports it (callers
  // that pin should check compatibility first for a clearer message).
  [[nodiscard]] absl::Status Load() {
    if (loaded_) return absl::FailedPreconditionError(absl::StrCat("bpf skeleton ", name_, " already loaded"));
    std::vector<std::string> logs;
    std::vector<bpf_program*> programs;
    bpf_program* prog = nullptr;
    bpf_object__for_each_program(prog, obj()) { programs.push_back(prog); }
    logs.resize(programs.size());
    for (size_t i = 0; i < programs.size(); ++i) {
      logs[i].assign(kVerifierLogBytes, '\0');
      // libbpf asks for a log only if the first load attempt fails.
      bpf_program__set_log_buf(programs[i], logs[i].data(), logs[i].size());
    }
    const int err = T::load(skel_.get());
    for (bpf_program* p : programs) bpf_program__set_log_buf(p, nullptr, 0);
    if (err == 0) {
      loaded_ = true;
      return absl::OkStatus();
    }
    for (size_t i = 0; i < programs.size(); ++i) {
      const std::string log(logs[i].c_str());
      if (bpf_program__fd(programs[i]) >= 0 || log.empty()) continue;
      const size_t from = log.size() > kVerifierLogQuoteBytes ? log.size() - kVerifierLogQuoteBytes : 0;
      // ENOSPC only says the log outgrew the buffer (the kernel keeps its
      // tail); the rejection itself is in the log.
      const std::string why = err == -ENOSPC ? "log truncated" : ErrnoText(-err);
      return absl::InternalError(absl::StrCat("load bpf skeleton ", name_, ": verifier rejected program ",
                                              bpf_program__name(programs[i]), " (", why,
                                              "); verifier log tail:\n", log.substr(from)));
    }
    return BpfError(err, absl::StrCat("load bpf skeleton ", name_));
  }

  T* get() const { return skel_.get(); }
  T* operator->() const { return skel_.get(); }
  bpf_object* obj() const { return skel_->obj; }
  const std::string& name() const { return name_; }
  bool loaded() const { return loaded_; }

 private:
  struct Destroyer {
    void operator()(T* skel) const { T::destroy(skel); }
  };

  BpfSkeleton(std::string name, T* skel) : name_(std::move(name)), skel_(skel) {}

  std::string name_;
  std::unique_ptr<T, Destroyer> skel_;
  bool loaded_ = false;
};

}  // namespace ruleplane::kernel::bpf
