// StateStore: the desired state on disk, so a restart (or SIGKILL) loses no
// acknowledged mutation.
//
// Layout in the state dir:
//   checkpoint.pb   snapshot (ruleplane.v1.Checkpoint), written to a temp
//                   file, fsynced, renamed over, directory fsynced
//   journal.log     records [u32 length][u32 crc32][JournalRecord] appended
//                   after each successful commit and fdatasynced BEFORE the
//                   commit's waiters are acknowledged
// Why a journal next to the snapshot: rewriting a 100k-attachment snapshot
// after every commit would cost O(state) per commit. The journal is folded
// into a fresh snapshot once it outgrows the snapshot (Compact()).
// A torn journal tail (crash mid-append) is by construction unacknowledged
// and is dropped on load. Engine thread only.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/common/unique_fd.h"
#include "agent/core/desired_state.h"
#include "agent/core/types.h"

namespace ruleplane::txn {

class StateStore {
 public:
  // Creates the directory (0700) if needed and checks it is writable.
  // FailedPrecondition naming the path when it is not.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir);

  struct Loaded {
    bool found = false;       // a snapshot or journal existed
    std::string problem;      // non-empty: what was wrong (corrupt snapshot, torn tail...)
    bool corrupt = false;     // the snapshot could not be used at all
    core::DesiredState state;
    size_t journal_records = 0;
  };
  // Reads snapshot + journal. Never fails on bad content: reports it in
  // `problem`/`corrupt` so the caller can recover from the kernel instead.
  Loaded Load();

  // Appends the mutations of one commit and syncs them to disk.
  [[nodiscard]] absl::Status Append(uint64_t commit_id, const std::vector<const core::Mutation*>& mutations);
  // Writes a snapshot of `state` and truncates the journal.
  [[nodiscard]] absl::Status WriteSnapshot(const core::DesiredState& state);
  // True when the journal has grown past the snapshot (time to compact).
  bool ShouldCompact() const;

  const std::string& dir() const { return dir_; }

 private:
  explicit StateStore(std::string dir) : dir_(std::move(dir)) {}
  absl::Status OpenJournal();

  std::string dir_;
  UniqueFd journal_;
  size_t journal_bytes_ = 0;
  size_t snapshot_bytes_ = 0;
};

}  // namespace ruleplane::txn
