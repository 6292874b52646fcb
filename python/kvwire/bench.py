# SPDX-License-Identifier: MIT
"""The kv transfer of `kvwire-bench kv --loopback`, driven from Python, side by side.

    python3 -m kvwire.bench kv --driver shm --model llama3-8b --tokens 4096 --repeat 3

Each round runs the C bench (`kvwire-bench kv --loopback ... --json`) and then
the same transfer through this package: two processes (this one sends, a
child receives), memory from kvw_mem_alloc on both sides, one Endpoint.send()
per layer (KVW_SEND_LAST on the last) into a seeded random permutation of a
decode pool --pool-factor times larger than the sequence, one sequence at a
time, -n sequences, bandwidth = payload bytes between the first send and the
last completion on the sender. Like the C bench, every page carries a stamp
per request that the receiver checks when the request lands, and at the end
the receiver compares every landed byte with the pattern it regenerates. It
prints the figures of both and the ratio python / C (median of the rounds).

`--python-only` skips the C bench; `--send-pool` / `--recv-pool` choose
where the pools live (alloc: kvw_mem_alloc, numpy / torch: registered arrays).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODELS = {  # name: layers, kv heads, head dim, kv factor (as bench/model.c)
    "llama3-8b": (32, 8, 128, 2),
    "llama3-70b": (80, 8, 128, 2),
    "qwen3-8b": (36, 8, 128, 2),
    "qwen3-235b": (94, 4, 128, 2),
    "deepseek-v3": (61, 1, 576, 1),
}
SEQ_BASE = 1
_M1 = 0x9E3779B97F4A7C15
_M2 = 0xBF58476D1CE4E5B9
_M3 = 0x94D049BB133111EB


def shape(model: str, tokens: int, block_tokens: int = 16, dtype_bytes: int = 2
          ) -> tuple[int, int, int]:
    """(layers, blocks per sequence, block bytes) of a kv preset."""
    layers, heads, dim, kvf = MODELS[model]
    return layers, (tokens + block_tokens - 1) // block_tokens, block_tokens * heads * dim * kvf * dtype_bytes


# ------------------------------------------------------------------ patterns
def fill_pattern(np: Any, pool64: Any, layer: int, blocks: Any, seed: int) -> None:
    """pool64[layer, blocks[i], :] = pattern(layer, i): every word distinct."""
    words = pool64.shape[2]
    j = np.arange(words, dtype=np.uint64)
    for i, b in enumerate(blocks):
        pool64[layer, int(b)] = pattern_page(np, j, layer, i, seed)


def pattern_page(np: Any, j: Any, layer: int, i: int, seed: int) -> Any:
    with np.errstate(over="ignore"):
        k = np.uint64((seed * _M1 + layer * _M2 + i * _M3) & 0xFFFFFFFFFFFFFFFF)
        x = (j + k) * np.uint64(_M1)
        return x ^ (x >> np.uint64(29))


def stamps(np: Any, n_layers: int, n: int, k: int, seed: int) -> Any:
    """uint64 [n_layers, n]: the stamp of request k on each page."""
    with np.errstate(over="ignore"):
        l = np.arange(n_layers, dtype=np.uint64)[:, None]
        i = np.arange(n, dtype=np.uint64)[None, :]
        x = (l * np.uint64(_M2) + i * np.uint64(_M3) + np.uint64((k * _M1 + seed) & (2**64 - 1)))
        x = x ^ (x >> np.uint64(31))
        return x * np.uint64(_M1) | np.uint64(1)


# ------------------------------------------------------------------ pools
def make_pool(ctx: Any, kind: str, nbytes: int) -> Any:
    """A Memory of `nbytes`: kvw_mem_alloc ("alloc") or a registered array."""
    if kind == "alloc":
        return ctx.alloc(nbytes)
    if kind == "numpy":
        import numpy as np
        return ctx.register(np.zeros(nbytes, dtype=np.uint8))
    if kind == "torch":
        import torch
        return ctx.register(torch.zeros(nbytes, dtype=torch.uint8))
    raise ValueError(f"pool kind {kind!r}: alloc, numpy or torch")


def pool_u64(mem: Any, n_layers: int, n_blocks: int, bb: int) -> Any:
    import numpy as np
    if mem.allocated:
        return mem.numpy("uint64", (n_layers, n_blocks, bb // 8))
    own = mem.owner
    if isinstance(own, np.ndarray):
        return own.view(np.uint64).reshape(n_layers, n_blocks, bb // 8)
    return own.numpy().view(np.uint64).reshape(n_layers, n_blocks, bb // 8)  # torch


def dpdk_addresses(tag: str) -> tuple[str, str]:
    """(listen URI with the server's EAL, the client's EAL) over net_memif, as the C bench."""
    os.makedirs("/run/kvwire", exist_ok=True)
    sock = f"/run/kvwire/pybench-{tag}.sock"
    try:
        os.unlink(sock)
    except OSError:
        pass
    cl = 1 if (os.cpu_count() or 1) > 1 else 0
    base = "--no-huge --no-pci -m 512 --log-level=lib.eal:warning"
    cli = f"{base} -l {cl} --file-prefix=kvwpbC{tag} --vdev=net_memif0,role=client,socket={sock}"
    srv = f"{base} -l 0 --file-prefix=kvwpbS{tag} --vdev=net_memif0,role=server,socket={sock}"
    return "dpdk://127.0.0.1:7000?eal=" + srv.replace(" ", "+"), cli


# ------------------------------------------------------------------ receiver
def run_receiver(a: argparse.Namespace) -> int:
    import numpy as np
    import kvwire
    L, nblk, bb = shape(a.model, a.tokens)
    pool = nblk * a.pool_factor
    ctx = kvwire.Context(timeout_ms=a.timeout_ms)
    mem = make_pool(ctx, a.recv_pool, L * pool * bb)
    lay = kvwire.Layout(mem, L, pool, bb)
    p64 = pool_u64(mem, L, pool, bb)
    perm = np.random.default_rng(a.seed).permutation(pool)[:nblk].astype(np.uint32)
    lsn = ctx.listen(a.listen)
    print("URI " + lsn.uri, flush=True)
    ep = lsn.accept(30)
    if ep is None:
        print(json.dumps({"error": "no sender connected within 30 s"}), flush=True)
        return 1
    stamp_bad = 0
    t_first = None
    for k in range(a.n):
        r = ep.recv(SEQ_BASE + k, lay, perm)
        if t_first is None:
            t_first = time.monotonic()
        r.wait()
        if not np.array_equal(p64[:, perm, 0], stamps(np, L, nblk, k, a.seed)):
            stamp_bad += 1
        r.free()
    t_last = time.monotonic()
    bad_pages = 0
    if a.verify:
        j = np.arange(bb // 8, dtype=np.uint64)
        last = stamps(np, L, nblk, a.n - 1, a.seed)
        for layer in range(L):
            for i in range(nblk):
                want = pattern_page(np, j, layer, i, a.seed)
                want[0] = last[layer, i]
                if not np.array_equal(p64[layer, perm[i]], want):
                    bad_pages += 1
    c = ep.counters()
    out = {"verified": bool(a.verify and bad_pages == 0 and stamp_bad == 0), "bad_pages": bad_pages,
           "stamp_bad": stamp_bad, "pages": L * nblk, "recv_seconds": t_last - (t_first or t_last),
           "bytes_rx": c.bytes_rx, "pool": a.recv_pool}
    del p64
    print(json.dumps(out), flush=True)
    # wait for the sender to hang up, so that its last completion is not cut short
    end = time.monotonic() + 10
    while ep.status == 0 and time.monotonic() < end:
        ctx.poll(0.05)
    ctx.close(force=True)
    return 0


# ------------------------------------------------------------------ sender
def run_python(a: argparse.Namespace, fresh: bool = True) -> dict:
    """One Python transfer between two new processes (a sender and its receiver
    child), as kvwire-bench forks fresh ones: DPDK's EAL starts once per process,
    so a process cannot meet a second memif socket. Returns the figures."""
    if not fresh:
        return _run_python(a)
    args = [sys.executable, "-m", "kvwire.bench", "_pair", "--driver", a.driver, "--model", a.model,
            "--tokens", str(a.tokens), "-n", str(a.n), "--pool-factor", str(a.pool_factor),
            "--seed", str(a.seed), "-q", str(a.rails), "--timeout-ms", str(a.timeout_ms),
            "--send-pool", a.send_pool, "--recv-pool", a.recv_pool]
    if not a.verify:
        args.append("--no-verify")
    if a.inject_corruption:
        args.append("--inject-corruption")
    r = subprocess.run(args, capture_output=True, text=True, timeout=900)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if r.returncode != 0 or not last.startswith("{"):
        err = r.stderr.strip().splitlines()
        import kvwire
        raise kvwire.KvwireError(f"python transfer ({a.driver}) failed: "
                                 + (err[-1] if err else f"exit {r.returncode}"),
                                 status=_errstatus(err[-1] if err else ""))
    return json.loads(last)


def _errstatus(line: str) -> int:
    import re
    from kvwire import _abi
    m = re.search(r"(KVW_ERR_[A-Z_]+)", line)
    names = {v: k for k, v in _abi.STATUS_NAMES.items()}
    return names.get(m.group(1), -1) if m else -1


def _run_python(a: argparse.Namespace) -> dict:
    import numpy as np
    import kvwire
    L, nblk, bb = shape(a.model, a.tokens)
    tag = f"{os.getpid()}x{int(time.monotonic() * 1000) % 100000}"
    env = dict(os.environ)
    cfg: dict[str, Any] = {"timeout_ms": a.timeout_ms}
    if a.driver == "shm":
        listen = f"shm:///tmp/kvwire-pybench-{tag}.sock"
    elif a.driver in ("tcp", "rdma"):
        listen = f"{a.driver}://127.0.0.1:0"
    elif a.driver == "dpdk":
        listen, cli_eal = dpdk_addresses(tag)
        cfg["dpdk_eal"] = cli_eal
    else:
        raise SystemExit(f"--driver {a.driver}: shm, tcp, rdma or dpdk")
    if a.rails > 1:
        listen += ("&" if "?" in listen else "?") + f"rails={a.rails}"
    args = [sys.executable, "-m", "kvwire.bench", "_recv", "--listen", listen, "--model", a.model,
            "--tokens", str(a.tokens), "-n", str(a.n), "--pool-factor", str(a.pool_factor),
            "--seed", str(a.seed), "--recv-pool", a.recv_pool, "--timeout-ms", str(a.timeout_ms)]
    if not a.verify:
        args.append("--no-verify")
    child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = child.stdout.readline()
        if not line.startswith("URI "):
            raise RuntimeError(f"receiver did not start: {line!r}")
        uri = line[4:].strip()
        ctx = kvwire.Context(cfg)
        mem = make_pool(ctx, a.send_pool, L * nblk * bb)
        lay = kvwire.Layout(mem, L, nblk, bb)
        p64 = pool_u64(mem, L, nblk, bb)
        blocks = np.arange(nblk, dtype=np.uint32)
        for layer in range(L):
            fill_pattern(np, p64, layer, blocks, a.seed)
        ep = ctx.connect(uri, timeout=30)
        t_first = t_last = None
        lat = []
        for k in range(a.n):
            t0 = time.monotonic()
            if t_first is None:
                t_first = t0
            p64[:, :, 0] = stamps(np, L, nblk, k, a.seed)
            if a.inject_corruption and k == 0:
                p64[L // 2, nblk // 3, 5] ^= np.uint64(1 << 17)  # past the stamp: only the hash sees it
            req = None
            for layer in range(L):
                req = ep.send(SEQ_BASE + k, lay, blocks, layer, layer + 1)
            req.wait()
            t_last = time.monotonic()
            lat.append(t_last - t0)
            req.free()
        c = ep.counters()
        del p64
        res = child.stdout.readline()
        ep.close()
        child.wait(30)
        recv = json.loads(res) if res.strip() else {"error": "receiver printed nothing"}
        secs = t_last - t_first
        byts = a.n * L * nblk * bb
        ctx.close(force=True)
        return {"gbit_per_s": byts * 8 / secs / 1e9, "seconds": secs, "bytes": byts,
                "verified": recv.get("verified", False), "receiver": recv,
                "p50_ms": statistics.median(lat) * 1e3, "retransmits": c.retransmits,
                "send_pool": a.send_pool, "recv_pool": a.recv_pool}
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def find_bench(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    for env in ("KVWIRE_BUILD_DIR",):
        d = os.environ.get(env)
        if d and (Path(d) / "bench" / "kvwire-bench").exists():
            return str(Path(d) / "bench" / "kvwire-bench")
    here = Path(__file__).resolve().parent.parent.parent
    if (here / "build" / "bench" / "kvwire-bench").exists():
        return str(here / "build" / "bench" / "kvwire-bench")
    return shutil.which("kvwire-bench")


def run_c(a: argparse.Namespace, bench: str) -> dict:
    cmd = [bench, "kv", "--loopback", "--driver", a.driver, "--model", a.model, "--tokens",
           str(a.tokens), "-n", str(a.n), "--pool-factor", str(a.pool_factor), "--json",
           "--timeout-ms", str(a.timeout_ms)]
    if a.rails > 1:
        cmd += ["-q", str(a.rails)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr[-2000:]}")
    j = json.loads(r.stdout[r.stdout.index("{"):])
    return {"gbit_per_s": j["gbit_per_s"], "seconds": j["seconds"], "bytes": j["bytes"],
            "verified": j["verified"], "p50_ms": j.get("p50_us", 0) / 1e3,
            "retransmits": j.get("retransmits", 0), "command": " ".join(cmd)}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python3 -m kvwire.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("test", choices=["kv", "_recv", "_pair"])
    ap.add_argument("--driver", default="shm")
    ap.add_argument("--model", default="llama3-8b", choices=sorted(MODELS))
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("-n", type=int, default=5, help="sequences a round (C bench default: 5)")
    ap.add_argument("--pool-factor", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="rounds (median reported)")
    ap.add_argument("-q", "--rails", type=int, default=1)
    ap.add_argument("--timeout-ms", type=int, default=60000)
    ap.add_argument("--send-pool", default="alloc", choices=["alloc", "numpy", "torch"])
    ap.add_argument("--recv-pool", default="alloc", choices=["alloc", "numpy", "torch"])
    ap.add_argument("--python-only", action="store_true")
    ap.add_argument("--inject-corruption", action="store_true",
                    help="flip one sent bit (shows that the verification catches it)")
    ap.add_argument("--no-verify", dest="verify", action="store_false")
    ap.add_argument("--bench", help="kvwire-bench to compare with (default: the build's)")
    ap.add_argument("--listen", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return ap


def options(argv: list[str]) -> argparse.Namespace:
    """The options of `argv` (e.g. ["kv", "--driver", "tcp"]), for run_python()/run_c()."""
    return parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    a = ap.parse_args(argv)
    if a.test == "_recv":
        return run_receiver(a)
    if a.test == "_pair":
        import kvwire
        for attempt in range(2 if a.driver == "dpdk" else 1):
            try:
                print(json.dumps(_run_python(a)), flush=True)
                return 0
            except kvwire.TimedOutError as e:
                # a memif link that never came up (DPDK 22.11, now and then; bench/compare.c
                # retries testpmd the same way): once more, with a fresh socket
                if attempt or "handshake" not in str(e):
                    raise
                print(f"kvwire.bench: {e}; once more", file=sys.stderr)
        return 1
    if a.driver == "shm" and a.send_pool != "alloc":
        ap.error("the shm driver sends only from kvw_mem_alloc memory: --send-pool alloc")
    bench = None if a.python_only else find_bench(a.bench)
    if not a.python_only and not bench:
        ap.error("kvwire-bench not found: give --bench PATH, set KVWIRE_BUILD_DIR, or --python-only")
    rounds = []
    for i in range(a.repeat):
        # alternate which goes first, so neither always meets the other's page cache
        if bench and i % 2:
            p = run_python(a)
            c = run_c(a, bench)
        else:
            c = run_c(a, bench) if bench else None
            p = run_python(a)
        rounds.append({"c": c, "python": p})
        if not a.json:
            cs = f"C {c['gbit_per_s']:6.2f} Gb/s" if c else "C -"
            ratio = f"  ratio {p['gbit_per_s'] / c['gbit_per_s']:.3f}" if c else ""
            print(f"round {i + 1}: {cs}  python {p['gbit_per_s']:6.2f} Gb/s{ratio}  "
                  f"verified {p['verified']}/{c['verified'] if c else '-'}", flush=True)
    py = statistics.median(r["python"]["gbit_per_s"] for r in rounds)
    out: dict[str, Any] = {"driver": a.driver, "model": a.model, "tokens": a.tokens, "n": a.n,
                           "rounds": rounds, "python_gbit_per_s": py,
                           "verified": all(r["python"]["verified"] and
                                           (r["c"] is None or r["c"]["verified"]) for r in rounds)}
    if bench:
        cg = statistics.median(r["c"]["gbit_per_s"] for r in rounds)
        out["c_gbit_per_s"] = cg
        out["ratios"] = [r["python"]["gbit_per_s"] / r["c"]["gbit_per_s"] for r in rounds]
        # each round runs C then Python back to back: the median of the paired
        # ratios follows the machine's drifting load better than a ratio of medians
        out["ratio"] = statistics.median(out["ratios"])
        out["ratio_of_medians"] = py / cg
    if a.json:
        print(json.dumps(out))
    else:
        L, nblk, bb = shape(a.model, a.tokens)
        print(f"{a.model} {a.tokens} tokens: {L} layers x {nblk} blocks x {bb} B "
              f"({L * nblk * bb / 2**20:.0f} MiB a sequence), {a.n} sequences a round, "
              f"driver {a.driver}, {a.repeat} rounds")
        print(f"python (kvwire package): {py:.2f} Gb/s median")
        if bench:
            print(f"C (kvwire-bench kv --loopback): {out['c_gbit_per_s']:.2f} Gb/s median")
            print(f"ratio python / C: {out['ratio']:.3f} median of the rounds' ratios ("
                  + ", ".join(f"{x:.3f}" for x in out["ratios"]) +
                  f"); ratio of the medians {out['ratio_of_medians']:.3f}")
        print(f"verified: {'yes' if out['verified'] else 'NO'}")
    return 0 if out["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
