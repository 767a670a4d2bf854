#!/usr/bin/env python3
"""Charts (SVG, no dependencies) of viewer sweeps.

    RESULTS_OUT=/tmp/edge.txt bench/scripts/compare-edge.sh
    bench/scripts/chart.py /tmp/edge.txt docs/charts

reads the `key value` lines compare-edge.sh records (`view<N>.<metric>`, one line per
run) and writes, with the median of the runs at each viewer count:
  - latency-vs-viewers.svg: behind live p50 and p99, part request p99 (ms);
  - throughput-vs-viewers.svg: requests/s served and edge CPU (% of a core);
  - memory-vs-viewers.svg: edge memory per viewer (KiB).

    RESULTS_OUT=/tmp/peers.txt bench/scripts/compare-nginx.sh
    bench/scripts/chart.py /tmp/peers.txt docs/charts

reads the lines compare-nginx.sh records for its viewer phase (`vw.<target>.<N>.<metric>`,
one line per run; target = ferrocast, nginx, xiu, ferrocast-ll) and writes, one line per
server, medians of the runs:
  - peers-behind-live.svg: behind live p50 (dashed) and p99 (ms);
  - peers-request-latency.svg: request p99 (ms) of the requests answered at once;
  - peers-throughput.svg: requests/s served (and Mbit/s in peers-bytes.svg);
  - peers-memory.svg: server memory per viewer, net of its growth without viewers (KiB).
"""

import math
import os
import re
import statistics
import sys


def samples(path, pattern):
    """(match, value) for every `NAME VALUE` line whose NAME fully matches `pattern`
    and whose VALUE is a number (NaN skipped)."""
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 2:
                continue
            m = re.fullmatch(pattern, parts[0])
            if not m:
                continue
            try:
                v = float(parts[1])
            except ValueError:
                continue
            if v == v:  # not NaN
                yield m, v


def load(path):
    runs = {}
    for m, v in samples(path, r"view(\d+)\.(\w+)"):
        runs.setdefault(int(m.group(1)), {}).setdefault(m.group(2), []).append(v)
    return {n: {k: statistics.median(v) for k, v in d.items()} for n, d in runs.items()}


def load_peers(path):
    """{target: {viewers: {metric: [runs]}}} from compare-nginx.sh's vw.* lines."""
    runs = {}
    for m, v in samples(path, r"vw\.([\w-]+)\.(\d+)\.(\w+)"):
        t, n, k = m.group(1), int(m.group(2)), m.group(3)
        runs.setdefault(t, {}).setdefault(n, {}).setdefault(k, []).append(v)
    return runs


PEER_COLOURS = {
    "ferrocast": "#d62728",
    "ferrocast-ll": "#ff9896",
    "nginx": "#2ca02c",
    "xiu": "#1f77b4",
}
PEER_LABELS = {
    "ferrocast": "ferrocast (classic)",
    "ferrocast-ll": "ferrocast (LL-HLS)",
    "nginx": "nginx-rtmp",
    "xiu": "xiu",
}


def peer_charts(runs, out):
    med = statistics.median
    targets = [t for t in PEER_COLOURS if t in runs] + sorted(set(runs) - set(PEER_COLOURS))
    xs = sorted({n for t in targets for n in runs[t] if n > 0})
    if not xs:
        return False

    def col(t, k, f=lambda v, n: v):
        return [f(med(runs[t][n][k]), n) if k in runs[t].get(n, {}) else None for n in xs]

    def net_kib(t):
        alone = runs.get(t.removesuffix("-ll"), {}).get(0, {}).get("growth")
        base = med(alone) if alone else 0.0
        return [
            med([(g - base) / n for g in runs[t][n]["growth"]]) / 1024
            if "growth" in runs[t].get(n, {})
            else None
            for n in xs
        ]

    colour = lambda t: PEER_COLOURS.get(t, "#7f7f7f")
    label = lambda t: PEER_LABELS.get(t, t)
    series = []
    for t in targets:
        series.append((label(t) + " p99", colour(t), col(t, "bl99")))
        series.append((label(t) + " p50", colour(t), col(t, "bl50"), "5,4"))
    svg_chart(
        "Behind live (media clock), 3 Mbps stream", "concurrent viewers", "milliseconds (log)", xs,
        series, os.path.join(out, "peers-behind-live.svg"), wide=True, log=True,
    )
    svg_chart(
        "Request latency p99 (playlists, segments, parts)", "concurrent viewers", "milliseconds (log)",
        xs, [(label(t), colour(t), col(t, "rq99")) for t in targets],
        os.path.join(out, "peers-request-latency.svg"), wide=True, log=True,
    )
    svg_chart(
        "Requests served", "concurrent viewers", "requests/s", xs,
        [(label(t), colour(t), col(t, "rps")) for t in targets],
        os.path.join(out, "peers-throughput.svg"), wide=True,
    )
    svg_chart(
        "Bytes served", "concurrent viewers", "Mbit/s", xs,
        [(label(t), colour(t), col(t, "mbps")) for t in targets],
        os.path.join(out, "peers-bytes.svg"), wide=True,
    )
    svg_chart(
        "Server memory per viewer (net of the server alone)", "concurrent viewers", "KiB per viewer",
        xs, [(label(t), colour(t), net_kib(t)) for t in targets],
        os.path.join(out, "peers-memory.svg"), wide=True,
    )
    for t in targets:
        for n in sorted(runs[t]):
            print(t, n, {k: round(med(v), 1) for k, v in sorted(runs[t][n].items())})
    return True


def nice_max(v):
    if v <= 0:
        return 1.0
    mag = 10 ** len(str(int(v)))
    for step in (0.1, 0.2, 0.25, 0.5, 1.0):
        if v <= mag * step:
            return mag * step
    return mag


def svg_chart(title, xlabel, ylabel, xs, series, path, note="", wide=False, log=False):
    """series: [(label, colour, [y or None per x]) or (label, colour, ys, dasharray)].
    log: a logarithmic y axis (decades), for values spanning milliseconds to seconds."""
    w, h, left, right, top, bottom = 640, 400, 70, 160, 40, 50
    if wide:
        w, right = 760, 280
    pw, ph = w - left - right, h - top - bottom
    xmax = nice_max(max(xs))
    ys = [y for _, _, vals, *_ in series for y in vals if y is not None]
    ymin = min(ys + [0.0])
    ymax = nice_max(max(ys) if ys else 1.0)
    sx = lambda x: left + pw * x / xmax
    sy = lambda y: top + ph - ph * y / ymax
    if log:
        pos = [y for y in ys if y > 0]
        lo = math.floor(math.log10(min(pos))) if pos else 0
        hi = math.ceil(math.log10(max(pos))) if pos else 1
        hi = max(hi, lo + 1)
        sy = lambda y: top + ph - ph * (math.log10(max(y, 10**lo)) - lo) / (hi - lo)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>',
    ]
    for i in range(6):
        if not log:
            y = ymax * i / 5
            out.append(f'<line x1="{left}" y1="{sy(y)}" x2="{left + pw}" y2="{sy(y)}" stroke="#ddd"/>')
            out.append(f'<text x="{left - 6}" y="{sy(y) + 4}" text-anchor="end">{y:g}</text>')
        x = xmax * i / 5
        out.append(f'<text x="{sx(x)}" y="{top + ph + 18}" text-anchor="middle">{x:g}</text>')
    if log:
        for e in range(lo, hi + 1):
            y = 10**e
            out.append(f'<line x1="{left}" y1="{sy(y)}" x2="{left + pw}" y2="{sy(y)}" stroke="#ddd"/>')
            out.append(f'<text x="{left - 6}" y="{sy(y) + 4}" text-anchor="end">{y:g}</text>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 10}" text-anchor="middle">{xlabel}</text>')
    out.append(
        f'<text x="16" y="{top + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + ph / 2})">{ylabel}</text>'
    )
    if ymin < 0:
        note = (note + " " if note else "") + f"(values below 0 drawn at 0; min {ymin:.1f})"
    for i, (label, colour, vals, *dash) in enumerate(series):
        dash_attr = f' stroke-dasharray="{dash[0]}"' if dash else ""
        pts = [(sx(x), sy(max(y, 0.0))) for x, y in zip(xs, vals) if y is not None]
        if pts:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>')
            for x, y in pts:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>')
        ly = top + 14 + 20 * i
        out.append(f'<line x1="{left + pw + 12}" y1="{ly}" x2="{left + pw + 32}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{left + pw + 38}" y="{ly + 4}">{label}</text>')
    if note:
        out.append(f'<text x="{left + pw + 12}" y="{top + ph}" font-size="10" fill="#555">{note}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    os.makedirs(sys.argv[2], exist_ok=True)
    if peer_charts(load_peers(sys.argv[1]), sys.argv[2]):
        return
    data = load(sys.argv[1])
    if not data:
        sys.exit(f"{sys.argv[1]}: no view<N>.<metric> or vw.<target>.<N>.<metric> lines")
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
