// The bring-up waterfall as a standalone SVG (no script, no external
// resources) that a person can open in a browser: one bar per phase of the
// current start on a shared time axis (seconds since process start), colour
// by status, duration and detail beside it (details also as hover titles),
// and below it the previous starts on the same axis for comparison.
#pragma once

#include <string>
#include <vector>

#include "ruleplane/v1/diagnostics.pb.h"

namespace ruleplane::tools {

std::string BringupSvg(const v1::BringupReport& current, const std::vector<v1::BringupReport>& previous);

// "1.23s", "45.6ms", "789us".
std::string HumanSeconds(double seconds);

}  // namespace ruleplane::tools
