#include "cni/json_scan.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ruleplane::cni {
namespace {

// Scans RFC 8259 JSON. Strings are checked for escapes and control
// characters but not for UTF-8 validity: the plugin runs nlohmann's strict
// parser over the same bytes first, so this scanner only has to agree with
// it on structure.
class Scanner {
 public:
  explicit Scanner(absl::string_view text) : text_(text) {}

  size_t pos() const { return pos_; }
  bool AtEnd() const { return pos_ >= text_.size(); }

  void SkipBom() {
    if (text_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;
  }

  void SkipWhitespace() {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
      ++pos_;
    }
  }

  // Consumes `c` after optional whitespace.
  absl::Status Expect(char c) {
    SkipWhitespace();
    if (AtEnd() || text_[pos_] != c) return Error(absl::StrCat("expected '", std::string(1, c), "'"));
    ++pos_;
    return absl::OkStatus();
  }

  // Consumes `c` after optional whitespace if it is next.
  bool Consume(char c) {
    SkipWhitespace();
    if (AtEnd() || text_[pos_] != c) return false;
    ++pos_;
    return true;
  }

  // Scans a string starting at the current position (after whitespace).
  // Appends its decoded UTF-8 form to `decoded` when non-null.
  absl::Status ScanString(std::string* decoded) {
    SkipWhitespace();
    if (AtEnd() || text_[pos_] != '"') return Error("expected a string");
    ++pos_;
    while (true) {
      if (AtEnd()) return Error("unterminated string");
      char c = text_[pos_++];
      if (c == '"') return absl::OkStatus();
      if (static_cast<unsigned char>(c) < 0x20) return Error("control character in string");
      if (c != '\\') {
        if (decoded != nullptr) decoded->push_back(c);
        continue;
      }
      if (AtEnd()) return Error("unterminated escape");
      char e = text_[pos_++];
      char simple = 0;
      switch (e) {
        case '"': simple = '"'; break;
        case '\\': simple = '\\'; break;
        case '/': simple = '/'; break;
        case 'b': simple = '\b'; break;
        case 'f': simple = '\f'; break;
        case 'n': simple = '\n'; break;
        case 'r': simple = '\r'; break;
        case 't': simple = '\t'; break;
        case 'u': break;
        default: return Error("invalid escape");
      }
      if (e != 'u') {
        if (decoded != nullptr) decoded->push_back(simple);
        continue;
      }
      uint32_t cp = 0;
      if (absl::Status s = Hex4(&cp); !s.ok()) return s;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        // High surrogate: a low surrogate escape must follow.
        if (text_.substr(pos_, 2) != "\\u") return Error("lone surrogate in \\u escape");
        pos_ += 2;
        uint32_t low = 0;
        if (absl::Status s = Hex4(&low); !s.ok()) return s;
        if (low < 0xDC00 || low > 0xDFFF) return Error("invalid surrogate pair in \\u escape");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        return Error("lone surrogate in \\u escape");
      }
      if (decoded != nullptr) AppendUtf8(cp, decoded);
    }
  }

  // Scans one complete value (any type). Iterative: containers push their
  // closing bracket on a stack instead of recursing.
  absl::Status ScanValue() {
    std::vector<char> closers;
    while (true) {
      // A value starts here.
      SkipWhitespace();
      if (AtEnd()) return Error("expected a value");
      char c = text_[pos_];
      bool value_done = true;
      if (c == '{' || c == '[') {
        ++pos_;
        char closer = c == '{' ? '}' : ']';
        if (!Consume(closer)) {
          closers.push_back(closer);
          if (closer == '}') {
            if (absl::Status s = MemberName(); !s.ok()) return s;
          }
          value_done = false;  // the container's first value comes next
        }
      } else if (c == '"') {
        if (absl::Status s = ScanString(nullptr); !s.ok()) return s;
      } else {
        if (absl::Status s = ScanLiteral(); !s.ok()) return s;
      }
      if (!value_done) continue;
      // After a value: close containers or move to the next element.
      while (true) {
        if (closers.empty()) return absl::OkStatus();
        if (Consume(closers.back())) {
          closers.pop_back();
          continue;
        }
        if (absl::Status s = Expect(','); !s.ok()) {
          return Error(absl::StrCat("expected ',' or '", std::string(1, closers.back()), "'"));
        }
        if (closers.back() == '}') {
          if (absl::Status s = MemberName(); !s.ok()) return s;
        }
        break;
      }
    }
  }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("json: ", what, " at byte ", pos_));
  }

 private:
  // `"name" :` inside an object.
  absl::Status MemberName() {
    if (absl::Status s = ScanString(nullptr); !s.ok()) return s;
    return Expect(':');
  }

  absl::Status Hex4(uint32_t* out) {
    if (text_.size() - pos_ < 4) return Error("short \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char h = text_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') {
        v |= static_cast<uint32_t>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        v |= static_cast<uint32_t>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        v |= static_cast<uint32_t>(h - 'A' + 10);
      } else {
        return Error("invalid hex digit in \\u escape");
      }
    }
    *out = v;
    return absl::OkStatus();
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  bool IsDigit() const { return !AtEnd() && text_[pos_] >= '0' && text_[pos_] <= '9'; }

  // true, false, null or a number (RFC 8259 grammar).
  absl::Status ScanLiteral() {
    for (absl::string_view word : {"true", "false", "null"}) {
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return absl::OkStatus();
      }
    }
    if (!AtEnd() && text_[pos_] == '-') ++pos_;
    if (!IsDigit()) return Error("expected a value");
    if (text_[pos_] == '0') {
      ++pos_;
    } else {
      while (IsDigit()) ++pos_;
    }
    if (!AtEnd() && text_[pos_] == '.') {
      ++pos_;
      if (!IsDigit()) return Error("expected a digit after '.'");
      while (IsDigit()) ++pos_;
    }
    if (!AtEnd() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (!AtEnd() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (!IsDigit()) return Error("expected a digit in exponent");
      while (IsDigit()) ++pos_;
    }
    return absl::OkStatus();
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<absl::string_view> FindTopLevelMember(absl::string_view json, absl::string_view key) {
  Scanner s(json);
  s.SkipBom();
  if (absl::Status st = s.Expect('{'); !st.ok()) return st;
  bool found = false;
  absl::string_view value;
  if (!s.Consume('}')) {
    std::string name;
    while (true) {
      name.clear();
      if (absl::Status st = s.ScanString(&name); !st.ok()) return st;
      if (absl::Status st = s.Expect(':'); !st.ok()) return st;
      s.SkipWhitespace();
      size_t start = s.pos();
      if (absl::Status st = s.ScanValue(); !st.ok()) return st;
      if (name == key) {  // last duplicate wins, like nlohmann::json
        found = true;
        value = json.substr(start, s.pos() - start);
      }
      if (s.Consume('}')) break;
      if (absl::Status st = s.Expect(','); !st.ok()) return s.Error("expected ',' or '}'");
    }
  }
  s.SkipWhitespace();
  if (!s.AtEnd()) return s.Error("trailing bytes after the object");
  if (!found) return absl::NotFoundError(absl::StrCat("json: no top-level member \"", key, "\""));
  return value;
}

}  // namespace ruleplane::cni
