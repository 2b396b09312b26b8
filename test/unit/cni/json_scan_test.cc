// FindTopLevelMember: the raw-span scanner that lets ADD print prevResult
// byte for byte. Table-driven; each case is checked against nlohmann's view
// of the same text so the two parsers agree on what the value is.
#include "cni/json_scan.h"

#include <ostream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace ruleplane::cni {
namespace {

struct SpanCase {
  const char* name;
  std::string json;
  std::string want;  // exact bytes of the prevResult value
  friend void PrintTo(const SpanCase& c, std::ostream* os) { *os << c.name; }
};

class SpanTest : public ::testing::TestWithParam<SpanCase> {};

TEST_P(SpanTest, ReturnsExactBytesAndAgreesWithNlohmann) {
  const SpanCase& c = GetParam();
  absl::StatusOr<absl::string_view> got = FindTopLevelMember(c.json, "prevResult");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, c.want);
  // The span parses to the same value nlohmann finds in the whole document.
  nlohmann::json whole = nlohmann::json::parse(c.json);
  EXPECT_EQ(nlohmann::json::parse(*got), whole["prevResult"]);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SpanTest,
    ::testing::Values(
        SpanCase{"Simple", R"({"a":1,"prevResult":{"ips":[]}})", R"({"ips":[]})"},
        SpanCase{"OddWhitespace", "{ \"prevResult\" \t:\r\n  {\n \"x\" :  [ 1 , 2 ]\t}\n\n , \"b\":true }",
                 "{\n \"x\" :  [ 1 , 2 ]\t}"},
        SpanCase{"FirstMember", R"({"prevResult":[1,{"a":[]}],"z":null})", R"([1,{"a":[]}])"},
        SpanCase{"EscapesInStrings",
                 R"({"k":"}\"{","prevResult":{"s":"a\"}]\\","t":"\/\b\f\n\r\t\u00e9"},"z":"\\"})",
                 R"({"s":"a\"}]\\","t":"\/\b\f\n\r\t\u00e9"})"},
        SpanCase{"RawUnicode", "{\"prevResult\":{\"dns\":{\"domain\":\"k\xC3\xA4se.\xF0\x9F\x90\xB3\"}}}",
                 "{\"dns\":{\"domain\":\"k\xC3\xA4se.\xF0\x9F\x90\xB3\"}}"},
        SpanCase{"SurrogatePairEscape", R"({"prevResult":"\ud83d\udc33"})", R"("\ud83d\udc33")"},
        SpanCase{"EscapedKeyMatches", R"({"prev\u0052esult":{"a":1}})", R"({"a":1})"},
        SpanCase{"NestedKeyIgnored", R"({"x":{"prevResult":1},"prevResult":2})", "2"},
        SpanCase{"DuplicateLastWins", R"({"prevResult":1,"prevResult":{"b":2}})", R"({"b":2})"},
        SpanCase{"Numbers", R"({"prevResult":[-0,1.5e+3,2E-2,0.25,10]})", R"([-0,1.5e+3,2E-2,0.25,10])"},
        SpanCase{"Literals", R"({"prevResult":[true,false,null]})", R"([true,false,null])"},
        SpanCase{"EmptyContainers", R"({"prevResult":{"a":{},"b":[],"c":[{}]}})", R"({"a":{},"b":[],"c":[{}]})"},
        SpanCase{"Bom", "\xEF\xBB\xBF{\"prevResult\":{}}", "{}"},
        SpanCase{"DeepNesting", "{\"prevResult\":" + std::string(3000, '[') + std::string(3000, ']') + "}",
                 std::string(3000, '[') + std::string(3000, ']')}),
    [](const ::testing::TestParamInfo<SpanCase>& i) { return std::string(i.param.name); });

TEST(FindTopLevelMemberTest, MissingKeyIsNotFound) {
  EXPECT_EQ(FindTopLevelMember(R"({"a":{"prevResult":1}})", "prevResult").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(FindTopLevelMember("{}", "prevResult").status().code(), absl::StatusCode::kNotFound);
}

TEST(FindTopLevelMemberTest, RejectsMalformedInput) {
  for (const char* bad : {"", "[]", "{", R"({"a")", R"({"a":})", R"({"a":1,})", R"({"a":1} x)",
                          R"({"a":"\x"})", R"({"a":"\u12"})", R"({"a":"\udc00"})", R"({"a":[1 2]})",
                          R"({"a":01})", R"({"a":1.})", R"({"a":tru})", "{\"a\":\"\x01\"}", R"({"a":[}])",
                          R"({"a":{"b"}})", R"({"a":"unterminated})"}) {
    EXPECT_EQ(FindTopLevelMember(bad, "a").status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(FindTopLevelMemberTest, ErrorNamesByteOffset) {
  absl::Status s = FindTopLevelMember(R"({"a":[1 2]})", "a").status();
  EXPECT_NE(s.message().find("at byte 8"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace ruleplane::cni
