# SPDX-License-Identifier: MIT
"""TTFT split of examples/disagg (model "ttft", 512-token prompt, median of 5)
with the decode engine at the prefill's KV geometry (NHD, blocks of 16) and at
HND blocks of 32:  python3 bench/ttft-geom.py shm|tcp|dpdk  (bench/RESULTS.md)."""
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "examples", "disagg"))
sys.path.insert(0, os.path.join(ROOT, "python"))
os.environ.setdefault("KVWIRE_BUILD_DIR", os.path.join(ROOT, "build"))

import run as disagg  # noqa: E402

drv = sys.argv[1] if len(sys.argv) > 1 else "shm"
for geo in [None, (32, "HND")]:
    r = disagg.ttft_compare(drv, "ttft", 512, 5,
                            start=lambda m: disagg.Cluster(drv, m, decode_geometry=geo))
    ls, wh = r["layerwise"], r["whole"]
    print(f"{drv} decode {geo or 'same (NHD 16)'}: match {r['all_match']}; streaming TTFT "
          f"{ls['ttft_ms']:.1f} ms, KV after prefill {ls['kv_after_prefill_ms']:.1f} ms | whole "
          f"TTFT {wh['ttft_ms']:.1f} ms, KV after prefill {wh['kv_after_prefill_ms']:.1f} ms")
