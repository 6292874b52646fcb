# SPDX-License-Identifier: MIT
"""A small inference engine in the shape of vLLM V1, driving the kvwire vLLM
connector through the same calls, in the same order, as vLLM's scheduler and
model runner (vllm/v1/core/sched/scheduler.py, vllm/v1/worker/gpu_model_runner.py):

 schedule():  get_num_new_matched_tokens -> allocate blocks ->
              update_state_after_alloc -> (WAITING_FOR_REMOTE_KVS | scheduled)
              ... build_connector_meta(scheduler_output)
 execute():   bind_connector_metadata -> start_load_kv -> per layer:
              wait_for_layer_load, attention, save_kv_layer -> wait_for_save ->
              get_finished(finished_req_ids) -> clear_connector_metadata
              (a step with nothing to compute runs the connector calls alone,
              as vLLM's kv_connector_no_forward does)
 update():    update_connector_output; finished_recving -> runnable;
              finished_sending -> free blocks; a finished request ->
              request_finished(request, block_ids) -> free now or later

Roles: "prefill" (requests with do_remote_decode: compute the prompt, push
its KV, answer with the first token and the kv_transfer_params), "decode"
(requests with do_remote_prefill: grant blocks, wait for the KV, generate),
"both" (one process, no connector: the reference the disaggregated run is
compared with). `python3 engine.py --role prefill --http 0 ...` serves it
over HTTP (see proxy.py, run.py).
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import os
import queue
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if (HERE.parent.parent / "python" / "kvwire").is_dir():
    sys.path.insert(0, str(HERE.parent.parent / "python"))

from model import PRESETS, ModelConfig, TinyLlama, pin_threads  # noqa: E402  (before torch)
import torch  # noqa: E402

pin_threads()   # one arithmetic, bit for bit, in every process


def _rs():
    from kvwire.connectors.vllm import RequestStatus
    return RequestStatus


# ------------------------------------------------------------------ vLLM shapes
@dataclass
class Request:
    """The fields of vLLM's Request a connector reads, plus engine bookkeeping."""
    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    kv_transfer_params: Optional[dict] = None
    status: Any = None
    num_computed_tokens: int = 0
    output_token_ids: list[int] = field(default_factory=list)
    block_ids: list[int] = field(default_factory=list)
    last_logits: Optional[torch.Tensor] = None
    error: Optional[dict] = None
    out_params: Optional[dict] = None
    times: dict = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids


@dataclass
class KVCacheBlocks:
    blocks: list[int]

    def get_block_ids(self) -> tuple[list[int], ...]:
        return (list(self.blocks),)


@dataclass
class NewRequestData:
    req_id: str
    prompt_token_ids: list[int]
    block_ids: tuple[list[int], ...]
    num_computed_tokens: int


@dataclass
class CachedRequestData:
    req_ids: list[str] = field(default_factory=list)
    new_block_ids: list[Optional[tuple[list[int], ...]]] = field(default_factory=list)
    num_computed_tokens: list[int] = field(default_factory=list)


@dataclass
class SchedulerOutput:
    scheduled_new_reqs: list[NewRequestData]
    scheduled_cached_reqs: CachedRequestData
    num_scheduled_tokens: dict[str, int]
    total_num_scheduled_tokens: int
    finished_req_ids: set[str]
    kv_connector_metadata: Any = None


@dataclass
class KVConnectorOutput:
    finished_sending: Optional[set[str]] = None
    finished_recving: Optional[set[str]] = None


class BlockPool:
    """Free KV blocks; `shuffle` gives each engine its own block order, so a
    request's blocks differ between prefill and decode (scattered grants)."""

    def __init__(self, n: int, shuffle: Optional[int] = None):
        self.free = list(range(n))
        if shuffle is not None:
            random.Random(shuffle).shuffle(self.free)
        self.n = n

    def allocate(self, k: int) -> Optional[list[int]]:
        if k > len(self.free):
            return None
        out, self.free = self.free[:k], self.free[k:]
        return out

    def release(self, ids: list[int]) -> None:
        self.free.extend(ids)

    @property
    def used(self) -> int:
        return self.n - len(self.free)


def logits_b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.contiguous().numpy().tobytes()).decode()


# ------------------------------------------------------------------ engine
class Engine:
    def __init__(self, cfg: ModelConfig, role: str = "both", num_blocks: int = 512,
                 kv_config: Optional[dict] = None, engine_id: Optional[str] = None,
                 max_batched_tokens: Optional[int] = None, layer_delay: float = 0.0,
                 block_shuffle: Optional[int] = None, corrupt_after_load: bool = False):
        self.cfg = cfg
        self.corrupt_after_load = corrupt_after_load
        self.role = role
        self.model = TinyLlama(cfg)
        self.layer_names = [f"model.layers.{i}.self_attn.attn" for i in range(cfg.layers)]
        self.pool = BlockPool(num_blocks, block_shuffle)
        self.max_batched_tokens = max_batched_tokens
        self.layer_delay = layer_delay
        self.requests: dict[str, Request] = {}
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self.delayed_free: dict[str, Request] = {}
        self._finished_ids: set[str] = set()
        self.finished: list[Request] = []
        self.sched_conn = self.work_conn = None
        RS = _rs()
        self.RS = RS
        if role in ("prefill", "decode"):
            from kvwire.connectors.vllm import (CacheConfig, KVConnectorRole, KVTransferConfig,
                                                KVWireConnector, VllmConfig)
            extra = {"kv_layout": cfg.kv_layout, **(kv_config or {})}
            ktc = KVTransferConfig(kv_connector="KVWireConnector",
                                   kv_role="kv_producer" if role == "prefill" else "kv_consumer",
                                   engine_id=engine_id or f"{role}-{os.getpid()}",
                                   kv_connector_extra_config=extra)
            vc = VllmConfig(ktc, CacheConfig(cfg.block_size))
            self.work_conn = KVWireConnector(vc, KVConnectorRole.WORKER)
            self.sched_conn = KVWireConnector(vc, KVConnectorRole.SCHEDULER)
            self.kv_caches = self.work_conn.alloc_kv_caches(
                self.layer_names, num_blocks, cfg.kv_heads, cfg.head_dim, cfg.torch_dtype)
            self.work_conn.register_kv_caches(self.kv_caches)
        else:
            self.kv_caches = {n: torch.zeros(self.model.cache_shape(num_blocks),
                                             dtype=cfg.torch_dtype)
                              for n in self.layer_names}
        self.caches = [self.kv_caches[n] for n in self.layer_names]

    # ---- requests
    def add_request(self, req: Request) -> None:
        req.status = self.RS.WAITING
        req.times.setdefault("arrival", time.monotonic())
        self.requests[req.request_id] = req
        self.waiting.append(req)

    def abort_request(self, rid: str) -> None:
        req = self.requests.get(rid)
        if req is None or self.RS.is_finished(req.status):
            return
        req.status = self.RS.FINISHED_ABORTED
        req.error = {"status": "ABORTED", "message": "aborted by the client"}
        for q in (self.waiting, self.running):
            if req in q:
                q.remove(req)
        self._free_request(req)

    def has_work(self) -> bool:
        # finished ids still to hand the worker count too (vLLM: has_finished_requests)
        return bool(self.waiting or self.running or self.delayed_free or self._finished_ids or
                    (self.work_conn is not None and self.work_conn.busy()))

    def runnable(self) -> bool:
        return bool(self.running) or any(r.status == self.RS.WAITING for r in self.waiting)

    # ---- scheduler
    def schedule(self) -> SchedulerOutput:
        RS, bs = self.RS, self.cfg.block_size
        budget = self.max_batched_tokens or 1 << 30
        new_reqs, cached = [], CachedRequestData()
        num_sched: dict[str, int] = {}
        for req in list(self.running):
            todo = req.num_tokens - req.num_computed_tokens
            n = min(todo, budget)
            if n <= 0:
                continue
            need = (req.num_computed_tokens + n + bs - 1) // bs - len(req.block_ids)
            new_blocks = None
            if need > 0:
                new_blocks = self.pool.allocate(need)
                if new_blocks is None:
                    continue            # no preemption in this small engine: wait
                req.block_ids += new_blocks
            num_sched[req.request_id] = n
            budget -= n
            cached.req_ids.append(req.request_id)
            cached.new_block_ids.append((new_blocks,) if new_blocks else None)
            cached.num_computed_tokens.append(req.num_computed_tokens)
        for req in list(self.waiting):
            if req.status != RS.WAITING or budget <= 0:
                continue
            ext, load_async = 0, False
            if self.sched_conn is not None:
                e, load_async = self.sched_conn.get_num_new_matched_tokens(req, req.num_computed_tokens)
                ext = e or 0
            n_prompt = req.num_prompt_tokens
            blocks = self.pool.allocate((n_prompt + bs - 1) // bs)
            if blocks is None:
                continue
            req.block_ids = blocks
            if self.sched_conn is not None:
                self.sched_conn.update_state_after_alloc(req, KVCacheBlocks(blocks), ext)
            if load_async:
                req.status = RS.WAITING_FOR_REMOTE_KVS
                req.times["waiting_for_kv"] = time.monotonic()
                continue
            req.num_computed_tokens += ext
            n = min(n_prompt - req.num_computed_tokens, budget)
            self.waiting.remove(req)
            self.running.append(req)
            req.status = RS.RUNNING
            num_sched[req.request_id] = n
            budget -= n
            new_reqs.append(NewRequestData(req.request_id, req.prompt_token_ids, (blocks,),
                                           req.num_computed_tokens))
        out = SchedulerOutput(new_reqs, cached, num_sched, sum(num_sched.values()),
                              self._finished_ids)
        self._finished_ids = set()
        if self.sched_conn is not None:
            out.kv_connector_metadata = self.sched_conn.build_connector_meta(out)
        return out

    # ---- model runner
    def execute(self, out: SchedulerOutput) -> tuple[dict[str, tuple[int, torch.Tensor]],
                                                     KVConnectorOutput]:
        wc = self.work_conn
        if wc is not None:
            wc.bind_connector_metadata(out.kv_connector_metadata)
            wc.start_load_kv(None)
        batch = []
        for rid, n in out.num_scheduled_tokens.items():
            req = self.requests[rid]
            start = req.num_computed_tokens
            batch.append((req, start, req.all_token_ids[start:start + n]))
        sampled: dict[str, tuple[int, torch.Tensor]] = {}
        if batch:
            hs = {req.request_id: self.model.embed_tokens(toks) for req, _, toks in batch}
            for li, name in enumerate(self.layer_names):
                if wc is not None:
                    wc.wait_for_layer_load(name)
                for req, start, _ in batch:
                    hs[req.request_id] = self.model.layer(li, hs[req.request_id], start,
                                                          self.caches[li], req.block_ids)
                if wc is not None:
                    wc.save_kv_layer(name, self.kv_caches[name], None)
                if self.layer_delay:
                    self._sleep_progress(self.layer_delay)
            for req, start, toks in batch:
                if start + len(toks) >= req.num_tokens:     # the chunk reaches the last token
                    lg = self.model.logits(hs[req.request_id])[0]
                    sampled[req.request_id] = (int(torch.argmax(lg)), lg)
        kvo = KVConnectorOutput()
        if wc is not None:
            wc.wait_for_save()
            kvo.finished_sending, kvo.finished_recving = wc.get_finished(out.finished_req_ids)
            wc.clear_connector_metadata()
        return sampled, kvo

    def _sleep_progress(self, s: float) -> None:
        end = time.monotonic() + s
        while time.monotonic() < end:
            if self.work_conn is not None:
                self.work_conn.progress(min(0.002, max(0.0, end - time.monotonic())))
            else:
                time.sleep(min(0.002, max(0.0, end - time.monotonic())))

    # ---- update
    def update(self, out: SchedulerOutput, sampled: dict, kvo: KVConnectorOutput) -> None:
        RS = self.RS
        now = time.monotonic()
        for rid, n in out.num_scheduled_tokens.items():
            req = self.requests[rid]
            req.num_computed_tokens += n
            if rid in sampled:
                tok, lg = sampled[rid]
                req.output_token_ids.append(tok)
                req.last_logits = lg
                if "first_token" not in req.times:
                    req.times["first_token"] = now
                if len(req.output_token_ids) >= req.max_tokens:
                    req.status = RS.FINISHED_LENGTH_CAPPED
                    self.running.remove(req)
                    self._free_request(req)
        if self.sched_conn is not None:
            self.sched_conn.update_connector_output(kvo)
        for rid in kvo.finished_recving or ():
            req = self.requests.get(rid)
            if req is None:
                continue
            req.times["kv_loaded"] = now
            err = self.work_conn.get_load_error(rid)
            st = self.work_conn._work().stats.get(rid, {})
            if err is not None:
                req.error = {"status": getattr(err, "status_name", "ERROR"), "message": str(err),
                             "kv_layers_landed": st.get("kv_layers_landed"),
                             "kv_layers_total": st.get("kv_layers_total"),
                             "seconds_waiting": now - req.times.get("waiting_for_kv", now)}
                req.status = RS.FINISHED_ABORTED
                if req in self.waiting:
                    self.waiting.remove(req)
                self._free_request(req)
                continue
            if req not in self.waiting:     # a layerwise load: the request runs in the batch already
                continue
            if self.corrupt_after_load:     # the negative control of the equality tests
                self.caches[0][0, req.block_ids[0], 0, 0, 0] += 1.0
            ro = self.work_conn.get_remote_output(rid) or {}
            req.output_token_ids = list(ro.get("first_token_ids") or [])[:1]
            req.num_computed_tokens = req.num_prompt_tokens
            self.waiting.remove(req)
            if len(req.output_token_ids) >= req.max_tokens:
                req.status = RS.FINISHED_LENGTH_CAPPED
                self._free_request(req)
            else:
                req.status = RS.RUNNING
                self.running.append(req)
        for rid in kvo.finished_sending or ():
            req = self.delayed_free.pop(rid, None)
            if req is not None:
                self.pool.release(req.block_ids)
                req.block_ids = []
                req.times["blocks_freed"] = now
                self._done(req)

    def _free_request(self, req: Request) -> None:
        self._finished_ids.add(req.request_id)
        req.times["finished"] = time.monotonic()
        delay = False
        if self.sched_conn is not None:
            delay, params = self.sched_conn.request_finished(req, (list(req.block_ids),))
            req.out_params = params
        if delay:
            self.delayed_free[req.request_id] = req
            req.done.set()          # the answer can go; the blocks wait for the transfer
        else:
            self.pool.release(req.block_ids)
            req.block_ids = []
            self._done(req)

    def _done(self, req: Request) -> None:
        self.requests.pop(req.request_id, None)
        self.finished.append(req)
        req.done.set()

    # ---- driving
    def step(self) -> None:
        out = self.schedule()
        sampled, kvo = self.execute(out)
        self.update(out, sampled, kvo)

    def run_until_done(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while self.has_work():
            if time.monotonic() > end:
                raise TimeoutError("engine did not finish in time")
            self.step()
            if not self.runnable() and self.work_conn is not None:
                self.work_conn.progress(0.001)

    def generate(self, prompt: list[int], max_tokens: int, rid: str = "r0",
                 params: Optional[dict] = None) -> Request:
        req = Request(rid, list(prompt), max_tokens, params)
        self.add_request(req)
        self.run_until_done()
        return req

    def close(self) -> None:
        if self.work_conn is not None:
            self.work_conn.shutdown()


def result_of(req: Request) -> dict:
    lg = req.last_logits
    return {
        "request_id": req.request_id, "token_ids": req.output_token_ids,
        "kv_transfer_params": req.out_params, "error": req.error,
        "logits_b64": logits_b64(lg) if lg is not None else None,
        "logits_sha256": hashlib.sha256(lg.numpy().tobytes()).hexdigest() if lg is not None else None,
        "times": req.times,
    }


def prompt_tokens(seed: int, n: int, vocab: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g).tolist()


# ------------------------------------------------------------------ serving
class Server:
    """The engine behind HTTP: handler threads queue requests; one thread (the
    caller of serve_forever) owns the engine and its kvwire context."""

    def __init__(self, engine: Engine, port: int):
        self.engine = engine
        self.inbox: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        self.stop = False
        self.peers: list[str] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _reply(self, code: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/health":
                    e = outer.engine
                    self._reply(200, {"role": e.role, "engine_id": e.work_conn.engine_id
                                      if e.work_conn else None,
                                      "kv_uri": e.work_conn.uri if e.work_conn else None,
                                      "blocks_used": e.pool.used, "peers_ready": outer.peers,
                                      "block_size": e.cfg.block_size,
                                      "kv_layout": e.cfg.kv_layout})
                else:
                    self._reply(404, {"error": "no such path"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if self.path == "/abort":
                    outer.inbox.put(("abort", body["request_id"]))
                    self._reply(200, {"ok": True})
                    return
                if self.path == "/kv_connect":      # dial a prefill engine ahead of time
                    outer.inbox.put(("connect", (body["uri"], body.get("engine_id"))))
                    self._reply(200, {"ok": True})
                    return
                if self.path != "/v1/completions":
                    self._reply(404, {"error": "no such path"})
                    return
                req = Request(body.get("request_id") or f"req-{time.monotonic_ns()}",
                              list(body["prompt_token_ids"]), int(body.get("max_tokens", 16)),
                              body.get("kv_transfer_params"))
                req.times["arrival"] = time.monotonic()
                outer.inbox.put(("add", req))
                req.done.wait()
                self._reply(200, result_of(req))

        self.http = ThreadingHTTPServer(("127.0.0.1", port), H)
        self.http.daemon_threads = True
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def serve_forever(self) -> None:
        e = self.engine
        while not self.stop:
            try:
                while True:
                    kind, x = self.inbox.get_nowait()
                    if kind == "add":
                        e.add_request(x)
                    elif kind == "abort":
                        e.abort_request(x)
                    elif kind == "connect" and e.work_conn is not None:
                        e.work_conn.connect(*x)
            except queue.Empty:
                pass
            if e.work_conn is not None:
                self.peers = e.work_conn.peers_ready()
            if e.runnable() or e.has_work():
                e.step()
                if not e.runnable() and e.work_conn is not None:
                    e.work_conn.progress(0.0005)     # waiting for KV: sleep on the fd briefly
            else:
                if e.work_conn is not None:
                    e.work_conn.progress(0)          # answer pings, accept peers
                try:
                    kind, x = self.inbox.get(timeout=0.02)
                    self.inbox.put((kind, x))
                except queue.Empty:
                    pass


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--role", choices=["prefill", "decode", "both"], required=True)
    ap.add_argument("--http", type=int, default=0, help="HTTP port (0: any)")
    ap.add_argument("--kv-listen", default="tcp://127.0.0.1:0", help="kvwire URI to listen on")
    ap.add_argument("--kvwire", default="{}", help="JSON: kvwire config options (dpdk_eal, ...)")
    ap.add_argument("--engine-id")
    ap.add_argument("--model", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--num-blocks", type=int, default=512)
    ap.add_argument("--block-size", type=int, help="tokens per KV block (default: the model's, 16); "
                    "prefill and decode may differ")
    ap.add_argument("--kv-layout", choices=["NHD", "HND"], default="NHD",
                    help="KV cache layout: NHD [2, blocks, block_size, kv_heads, head_size] "
                    "(vLLM FlashAttention) or HND [2, blocks, kv_heads, block_size, head_size]")
    ap.add_argument("--whole-cache", action="store_true",
                    help="send the whole cache after prefill (wait_for_save) instead of per layer")
    ap.add_argument("--max-batched-tokens", type=int, help="chunked prefill budget per step")
    ap.add_argument("--layer-delay", type=float, default=0.0,
                    help="seconds of extra time per layer (a slow prefill, for the tests)")
    ap.add_argument("--transfer-timeout", type=float, default=30.0)
    ap.add_argument("--staging", default="auto")
    ap.add_argument("--corrupt-after-load", action="store_true",
                    help="decode: change one landed K value (shows the comparison catches it)")
    a = ap.parse_args(argv)
    kv = {"listen": a.kv_listen, "layerwise": not a.whole_cache, "kvwire": json.loads(a.kvwire),
          "transfer_timeout_s": a.transfer_timeout, "staging": a.staging}
    cfg = dataclasses.replace(PRESETS[a.model], kv_layout=a.kv_layout,
                              block_size=a.block_size or PRESETS[a.model].block_size)
    eng = Engine(cfg, a.role, a.num_blocks, kv, a.engine_id, a.max_batched_tokens,
                 a.layer_delay, block_shuffle=os.getpid() if a.role == "decode" else None,
                 corrupt_after_load=a.corrupt_after_load)
    srv = Server(eng, a.http)
    print("READY " + json.dumps({"http": srv.port, "role": a.role, "block_size": cfg.block_size,
                                 "kv_layout": cfg.kv_layout,
                                 "engine_id": eng.work_conn.engine_id if eng.work_conn else None,
                                 "kv_uri": eng.work_conn.uri if eng.work_conn else None}),
          flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        eng.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
