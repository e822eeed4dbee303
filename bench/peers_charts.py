"""Draws bench/peers.sh's measured rows (its ROWS_OUT TSV) as two SVG charts: Salesforce API calls
and wall seconds, one panel per world size, a group of three bars (first run, no change, 1%
changed) per contender. Plain SVG written by hand, so the charts need nothing installed.

    python3 bench/peers_charts.py ROWS.tsv [OUT_DIR]      writes OUT_DIR/peers-calls.svg and
                                                          OUT_DIR/peers-time.svg (OUT_DIR: docs)
                                                          and prints docs/benchmarks.md's tables

Calls span 0 to thousands, so that chart's axis is logarithmic (log of 1 + calls, which keeps 0
at the origin); seconds are linear. A contender not run at a size (the one-update-per-account
script above NAIVE_MAX) gets a "not run" note instead of bars.
"""

import csv
import math
import os
import sys
from xml.sax.saxutils import escape

ORDER = ["usagesync", "jsforce_bulk", "bulk", "collections_diff", "naive"]
NAMES = {
    "usagesync": "usagesync",
    "jsforce_bulk": "jsforce Bulk + diff script",
    "bulk": "Bulk 2.0 script",
    "collections_diff": "Collections + diff script",
    "naive": "one update per account",
}
RUNS = ["first run", "no change", "1% changed"]
COLOURS = {"first run": "#3b6fb6", "no change": "#9bbbe0", "1% changed": "#e08a3c"}

LABEL_W = 180  # contender names, left of the first panel
PANEL_W = 330
PANEL_GAP = 40
BAR_H = 11
GROUP_GAP = 12
TOP = 62
BOTTOM = 36


def read_rows(path):
    """{accounts: {contender: {run: row}}} from a ROWS_OUT file; a later row for the same
    (size, contender, run) replaces an earlier one, so re-running a size appends safely."""
    out = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            out.setdefault(int(r["accounts"]), {}).setdefault(r["contender"], {})[r["run"]] = r
    return out


def log_ticks(top):
    """0, 1, 10, … up to the first power of ten at or above top."""
    ticks = [0, 1]
    while ticks[-1] < top:
        ticks.append(ticks[-1] * 10)
    return ticks


def linear_ticks(top):
    """0 and multiples of a 1, 2 or 5 step, at most six of them, the last at or above top."""
    if top <= 0:
        return [0, 1]
    step = 10 ** (math.floor(math.log10(top)) - 1)
    while True:
        for m in (1, 2, 5):
            if math.ceil(top / (step * m)) <= 6:
                n = math.ceil(top / (step * m))
                return [i * step * m for i in range(n + 1)]
        step *= 10


def fmt(v, metric, tick=False):
    if metric == "calls" or tick and v == int(v):
        return f"{int(v):,}"
    return f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def chart(rows, metric, title):
    """The SVG text for one metric ("calls" or "seconds")."""
    sizes = sorted(rows)
    contenders = [c for c in ORDER if any(c in rows[s] for s in sizes)]
    contenders += sorted({c for s in sizes for c in rows[s]} - set(ORDER))
    group_h = len(RUNS) * BAR_H + GROUP_GAP
    height = TOP + len(contenders) * group_h + BOTTOM
    width = LABEL_W + len(sizes) * (PANEL_W + PANEL_GAP)
    log = metric == "calls"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="8" y="18" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    x = LABEL_W
    for run in RUNS:
        out.append(f'<rect x="{x}" y="26" width="10" height="10" fill="{COLOURS[run]}"/>')
        out.append(f'<text x="{x + 14}" y="35">{escape(run)}</text>')
        x += 14 + 7 * len(run) + 18
    for i, c in enumerate(contenders):
        y = TOP + i * group_h + len(RUNS) * BAR_H / 2 + 4
        out.append(f'<text x="{LABEL_W - 8}" y="{y:.1f}" text-anchor="end">{escape(NAMES.get(c, c))}</text>')
    for p, size in enumerate(sizes):
        x0 = LABEL_W + p * (PANEL_W + PANEL_GAP)
        plot_w = PANEL_W - 40  # room for the longest value label right of a bar
        values = [float(r[metric]) for c in rows[size].values() for r in c.values()]
        top = max(values, default=0)
        if log:
            ticks = log_ticks(top)
            span = math.log10(1 + ticks[-1])
            scale = lambda v: plot_w * math.log10(1 + v) / span  # noqa: E731
        else:
            ticks = linear_ticks(top)
            span = ticks[-1]
            scale = lambda v: plot_w * v / span  # noqa: E731
        bottom = TOP + len(contenders) * group_h
        out.append(f'<text x="{x0}" y="{TOP - 8}" font-weight="bold">{size:,} accounts</text>')
        for t in ticks:
            tx = x0 + scale(t)
            out.append(f'<line x1="{tx:.1f}" y1="{TOP - 2}" x2="{tx:.1f}" y2="{bottom}" stroke="#ddd"/>')
            out.append(f'<text x="{tx:.1f}" y="{bottom + 13}" text-anchor="middle" fill="#555">{fmt(t, metric, tick=True)}</text>')
        axis = "Salesforce API calls (log scale)" if log else "wall seconds"
        out.append(f'<text x="{x0 + plot_w / 2:.1f}" y="{bottom + 28}" text-anchor="middle" fill="#555">{axis}</text>')
        out.append(f'<line x1="{x0}" y1="{TOP - 2}" x2="{x0}" y2="{bottom}" stroke="#888"/>')
        for i, c in enumerate(contenders):
            runs = rows[size].get(c)
            gy = TOP + i * group_h
            if not runs:
                out.append(f'<text x="{x0 + 6}" y="{gy + len(RUNS) * BAR_H / 2 + 4:.1f}" fill="#888">not run at this size</text>')
                continue
            for j, run in enumerate(RUNS):
                r = runs.get(run)
                if r is None:
                    continue
                v = float(r[metric])
                w = scale(v)
                by = gy + j * BAR_H
                out.append(
                    f'<rect x="{x0}" y="{by}" width="{w:.1f}" height="{BAR_H - 1}" fill="{COLOURS[run]}">'
                    f"<title>{escape(NAMES.get(c, c))}, {escape(run)}: {fmt(v, metric)}</title></rect>"
                )
                out.append(f'<text x="{x0 + w + 3:.1f}" y="{by + BAR_H - 2}" font-size="9">{fmt(v, metric)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def ratio(a, b):
    """Contender / usagesync, as the docs' tables print it."""
    a, b = float(a), float(b)
    if b == 0:
        return "-" if a == 0 else "∞"
    x = a / b
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def markdown(rows):
    """One Markdown table per size, usagesync first, ratios against its run of the same kind."""
    out = []
    for size in sorted(rows):
        base = rows[size].get("usagesync", {})
        out.append(f"{size:,} accounts:\n")
        out.append("| contender | run | SF calls | written | seconds | peak RSS MiB | calls × | seconds × |")
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for c in [c for c in ORDER if c in rows[size]] + sorted(set(rows[size]) - set(ORDER)):
            for run in RUNS:
                r = rows[size][c].get(run)
                if r is None:
                    continue
                b = base.get(run)
                cells = [NAMES.get(c, c), run, f"{int(r['calls']):,}", f"{int(r['written']):,}", f"{float(r['seconds']):.2f}",
                         r["rss_mib"], ratio(r["calls"], b["calls"]) if b else "-", ratio(r["seconds"], b["seconds"]) if b else "-"]
                out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(path, out_dir="docs"):
    rows = read_rows(path)
    for metric, name, title in [
        ("calls", "peers-calls.svg", "Salesforce API calls per run (OAuth token requests left out)"),
        ("seconds", "peers-time.svg", "Wall seconds per run"),
    ]:
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(chart(rows, metric, title))
    print(markdown(rows))


if __name__ == "__main__":
    main(*sys.argv[1:3])
