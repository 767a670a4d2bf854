#!/usr/bin/env python3
"""Charts (SVG, no dependencies) of a compare-edge.sh viewer sweep.

    RESULTS_OUT=/tmp/edge.txt bench/scripts/compare-edge.sh
    bench/scripts/chart.py /tmp/edge.txt docs/charts

reads the `key value` lines compare-edge.sh records (`view<N>.<metric>`, one line per
run) and writes, with the median of the runs at each viewer count:
  - latency-vs-viewers.svg: behind live p50 and p99, part request p99 (ms);
  - throughput-vs-viewers.svg: requests/s served and edge CPU (% of a core);
  - memory-vs-viewers.svg: edge memory per viewer (KiB).
"""

import os
import re
import statistics
import sys


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 2:
                continue
            m = re.fullmatch(r"view(\d+)\.(\w+)", parts[0])
            if not m:
                continue
            try:
                v = float(parts[1])
            except ValueError:
                continue
            if v != v:  # NaN
                continue
            runs.setdefault(int(m.group(1)), {}).setdefault(m.group(2), []).append(v)
    return {n: {k: statistics.median(v) for k, v in d.items()} for n, d in runs.items()}


def nice_max(v):
    if v <= 0:
        return 1.0
    mag = 10 ** len(str(int(v)))
    for step in (0.1, 0.2, 0.25, 0.5, 1.0):
        if v <= mag * step:
            return mag * step
    return mag


def svg_chart(title, xlabel, ylabel, xs, series, path, note=""):
    """series: [(label, colour, [y or None per x])]."""
    w, h, left, right, top, bottom = 640, 400, 70, 160, 40, 50
    pw, ph = w - left - right, h - top - bottom
    xmax = nice_max(max(xs))
    ys = [y for _, _, vals in series for y in vals if y is not None]
    ymax = nice_max(max(ys) if ys else 1.0)
    sx = lambda x: left + pw * x / xmax
    sy = lambda y: top + ph - ph * y / ymax
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>',
    ]
    for i in range(6):
        y = ymax * i / 5
        out.append(f'<line x1="{left}" y1="{sy(y)}" x2="{left + pw}" y2="{sy(y)}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{sy(y) + 4}" text-anchor="end">{y:g}</text>')
        x = xmax * i / 5
        out.append(f'<text x="{sx(x)}" y="{top + ph + 18}" text-anchor="middle">{x:g}</text>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 10}" text-anchor="middle">{xlabel}</text>')
    out.append(
        f'<text x="16" y="{top + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + ph / 2})">{ylabel}</text>'
    )
    for i, (label, colour, vals) in enumerate(series):
        pts = [(sx(x), sy(y)) for x, y in zip(xs, vals) if y is not None]
        if pts:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="2"/>')
            for x, y in pts:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>')
        ly = top + 14 + 20 * i
        out.append(f'<line x1="{left + pw + 12}" y1="{ly}" x2="{left + pw + 32}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{left + pw + 38}" y="{ly + 4}">{label}</text>')
    if note:
        out.append(f'<text x="{left + pw + 12}" y="{top + ph}" font-size="10" fill="#555">{note}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data = load(sys.argv[1])
    if not data:
        sys.exit(f"{sys.argv[1]}: no view<N>.<metric> lines")
    os.makedirs(sys.argv[2], exist_ok=True)
    xs = sorted(data)
    col = lambda k, f=lambda v: v: [f(data[n][k]) if k in data[n] else None for n in xs]
    secs = float(os.environ.get("VIEW_SECS", "50"))
    svg_chart(
        "LL-HLS latency on one edge", "concurrent viewers", "milliseconds", xs,
        [
            ("behind live p50", "#1f77b4", col("bl50")),
            ("behind live p99", "#d62728", col("bl99")),
            ("part request p99", "#2ca02c", col("part99")),
        ],
        os.path.join(sys.argv[2], "latency-vs-viewers.svg"),
    )
    svg_chart(
        "Edge throughput", "concurrent viewers", "requests/s  |  % of a core", xs,
        [
            ("requests/s", "#1f77b4", col("reqs", lambda v: v / secs)),
            ("edge CPU %", "#ff7f0e", col("edgecpu")),
            ("bench CPU %", "#7f7f7f", col("benchcpu")),
        ],
        os.path.join(sys.argv[2], "throughput-vs-viewers.svg"),
    )
    svg_chart(
        "Edge memory per viewer", "concurrent viewers", "KiB per viewer", xs,
        [("RSS growth / viewer", "#9467bd", col("per", lambda v: v / 1024))],
        os.path.join(sys.argv[2], "memory-vs-viewers.svg"),
    )
    for n in xs:
        print(n, {k: round(v, 1) for k, v in sorted(data[n].items())})


if __name__ == "__main__":
    main()
