#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Bandwidth vs message size, kvwire beside its peers, as an SVG.

Input: CSV files from `kvwire-bench compare -a --driver D --csv` (columns
driver,size,peer,status,gbit_per_s,ratio). Standard library only.

    python3 bench/plot.py shm.csv tcp.csv -o bench/bw-vs-size.svg
"""
import argparse
import csv
import math
import sys

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
W, H, L, R, T, B = 900, 520, 70, 250, 40, 60


def load(paths):
    series = {}
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("status") not in ("ok", "unverified") or not row.get("size"):
                    continue
                key = "%s: %s" % (row["driver"], row["peer"])
                series.setdefault(key, []).append((int(row["size"]), float(row["gbit_per_s"])))
    for pts in series.values():
        pts.sort()
    return series


def size_label(s):
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if s >= div:
            return "%d %s" % (s // div, unit)
    return "%d B" % s


def svg(series, title):
    sizes = sorted({s for pts in series.values() for s, _ in pts})
    vals = [g for pts in series.values() for _, g in pts if g > 0]
    ylo = math.floor(math.log10(min(vals))) if vals else -3
    yhi = math.ceil(math.log10(max(vals))) if vals else 3
    if yhi <= ylo:
        yhi = ylo + 1
    xmin, xmax = math.log2(sizes[0]), math.log2(sizes[-1])
    span = (xmax - xmin) or 1.0

    def x(s):
        return L + (math.log2(s) - xmin) / span * (W - L - R)

    def y(g):  # log scale, one grid line a decade
        return H - B - (math.log10(g) - ylo) / (yhi - ylo) * (H - T - B)

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="12">' % (W, H), '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="24" font-size="15">%s</text>' % (L, title)]
    for e in range(ylo, yhi + 1):
        g = 10.0 ** e
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (L, y(g), W - R, y(g)))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%g</text>' % (L - 6, y(g) + 4, g))
    for s in sizes[:: max(1, len(sizes) // 12)]:
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x(s), H - B + 18, size_label(s)))
    out.append('<text x="%d" y="%d" text-anchor="middle">message size</text>' % ((W - R + L) // 2, H - 15))
    out.append('<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">Gbit/s (log)</text>'
               % (H // 2, H // 2))
    for i, (name, pts) in enumerate(sorted(series.items())):
        c = COLORS[i % len(COLORS)]
        dash = "" if name.endswith(": kvwire") else ' stroke-dasharray="6 3"'
        pts = [(s, g) for s, g in pts if g > 0]
        path = " ".join("%.1f,%.1f" % (x(s), y(g)) for s, g in pts)
        out.append('<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>' % (c, dash, path))
        for s, g in pts:
            out.append('<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>' % (x(s), y(g), c))
        ly = T + 20 + i * 20
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>'
                   % (W - R + 15, ly, W - R + 45, ly, c, dash))
        out.append('<text x="%d" y="%d">%s</text>' % (W - R + 52, ly + 4, name))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", nargs="+")
    ap.add_argument("-o", "--output", default="-")
    ap.add_argument("--title", default="kvwire-bench: bandwidth vs message size (dashed: peer tools)")
    a = ap.parse_args()
    series = load(a.csv)
    if not series:
        sys.exit("plot.py: no rows with status ok in %s" % ", ".join(a.csv))
    text = svg(series, a.title)
    if a.output == "-":
        sys.stdout.write(text)
    else:
        with open(a.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
