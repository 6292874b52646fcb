# SPDX-License-Identifier: MIT
"""One command: a disaggregated run of a small Llama-architecture model.

    python3 examples/disagg/run.py                 # the default driver (dpdk over memif, else shm)
    python3 examples/disagg/run.py --driver tcp --prompts 5,37,600 --max-tokens 12
    python3 examples/disagg/run.py --decode-block-size 16 --decode-kv-layout NHD   # same geometry

It starts a prefill engine and a decode engine (two processes, engine.py,
each with the kvwire vLLM connector) and the proxy (proxy.py), sends each
prompt prefill -> decode, and compares the decode engine's tokens and final
logits with one process that ran prefill and decode itself (bit for bit).
The two engines lay their KV caches out differently (by default the prefill
vLLM's NHD with blocks of 16 tokens, the decode head-major HND with blocks of
32): kvwire moves each token's heads to where the decode's geometry keeps them.
Then the TTFT split (both engines NHD, blocks of 16): the same long prompt with the KV streamed layer by layer
from save_kv_layer, and with the whole cache sent after the prefill.
Prints the tokens, whether they match, and the TTFT split; exits 1 on any
mismatch.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _reexec_with_torch() -> None:
    """Debian's python3-torch is in /usr/bin/python3; a python3 earlier on PATH
    (pyenv, a venv without system packages) may not see it."""
    try:
        import torch  # noqa: F401
        return
    except ImportError:
        pass
    sysp = "/usr/bin/python3"
    if os.path.realpath(sys.executable) != os.path.realpath(sysp) and os.path.exists(sysp):
        r = subprocess.run([sysp, "-c", "import torch"], capture_output=True)
        if r.returncode == 0:
            os.execv(sysp, [sysp, *sys.argv])
    sys.exit("torch is missing: install Debian's python3-torch (bash scripts/install-deps.sh)")


_reexec_with_torch()
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "python"))
if not os.environ.get("KVWIRE_LIB") and not os.environ.get("KVWIRE_BUILD_DIR"):
    os.environ["KVWIRE_BUILD_DIR"] = str(ROOT / "build")

from engine import Engine, prompt_tokens  # noqa: E402  (pins BLAS threads, then torch)
import torch  # noqa: E402
from model import PRESETS  # noqa: E402
from proxy import Proxy, get as _get  # noqa: E402


def proxy_get(url: str, path: str = "/health") -> dict:
    return _get(url, path)

DEFAULT_PROMPTS = [5, 37, 64, 600, 1100]  # within a block, mid-block, whole blocks, > a block-table
BLOCK_TABLE_PAGE = 32                  # page (600 tokens: 38 prefill blocks; 1100: 35 decode blocks of 32)
DECODE_GEOMETRY = (32, "HND")          # the decode engine's default block size and layout


# ------------------------------------------------------------------ engines
class Cluster:
    """Prefill engine(s) + a decode engine, as processes, for one driver."""

    def __init__(self, driver: str, model: str = "tiny", n_prefill: int = 1,
                 transfer_timeout: float = 30.0, layer_delay: float = 0.0,
                 num_blocks: int = 512, extra_args: Optional[list[str]] = None,
                 decode_args: Optional[list[str]] = None,
                 decode_geometry: Optional[tuple[int, str]] = None):
        self.driver = driver
        self.tmp = tempfile.mkdtemp(prefix="kvwire-disagg-")
        self.procs: list[subprocess.Popen] = []
        self.prefills: list[dict] = []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "python"), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        common = ["--model", model, "--transfer-timeout", str(transfer_timeout),
                  "--num-blocks", str(num_blocks), *(extra_args or [])]
        tag = f"{os.getpid()}x{int(time.monotonic() * 1000) % 100000}"
        dec_kvwire: dict[str, Any] = {}
        for i in range(n_prefill):
            if driver == "shm":
                listen, kvw = f"shm://{self.tmp}/prefill{i}.sock", {}
            elif driver == "tcp":
                listen, kvw = "tcp://127.0.0.1:0", {}
            elif driver == "dpdk":
                if n_prefill > 1:
                    raise ValueError("dpdk: one prefill engine (one memif link) in this example")
                os.makedirs("/run/kvwire", exist_ok=True)
                sock = f"/run/kvwire/disagg-{tag}.sock"
                base = "--no-huge --no-pci -m 512 --log-level=lib.eal:warning"
                srv = f"{base} -l 0 --file-prefix=kvwdP{tag} --vdev=net_memif0,role=server,socket={sock}"
                cl = 1 if (os.cpu_count() or 1) > 1 else 0
                dec_kvwire["dpdk_eal"] = (f"{base} -l {cl} --file-prefix=kvwdD{tag} "
                                          f"--vdev=net_memif0,role=client,socket={sock}")
                listen, kvw = "dpdk://127.0.0.1:7000?eal=" + srv.replace(" ", "+"), {}
            elif driver == "rdma":   # a RoCE/IB device's IPv4 address (the test VM's rxe0)
                listen, kvw = f"rdma://{os.environ.get('RXE_IP', '10.78.0.1')}:0", {}
            else:
                raise ValueError(f"driver {driver}: shm, tcp, dpdk or rdma")
            self.prefills.append(self._start(
                ["--role", "prefill", "--kv-listen", listen, "--kvwire", json.dumps(kvw),
                 "--engine-id", f"prefill{i}", "--layer-delay", str(layer_delay), *common]))
        geo = []
        if decode_geometry:     # (block size, "NHD" | "HND"): the decode's own KV geometry
            geo = ["--block-size", str(decode_geometry[0]), "--kv-layout", decode_geometry[1]]
        self.decode = self._start(["--role", "decode", "--kv-listen", "none", "--kvwire",
                                   json.dumps(dec_kvwire), "--engine-id", "decode0", *common,
                                   *geo, *(decode_args or [])])
        try:
            self.proxy = Proxy([p["url"] for p in self.prefills], [self.decode["url"]])
        except Exception as e:
            self.stop()
            raise RuntimeError(f"the engines did not connect: {e}") from e

    def _start(self, args: list[str]) -> dict:
        p = subprocess.Popen([sys.executable, str(HERE / "engine.py"), *args], env=self.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        line = p.stdout.readline()
        if not line.startswith("READY "):
            err = p.stderr.read() if p.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"engine {' '.join(args[:2])} did not start: {line.strip()} "
                               f"{err.strip()[-1500:]}")
        info = json.loads(line[6:])
        info["url"] = f"http://127.0.0.1:{info['http']}"
        info["proc"] = p
        return info

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def logits_of(b64: str) -> torch.Tensor:
    import numpy as np
    return torch.from_numpy(np.frombuffer(base64.b64decode(b64), dtype=np.float32).copy())


def reference(model: str, prompt: list[int], max_tokens: int) -> tuple[list[int], torch.Tensor]:
    """One process that runs prefill and decode itself (no connector)."""
    eng = Engine(PRESETS[model], "both", num_blocks=512)
    r = eng.generate(prompt, max_tokens)
    return r.output_token_ids, r.last_logits


def compare(res: dict, ref_tokens: list[int], ref_logits: torch.Tensor) -> dict:
    if res.get("error"):
        return {"match": False, "why": f"error: {res['error']}"}
    toks_ok = res["token_ids"] == ref_tokens
    lg = logits_of(res["logits_b64"])
    lg_ok = torch.equal(lg, ref_logits)
    why = "" if toks_ok and lg_ok else \
        f"tokens {'equal' if toks_ok else 'differ'}, logits max |diff| {float((lg - ref_logits).abs().max()):.3g}"
    return {"match": toks_ok and lg_ok, "tokens_equal": toks_ok, "logits_equal": lg_ok, "why": why}


def ttft_split(res: dict) -> dict:
    pt, dt = res["prefill"]["times"], res["decode"]["times"]
    t0 = res["t_arrival"]
    return {
        "ttft_ms": (dt["first_token"] - t0) * 1e3,
        "prefill_ms": (pt["first_token"] - pt["arrival"]) * 1e3,
        "after_prefill_ms": (dt["first_token"] - pt["first_token"]) * 1e3,
        "kv_after_prefill_ms": max(0.0, dt["kv_loaded"] - pt["first_token"]) * 1e3,
    }


def ttft_compare(driver: str, model: str, tokens: int, rounds: int,
                 start: Any = None) -> dict:
    """The same prompt with the KV streamed per layer and sent whole after the
    prefill, `rounds` times each (alternating); medians of the TTFT split."""
    tcfg = PRESETS[model]
    prompt = prompt_tokens(7, tokens, tcfg.vocab)
    ref_t, ref_l = reference(model, prompt, 2)
    kvb = tcfg.layers * 2 * tcfg.kv_heads * tcfg.head_dim * 4 * tokens
    ok = True
    rows: dict[str, list[dict]] = {"layerwise": [], "whole": []}
    with (start(model) if start else Cluster(driver, model)) as cl:
        cl.proxy.complete(prompt, 2)                    # warm-up (pages, caches)
        for _ in range(rounds):
            for mode in ("layerwise", "whole"):
                res = cl.proxy.complete(prompt, 2, layerwise=mode == "layerwise")
                c = compare(res, ref_t, ref_l)
                if not c["match"]:
                    ok = False
                    print(f"  {mode}: MISMATCH: {c['why']}", file=sys.stderr)
                    continue
                rows[mode].append(ttft_split(res))
    if not rows["layerwise"] or not rows["whole"]:
        return {"all_match": False, "kv_bytes": kvb}
    med = {m: {k: statistics.median(r[k] for r in v) for k in v[0]} for m, v in rows.items()}
    ls, wh = med["layerwise"], med["whole"]
    hidden = 1 - ls["kv_after_prefill_ms"] / wh["kv_after_prefill_ms"] \
        if wh["kv_after_prefill_ms"] > 0 else 0.0
    return {"all_match": ok, "model": model, "tokens": tokens, "kv_bytes": kvb, "rounds": rounds,
            "layerwise": ls, "whole": wh, "hidden_fraction": hidden, "samples": rows}


def default_driver() -> tuple[str, str]:
    """The quick start's choice: dpdk over memif where it can run, else shm (and why)."""
    import kvwire
    if "dpdk" not in kvwire.drivers_built():
        return "shm", "this libkvwire has no dpdk driver (libdpdk-dev missing at build time)"
    if os.geteuid() != 0:
        return "shm", "the dpdk driver needs root here (EAL --no-huge, memif under /run)"
    return "dpdk", ""


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--driver", choices=["shm", "tcp", "dpdk"])
    ap.add_argument("--model", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--prompts", default=",".join(map(str, DEFAULT_PROMPTS)),
                    help="prompt lengths, comma separated")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--decode-block-size", type=int, default=DECODE_GEOMETRY[0],
                    help="the decode engine's tokens per KV block (the prefill's: 16)")
    ap.add_argument("--decode-kv-layout", choices=["NHD", "HND"], default=DECODE_GEOMETRY[1],
                    help="the decode engine's KV layout (the prefill's: NHD)")
    ap.add_argument("--ttft-model", default="ttft", choices=sorted(PRESETS))
    ap.add_argument("--ttft-tokens", type=int, default=512)
    ap.add_argument("--ttft-rounds", type=int, default=3)
    ap.add_argument("--no-ttft", action="store_true")
    ap.add_argument("--mode", choices=["concurrent", "sequential"], default="concurrent")
    ap.add_argument("--json", action="store_true", help="also print one JSON line of results")
    a = ap.parse_args(argv)
    driver, why = (a.driver, "") if a.driver else default_driver()
    if why:
        print(f"kvwire: {why}; using the shm driver", file=sys.stderr)
    lengths = [int(x) for x in a.prompts.split(",") if x]
    out: dict[str, Any] = {"driver": driver, "model": a.model, "results": []}
    ok = True

    dgeo = (a.decode_block_size, a.decode_kv_layout)

    def start(model: str, geo: Optional[tuple[int, str]] = None) -> Cluster:
        nonlocal driver
        try:
            return Cluster(driver, model, decode_geometry=geo)
        except RuntimeError as e:
            if driver == "dpdk" and "did not connect" in str(e):
                # a memif link that never came up (DPDK 22.11, now and then): once more
                print(f"kvwire: {e}; starting the engines once more", file=sys.stderr)
                try:
                    return Cluster(driver, model, decode_geometry=geo)
                except RuntimeError as e2:
                    e = e2
            if driver != "dpdk" or a.driver:
                raise
            print(f"kvwire: the dpdk driver could not run here ({str(e)[:300]}); falling back "
                  f"to the shm driver", file=sys.stderr)
            driver = out["driver"] = "shm"
            return Cluster(driver, model, decode_geometry=geo)

    cfg = PRESETS[a.model]
    print(f"model {a.model}: {cfg.layers} layers, hidden {cfg.hidden}, {cfg.heads} heads / "
          f"{cfg.kv_heads} KV heads x {cfg.head_dim}; KV cache: prefill NHD blocks of "
          f"{cfg.block_size} tokens, decode {dgeo[1]} blocks of {dgeo[0]}; driver {driver}")
    out["decode_geometry"] = {"block_size": dgeo[0], "kv_layout": dgeo[1]}
    with start(a.model, dgeo) as cl:
        cl.proxy.mode = a.mode
        for i, n in enumerate(lengths):
            prompt = prompt_tokens(100 + i, n, cfg.vocab)
            ref_t, ref_l = reference(a.model, prompt, a.max_tokens)
            res = cl.proxy.complete(prompt, a.max_tokens)
            c = compare(res, ref_t, ref_l)
            ok &= c["match"]
            note = []
            if n % cfg.block_size or n % dgeo[0]:
                note.append("ends mid-block")
            for side, bs in (("prefill", cfg.block_size), ("decode", dgeo[0])):
                nblk = (n + bs - 1) // bs
                if nblk > BLOCK_TABLE_PAGE:
                    note.append(f"{nblk} {side} blocks > a {BLOCK_TABLE_PAGE}-block table page")
            print(f"prompt {n:5d} tokens{' (' + ', '.join(note) + ')' if note else ''}: "
                  f"decode {res.get('token_ids')}  reference {ref_t}  "
                  f"{'MATCH (tokens and final logits bit for bit)' if c['match'] else 'MISMATCH: ' + c['why']}")
            out["results"].append({"tokens": n, "decode": res.get("token_ids"),
                                   "reference": ref_t, **c})
    if not a.no_ttft:
        r = ttft_compare(driver, a.ttft_model, a.ttft_tokens, a.ttft_rounds, start)
        ok &= r["all_match"]
        out["ttft"] = r
        ls, wh, tcfg = r["layerwise"], r["whole"], PRESETS[a.ttft_model]
        print(f"TTFT split, model {a.ttft_model} ({tcfg.layers} layers), {a.ttft_tokens}-token "
              f"prompt, {r['kv_bytes'] / 2**20:.1f} MiB of KV, driver {driver}, median of "
              f"{a.ttft_rounds}:")
        for name, m in (("layer-wise streaming", ls), ("whole cache after prefill", wh)):
            print(f"  {name:26s} TTFT {m['ttft_ms']:8.1f} ms = prefill {m['prefill_ms']:7.1f} ms "
                  f"+ prefill's last layer -> decode's first token {m['after_prefill_ms']:6.1f} ms "
                  f"(KV still moving after the prefill: {m['kv_after_prefill_ms']:6.1f} ms)")
        print(f"  transfer hidden behind prefill with streaming: {r['hidden_fraction'] * 100:.0f} % "
              f"of what whole-cache leaves after the prefill "
              f"(last layer -> first token {wh['after_prefill_ms'] - ls['after_prefill_ms']:+.1f} ms)")
    print("all match: " + ("yes" if ok else "NO"))
    if a.json:
        print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
