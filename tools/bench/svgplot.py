"""Hand-rolled SVG plots for docs/benchmarks.md (no plotting library).

Two kinds:
  strip_plot()  one row per series: every sample as a dot on a log time axis
                (censored samples as open red triangles at their bound),
                with p50 and p99 ticks; for latency distributions.
  line_plot()   x/y lines with optional min-max error bars, log or linear
                axes; for throughput and scale curves.
Output is plain SVG 1.1 text, deterministic for the same input.
"""
import math

FONT = 'font-family="DejaVu Sans, Arial, sans-serif"'
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]


def _esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _log_ticks(lo, hi):
    ticks = []
    e = math.floor(math.log10(lo))
    while 10 ** e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo * 0.9999 <= v <= hi * 1.0001:
                ticks.append(v)
        e += 1
    return ticks


def _lin_ticks(lo, hi, n=5):
    span = hi - lo if hi > lo else 1
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=mag)
    v = math.ceil(lo / step) * step
    out = []
    while v <= hi + 1e-9:
        out.append(round(v, 10))
        v += step
    return out


def _fmt(v, unit=""):
    if v >= 1e6:
        s = f"{v / 1e6:g}M"
    elif v >= 1e3 and unit != "ms":
        s = f"{v / 1e3:g}k"
    elif unit == "ms" and v >= 1000:
        s = f"{v / 1000:g} s"
        return s
    else:
        s = f"{v:g}"
    return s + (f" {unit}" if unit else "")


class _Axis:
    def __init__(self, lo, hi, p0, p1, log):
        self.log = log
        if log:
            lo = max(lo, 1e-9)
            self.lo, self.hi = math.log10(lo), math.log10(max(hi, lo * 1.01))
        else:
            self.lo, self.hi = lo, hi if hi > lo else lo + 1
        self.p0, self.p1 = p0, p1

    def __call__(self, v):
        if self.log:
            v = math.log10(max(v, 1e-9))
        return self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)


def strip_plot(title, rows, unit="ms", width=900, note=""):
    """rows: [{"label": str, "samples": [(value, censored)], "color": idx, "group": str}]"""
    row_h, top, left, right, bottom = 26, 46, 250, 44, 72
    height = top + row_h * len(rows) + bottom
    vals = [v for r in rows for v, _ in r["samples"] if v > 0]
    if not vals:
        vals = [1, 10]
    lo, hi = min(vals), max(vals)
    lo = 10 ** math.floor(math.log10(lo))
    hi = 10 ** math.ceil(math.log10(hi) - 1e-9)
    x = _Axis(lo, hi, left, width - right, True)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" {FONT} font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">{_esc(title)}</text>']
    decades = math.log10(hi / lo)
    for t in _log_ticks(lo, hi):
        xx = x(t)
        major = math.isclose(math.log10(t), round(math.log10(t)))
        out.append(f'<line x1="{xx:.1f}" y1="{top - 6}" x2="{xx:.1f}" y2="{top + row_h * len(rows)}" '
                   f'stroke="{"#bbb" if major else "#e4e4e4"}"/>')
        if major or decades <= 3:  # wide ranges: label decades only, or labels collide
            out.append(f'<text x="{xx:.1f}" y="{top + row_h * len(rows) + 16}" text-anchor="middle" '
                       f'font-size="11">{_esc(_fmt(t, unit))}</text>')
    prev_group = None
    for i, r in enumerate(rows):
        y = top + row_h * i + row_h / 2
        if r.get("group") != prev_group and i:
            out.append(f'<line x1="10" y1="{top + row_h * i:.1f}" x2="{width - right}" y2="{top + row_h * i:.1f}" '
                       f'stroke="#888" stroke-dasharray="3,3"/>')
        prev_group = r.get("group")
        if i % 2 == 0:
            out.append(f'<rect x="{left}" y="{y - row_h / 2:.1f}" width="{width - right - left}" height="{row_h}" '
                       f'fill="#f6f6f6"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{_esc(r["label"])}</text>')
        color = COLORS[r.get("color", 0) % len(COLORS)]
        s = r["samples"]
        n = len(s)
        for j, (v, cens) in enumerate(s):
            jitter = ((j * 7919) % 11 - 5) * 1.4  # deterministic vertical spread
            xx = x(max(v, lo))
            if cens:
                out.append(f'<path d="M{xx:.1f},{y + jitter - 5:.1f} l4,8 l-8,0 z" fill="none" stroke="#d00" '
                           f'stroke-width="1.3"/>')
            else:
                out.append(f'<circle cx="{xx:.1f}" cy="{y + jitter:.1f}" r="2.2" fill="{color}" fill-opacity="0.55"/>')
        if n:
            order = sorted(v for v, _ in s)
            p50 = order[max(1, math.ceil(0.5 * n)) - 1]
            p99 = order[max(1, math.ceil(0.99 * n)) - 1]
            for v, lab, w in ((p50, "p50", 2.5), (p99, "p99", 1.5)):
                xx = x(max(v, lo))
                out.append(f'<line x1="{xx:.1f}" y1="{y - 10:.1f}" x2="{xx:.1f}" y2="{y + 10:.1f}" stroke="black" '
                           f'stroke-width="{w}"/>')
            out.append(f'<text x="{width - right + 2}" y="{y + 4:.1f}" font-size="9" fill="#555">n={n}</text>')
    yb = top + row_h * len(rows) + 36
    out.append(f'<text x="{left}" y="{yb}" font-size="11" fill="#333">dots: one sample each (log axis); thick tick '
               f'p50, thin tick p99</text>')
    out.append(f'<text x="{left}" y="{yb + 14}" font-size="11" fill="#333">red open triangle: censored at its bound '
               f'(a lower bound). {_esc(note)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def line_plot(title, series, xlabel, ylabel, xlog=True, ylog=True, width=820, height=430, note="",
              hlines=()):
    """series: [{"label", "points": [(x, y, ymin, ymax)], "dash": bool}]; hlines: [(y, label)]"""
    left, right, top, bottom = 80, 250, 44, 64
    xs = [p[0] for s in series for p in s["points"]]
    ys = [v for s in series for p in s["points"] for v in (p[1], p[2], p[3]) if v is not None]
    ys += [h[0] for h in hlines]
    if not xs:
        xs, ys = [1, 10], [1, 10]
    if xlog:
        xlo, xhi = 10 ** math.floor(math.log10(min(xs)) + 1e-9), 10 ** math.ceil(math.log10(max(xs)) - 1e-9)
    else:
        xlo, xhi = min(xs), max(xs)
    if ylog:
        ylo = 10 ** math.floor(math.log10(max(min(ys), 1e-9)))
        yhi = 10 ** math.ceil(math.log10(max(ys)) - 1e-9)
    else:
        ylo, yhi = 0, max(ys) * 1.1
    x = _Axis(xlo, xhi, left, width - right, xlog)
    y = _Axis(ylo, yhi, height - bottom, top, ylog)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" {FONT} font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{(left + width - right) / 2}" y="20" text-anchor="middle" font-size="15" '
           f'font-weight="bold">{_esc(title)}</text>']
    for t in (_log_ticks(xlo, xhi) if xlog else _lin_ticks(xlo, xhi)):
        xx = x(t)
        out.append(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{height - bottom}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{xx:.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11">'
                   f'{_esc(_fmt(t))}</text>')
    for t in (_log_ticks(ylo, yhi) if ylog else _lin_ticks(ylo, yhi)):
        yy = y(t)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{width - right}" y2="{yy:.1f}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" font-size="11">{_esc(_fmt(t))}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{width - right - left}" height="{height - bottom - top}" '
               f'fill="none" stroke="#666"/>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - bottom + 36}" text-anchor="middle">'
               f'{_esc(xlabel)}</text>')
    out.append(f'<text x="18" y="{(top + height - bottom) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {(top + height - bottom) / 2})">{_esc(ylabel)}</text>')
    for yv, lab in hlines:
        yy = y(yv)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{width - right}" y2="{yy:.1f}" stroke="#d00" '
                   f'stroke-dasharray="6,4"/>')
        out.append(f'<text x="{left + 4}" y="{yy - 4:.1f}" font-size="11" fill="#d00">{_esc(lab)}</text>')
    for i, s in enumerate(series):
        c = COLORS[i % len(COLORS)]
        dash = ' stroke-dasharray="5,4"' if s.get("dash") else ""
        pts = sorted(s["points"])
        if len(pts) > 1:
            d = " ".join(f"{'M' if k == 0 else 'L'}{x(p[0]):.1f},{y(p[1]):.1f}" for k, p in enumerate(pts))
            out.append(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        for p in pts:
            out.append(f'<circle cx="{x(p[0]):.1f}" cy="{y(p[1]):.1f}" r="3.5" fill="{c}"/>')
            if p[2] is not None and p[3] is not None and p[3] > p[2]:
                out.append(f'<line x1="{x(p[0]):.1f}" y1="{y(p[2]):.1f}" x2="{x(p[0]):.1f}" y2="{y(p[3]):.1f}" '
                           f'stroke="{c}" stroke-width="1.5"/>')
                for v in (p[2], p[3]):
                    out.append(f'<line x1="{x(p[0]) - 4:.1f}" y1="{y(v):.1f}" x2="{x(p[0]) + 4:.1f}" '
                               f'y2="{y(v):.1f}" stroke="{c}" stroke-width="1.5"/>')
        ly = top + 14 + 18 * i
        out.append(f'<line x1="{width - right + 10}" y1="{ly - 4}" x2="{width - right + 34}" y2="{ly - 4}" '
                   f'stroke="{c}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{width - right + 38}" y="{ly}" font-size="11">{_esc(s["label"])}</text>')
    if note:
        out.append(f'<text x="{left}" y="{height - 8}" font-size="10" fill="#444">{_esc(note)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
