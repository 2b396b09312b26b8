// CPtr: one owner type per C object (STYLE.md section 5).
//
//   using NftnlRulePtr = CPtr<nftnl_rule, &nftnl_rule_free>;
//
// The deleter is a stateless function object, so a CPtr is pointer-sized.
// Ownership handed to a C library is released on the same line as the call
// that takes it, with a "// owned by ... now" comment.
#pragma once

#include <memory>

namespace ruleplane::kernel {

template <auto Free>
struct CDeleter {
  template <typename T>
  void operator()(T* p) const {
    // Some *_free/*_close functions return a status; on teardown there is
    // nothing useful to do with it.
    static_cast<void>(Free(p));
  }
};

template <typename T, auto Free>
using CPtr = std::unique_ptr<T, CDeleter<Free>>;

}  // namespace ruleplane::kernel
