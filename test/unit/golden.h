// Golden files: test/testdata/golden/<name>. Regenerate with
// tools/update-golden (sets RULEPLANE_UPDATE_GOLDEN=1), then review the diff.
#pragma once

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace ruleplane::testing {

inline void ExpectGolden(const std::string& name, const std::string& actual) {
  const std::string path = std::string(RULEPLANE_SOURCE_DIR) + "/test/testdata/golden/" + name;
  if (std::getenv("RULEPLANE_UPDATE_GOLDEN") != nullptr) {
    std::ofstream(path) << actual;
    return;
  }
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << "missing golden " << path << " (run tools/update-golden)";
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), actual) << "golden " << path << " differs (run tools/update-golden if intended)";
}

}  // namespace ruleplane::testing
