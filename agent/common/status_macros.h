// Control-flow helpers for absl::Status. Open-source abseil ships none; these
// are the only control-flow macros the project allows (STYLE.md section 4).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define RP_STATUS_CONCAT_INNER_(a, b) a##b
#define RP_STATUS_CONCAT_(a, b) RP_STATUS_CONCAT_INNER_(a, b)

// Returns the Status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                                  \
  do {                                                         \
    if (absl::Status rp_status_ = (expr); !rp_status_.ok()) {  \
      return rp_status_;                                       \
    }                                                          \
  } while (false)

// `ASSIGN_OR_RETURN(auto x, MakeX())` assigns the value of a StatusOr or
// returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  RP_ASSIGN_OR_RETURN_IMPL_(RP_STATUS_CONCAT_(rp_statusor_, __LINE__), lhs, expr)

#define RP_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                              \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()
