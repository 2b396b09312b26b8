#include "tools/ruleplanectl/bringup_svg.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace ruleplane::tools {
namespace {

constexpr int kWidth = 1280;  // room for ~70 characters of detail right of the chart
constexpr int kLabelWidth = 230;
constexpr int kChartWidth = 560;
constexpr int kRow = 22;
constexpr int kTop = 70;

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // XML 1.0 forbids most control characters.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t') out.push_back(c);
    }
  }
  return out;
}

const char* Colour(const std::string& status) {
  if (status == "ok") return "#3c9a5f";
  if (status == "failed") return "#d64545";
  if (status == "skipped") return "#a0a0a0";
  return "#e0a030";  // running
}

// A round axis step for `span` seconds over about 8 ticks.
double TickStep(double span) {
  double raw = span / 8;
  double mag = std::pow(10, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * mag) return m * mag;
  }
  return 10 * mag;
}

std::string Cut(const std::string& s, size_t n) { return s.size() <= n ? s : s.substr(0, n - 3) + "..."; }

std::string ReportTitle(const v1::BringupReport& r) {
  std::string when = absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixMicros(r.process_start_unix_us()),
                                      absl::UTCTimeZone());
  std::string outcome = r.outcome();
  if (r.ready_seconds() > 0) {
    outcome = r.outcome() == "ready" ? absl::StrCat("ready after ", HumanSeconds(r.ready_seconds()))
                                     : absl::StrCat(r.outcome(), " (was ready after ", HumanSeconds(r.ready_seconds()), ")");
  }
  return absl::StrCat(when, "  pid ", r.pid(), "  ", r.first_since_boot() ? "first start since boot" : "restart",
                      "  ", outcome);
}

}  // namespace

std::string HumanSeconds(double s) {
  if (s == 0) return "0s";
  if (s >= 1) return absl::StrFormat("%.2fs", s);
  if (s >= 1e-3) return absl::StrFormat("%.1fms", s * 1e3);
  return absl::StrFormat("%.0fus", s * 1e6);
}

std::string BringupSvg(const v1::BringupReport& current, const std::vector<v1::BringupReport>& previous) {
  double span = 0;
  auto extend = [&span](const v1::BringupReport& r) {
    for (const auto& p : r.phases()) span = std::max(span, p.end_seconds());
    span = std::max(span, r.ready_seconds());
  };
  extend(current);
  for (const auto& r : previous) extend(r);
  if (span <= 0) span = 1e-3;
  const double step = TickStep(span);
  span = std::ceil(span / step) * step;
  auto x = [&](double t) { return kLabelWidth + std::max(0.0, t) / span * kChartWidth; };

  const int phase_rows = current.phases_size();
  const int prev_top = kTop + phase_rows * kRow + 60;
  const int height = prev_top + static_cast<int>(previous.size()) * (kRow + 8) + 50;
  std::string out = absl::StrFormat(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
      kWidth, height, kWidth, height);
  absl::StrAppend(&out, "<text x=\"10\" y=\"22\" font-size=\"16\" font-weight=\"bold\">ruleplane-agent bring-up ",
                  Escape(current.id()), "</text>\n");
  absl::StrAppend(&out, "<text x=\"10\" y=\"42\">", Escape(ReportTitle(current)), "; process started ",
                  absl::StrFormat("%.2f", current.process_start_since_boot_seconds()), "s after boot</text>\n");

  // Axis: seconds since process start.
  const int axis_bottom = kTop + phase_rows * kRow;
  for (double t = 0; t <= span + step / 2; t += step) {
    absl::StrAppendFormat(&out,
                          "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e4e4e4\"/>"
                          "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" fill=\"#666\">%s</text>\n",
                          x(t), kTop - 8, x(t), height - 30, x(t), kTop - 12, HumanSeconds(t));
  }
  absl::StrAppendFormat(&out, "<text x=\"%d\" y=\"%d\" fill=\"#666\">seconds since process start</text>\n",
                        kLabelWidth, height - 12);

  for (int i = 0; i < phase_rows; ++i) {
    const v1::BringupPhase& p = current.phases(i);
    const int y = kTop + i * kRow;
    const double x0 = x(p.start_seconds());
    const double w = std::max(2.0, x(p.end_seconds()) - x0);
    const bool event = p.end_seconds() == p.start_seconds();
    const std::string label = event ? absl::StrCat("at +", HumanSeconds(p.start_seconds()))
                                    : HumanSeconds(p.end_seconds() - p.start_seconds());
    absl::StrAppendFormat(&out, "<g class=\"phase\"><title>%s (%s): %s</title>\n", Escape(p.name()),
                          Escape(p.status()), Escape(p.detail()));
    absl::StrAppendFormat(&out, "<text x=\"10\" y=\"%d\">%s</text>\n", y + 15, Escape(p.name()));
    if (event) {
      absl::StrAppendFormat(&out, "<path d=\"M %.1f %d l 6 8 l -6 8 l -6 -8 z\" fill=\"%s\"/>\n", x0, y + 3,
                            Colour(p.status()));
    } else {
      absl::StrAppendFormat(&out, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"16\" rx=\"2\" fill=\"%s\"/>\n", x0,
                            y + 3, w, Colour(p.status()));
    }
    absl::StrAppendFormat(&out, "<text x=\"%d\" y=\"%d\" fill=\"#333\">%s %s</text>\n</g>\n",
                          kLabelWidth + kChartWidth + 10, y + 15, Escape(label),
                          Escape(Cut(p.status() == "ok" ? p.detail() : p.status() + ": " + p.detail(), 68)));
  }
  if (current.ready_seconds() > 0) {
    absl::StrAppendFormat(&out,
                          "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#3c9a5f\" stroke-dasharray=\"4 3\"/>"
                          "<text x=\"%.1f\" y=\"%d\" fill=\"#3c9a5f\">ready</text>\n",
                          x(current.ready_seconds()), kTop - 4, x(current.ready_seconds()), axis_bottom + 4,
                          x(current.ready_seconds()) + 3, axis_bottom + 16);
  }

  absl::StrAppendFormat(&out, "<text x=\"10\" y=\"%d\" font-size=\"14\" font-weight=\"bold\">previous starts (%d)</text>\n",
                        prev_top - 16, static_cast<int>(previous.size()));
  for (size_t i = 0; i < previous.size(); ++i) {
    const v1::BringupReport& r = previous[previous.size() - 1 - i];  // newest first
    const int y = prev_top + static_cast<int>(i) * (kRow + 8);
    absl::StrAppendFormat(&out, "<g class=\"previous\"><title>%s</title>\n<text x=\"10\" y=\"%d\">%s</text>\n",
                          Escape(ReportTitle(r)), y + 15,
                          Escape(Cut(absl::StrCat(r.outcome(), " ",
                                                  r.ready_seconds() > 0 ? HumanSeconds(r.ready_seconds()) : "-",
                                                  "  pid ", r.pid()),
                                     34)));
    for (const v1::BringupPhase& p : r.phases()) {
      const double x0 = x(p.start_seconds());
      const double w = std::max(1.5, x(p.end_seconds()) - x0);
      absl::StrAppendFormat(&out,
                            "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"16\" fill=\"%s\" fill-opacity=\"0.75\">"
                            "<title>%s: %s</title></rect>\n",
                            x0, y + 3, w, Colour(p.status()), Escape(p.name()),
                            Escape(absl::StrCat(HumanSeconds(p.end_seconds() - p.start_seconds()), " ", p.detail())));
    }
    absl::StrAppend(&out, "</g>\n");
  }
  absl::StrAppendFormat(&out,
                        "<g font-size=\"11\"><rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" fill=\"#3c9a5f\"/>"
                        "<text x=\"%d\" y=\"%d\">ok</text><rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" "
                        "fill=\"#d64545\"/><text x=\"%d\" y=\"%d\">failed</text><rect x=\"%d\" y=\"%d\" width=\"10\" "
                        "height=\"10\" fill=\"#a0a0a0\"/><text x=\"%d\" y=\"%d\">skipped</text><rect x=\"%d\" y=\"%d\" "
                        "width=\"10\" height=\"10\" fill=\"#e0a030\"/><text x=\"%d\" y=\"%d\">running</text></g>\n",
                        kWidth - 300, 14, kWidth - 286, 23, kWidth - 250, 14, kWidth - 236, 23, kWidth - 190, 14,
                        kWidth - 176, 23, kWidth - 120, 14, kWidth - 106, 23);
  absl::StrAppend(&out, "</svg>\n");
  return out;
}

}  // namespace ruleplane::tools
