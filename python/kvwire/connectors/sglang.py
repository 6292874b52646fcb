# SPDX-License-Identifier: MIT
"""An SGLang-shaped KV transfer backend over kvwire (the shapes of
sglang/srt/disaggregation/base/conn.py): KVArgs, KVPoll, KVManager, KVSender,
KVReceiver and a bootstrap server.

    # prefill server (also starts the bootstrap server, as SGLang's does)
    boot = KVBootstrapServer("127.0.0.1", 8998)
    mgr = KVManager(kv_args, DisaggregationMode.PREFILL,
                    ServerArgs(bootstrap_host="127.0.0.1", bootstrap_port=8998))
    sender = KVSender(mgr, "127.0.0.1:8998", bootstrap_room=room)
    sender.init(num_kv_indices=len(pages), aux_index=slot)
    sender.send(pages[:chunk]); ...; sender.send(pages[chunk:])   # per prefill chunk
    while sender.poll() not in (KVPoll.Success, KVPoll.Failed): ...

    # decode server
    mgr = KVManager(kv_args, DisaggregationMode.DECODE, ServerArgs())
    recv = KVReceiver(mgr, "127.0.0.1:8998", bootstrap_room=room)
    recv.init(kv_indices=my_pages, aux_index=my_slot)            # = send_metadata()
    while recv.poll() not in (KVPoll.Success, KVPoll.Failed): ...

Mapping onto kvwire: the decode's KVReceiver finds the prefill's kvwire URI
through the bootstrap server, connects, and init() posts the grants (one
kvwire sequence per group of KV buffers, one per group of aux buffers;
kv_indices are the granted pages) and a "pull" message naming the room. The
prefill's KVSender is Bootstrapping until that pull arrived, then
WaitingForInput; its send() calls gather the chunks and the last one
(num_kv_indices pages in all) posts the sequences. Transferring until every
page of every buffer and the aux pages landed (confirmed by the receiver),
then Success; a failure (peer dead, deadline, abort, refused) is Failed and
failure_exception() names it with kvwire's sentence. abort() is a fence on
both sides: nothing lands in the decode's pages after it returns.

Page sizes: each KV buffer is described as a kvwire Geometry of pages of
KVArgs.page_size tokens (one "head" of item_len / page_size bytes a token),
and a transfer moves tokens: the prefill sends the tokens its pages hold,
the decode grants the tokens it asks for, so the two sides may use different
page sizes (SGLang's --page-size). With different page sizes the decode
passes the request's token count to init(..., num_tokens=n) (a kvwire
extension; without it the grant is all its pages hold, which must not be
more than the prefill's pages hold). ServerArgs.kvwire_geometry False moves
whole pages as before (both sides then need the same page size).
"""
from __future__ import annotations

import enum
import functools
import json
import select
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Sequence

import kvwire
from kvwire import _abi

from ._agent import (Agent, Buffer, BufferSet, GeomSpec, Peer, Transfer, group_seq, refuse,
                     seq_of)


class KVPoll:
    Failed = 0
    Bootstrapping = 1
    WaitingForInput = 2
    Transferring = 3
    Success = 4


class DisaggregationMode(enum.Enum):
    NULL = "null"
    PREFILL = "prefill"
    DECODE = "decode"


class KVTransferError(Exception):
    def __init__(self, bootstrap_room: int, failure_reason: str, cause: Optional[BaseException] = None):
        super().__init__(failure_reason)
        self.bootstrap_room = bootstrap_room
        self.failure_reason = failure_reason
        self.cause = cause

    def __str__(self) -> str:
        return f"KVTransferError(bootstrap_room={self.bootstrap_room}): {self.failure_reason}"


@dataclass
class KVArgs:
    engine_rank: int = 0
    kv_data_ptrs: list[int] = field(default_factory=list)
    kv_data_lens: list[int] = field(default_factory=list)
    kv_item_lens: list[int] = field(default_factory=list)
    aux_data_ptrs: list[int] = field(default_factory=list)
    aux_data_lens: list[int] = field(default_factory=list)
    aux_item_lens: list[int] = field(default_factory=list)
    ib_device: str = ""
    ib_traffic_class: str = ""
    gpu_id: int = 0
    decode_tp_size: int = 1
    kv_head_num: int = 0
    page_size: int = 1


@dataclass
class ServerArgs:
    """The ServerArgs fields the backend reads, plus kvwire's own."""
    bootstrap_host: str = "127.0.0.1"
    bootstrap_port: int = 8998        # SGLang: disaggregation_bootstrap_port
    kvwire_listen: str = "tcp://127.0.0.1:0"
    kvwire_config: dict = field(default_factory=dict)
    transfer_timeout_s: float = 30.0
    engine_id: Optional[str] = None
    kvwire_context: Optional[kvwire.Context] = None   # buffers from its alloc() move zero-copy
    kvwire_progress_thread: bool = True  # move transfers between the scheduler's polls
    kvwire_geometry: bool = True      # token ranges (page sizes may differ); False: whole pages


# ------------------------------------------------------------------ bootstrap
class KVBootstrapServer:
    """Where prefill ranks announce their kvwire URI (PUT /route) and decode
    receivers look it up (GET /route?engine_rank=N), as SGLang's bootstrap
    server does for its backends."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8998):
        self.routes: dict[int, dict] = {}
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _reply(self, code: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.routes[int(body.get("engine_rank", 0))] = body
                self._reply(200, {"ok": True})

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlparse
                u = urlparse(self.path)
                if u.path == "/health":
                    self._reply(200, {"ok": True})
                    return
                rank = int(parse_qs(u.query).get("engine_rank", ["0"])[0])
                r = outer.routes.get(rank)
                self._reply(200 if r else 404, r or {"error": f"no prefill rank {rank} registered"})

        self.http = ThreadingHTTPServer((host, port), H)
        self.http.daemon_threads = True
        self.port = self.http.server_address[1]
        self.addr = f"{host}:{self.port}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def _http(method: str, url: str, body: Optional[dict] = None, timeout: float = 5.0) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------ manager
class KVManager:
    """One engine rank's kvwire side: its buffers, its agent, its transfers."""

    def __init__(self, args: KVArgs, disaggregation_mode: DisaggregationMode,
                 server_args: Optional[ServerArgs] = None, is_mla_backend: bool = False):
        sa = server_args or ServerArgs()
        self.args = args
        self.mode = disaggregation_mode
        self.server_args = sa
        self.is_mla_backend = is_mla_backend
        self.engine_id = sa.engine_id or f"{disaggregation_mode.value}-rank{args.engine_rank}"
        prefill = disaggregation_mode == DisaggregationMode.PREFILL
        self.agent = Agent(self.engine_id, sa.kvwire_listen if prefill else None,
                           dict(sa.kvwire_config), ctx=sa.kvwire_context)
        driver = (sa.kvwire_listen or "tcp://").split("://", 1)[0]
        self.page_size = max(1, int(getattr(args, "page_size", 1) or 1))
        self.kv = _bufferset(self.agent.ctx, args.kv_data_ptrs, args.kv_data_lens,
                             args.kv_item_lens, prefill, driver,
                             self.page_size if sa.kvwire_geometry else None)
        self.aux = [_bufferset(self.agent.ctx, [p], [n], [i], prefill, driver)
                    for p, n, i in zip(args.aux_data_ptrs, args.aux_data_lens, args.aux_item_lens)]
        self.timeout_s = float(sa.transfer_timeout_s)
        self.agent.on_message = self._on_message
        self._pulls: dict[int, Peer] = {}
        self._pull_msgs: dict[int, dict] = {}
        self.senders: dict[int, "KVSender"] = {}
        self._routes: dict[str, dict] = {}
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._busy_poll = driver == "dpdk"
        if prefill:
            _http("PUT", f"http://{sa.bootstrap_host}:{sa.bootstrap_port}/route",
                  {"engine_rank": args.engine_rank, "uri": self.agent.uri,
                   "engine_id": self.engine_id})
        if sa.kvwire_progress_thread:
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name=f"kvwire-{self.engine_id}")
            self._thread.start()

    def _loop(self) -> None:
        """Drives kvwire between the scheduler's poll() calls (under the lock every
        KVSender/KVReceiver call holds), so transfers move during forward passes."""
        while not self._stop.is_set():
            with self.lock:
                if self._stop.is_set():
                    break
                try:
                    self.agent.progress(0)
                    for s in list(self.senders.values()):
                        s._post()
                except kvwire.ClosedError:
                    break
                active = bool(self.senders) or bool(self.agent.ctx._live)
                fd = self.agent.ctx.fd
            if active and self._busy_poll:
                time.sleep(0.0002)
            else:
                try:
                    select.select([fd], [], [], 0.001 if active else 0.02)
                except (OSError, ValueError):
                    time.sleep(0.001)

    def _on_message(self, peer: Peer, msg: dict) -> None:
        if msg.get("type") == "cancel":
            s = self.senders.get(int(msg["room"]))
            if s is not None:
                s._fail("KVW_ERR_ABORTED: the decode receiver aborted the transfer (its cancel message)")
            return
        if msg.get("type") == "pull":
            room = int(msg["room"])
            self._pulls[room] = peer
            self._pull_msgs[room] = msg
            s = self.senders.get(room)
            if s is not None:
                s._pulled(peer)

    def route(self, bootstrap_addr: str, engine_rank: int) -> dict:
        key = f"{bootstrap_addr}/{engine_rank}"
        if key not in self._routes:
            self._routes[key] = _http("GET", f"http://{bootstrap_addr}/route?engine_rank={engine_rank}")
        return self._routes[key]

    def progress(self, timeout: float = 0.0) -> None:
        with self.lock:
            self.agent.progress(timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for s in list(self.senders.values()):
            s.abort()
        self.kv.close()
        for a in self.aux:
            a.close()
        self.agent.close()


def _bufferset(ctx: kvwire.Context, ptrs: Sequence[int], lens: Sequence[int],
               items: Sequence[int], sending: bool, driver: str,
               page_size: Optional[int] = None) -> BufferSet:
    """page_size: describe each buffer as a Geometry of pages of that many tokens
    (token ranges; the peer's page size may differ), else as whole pages."""
    geom = None
    if page_size and items and len(set(items)) == 1 and int(items[0]) % page_size == 0:
        geom = GeomSpec("mla", page_size, int(items[0]) // page_size, 1, 1)
    bufs = []
    for p, n, it in zip(ptrs, lens, items):
        t = None
        try:  # a torch view over host memory lets the stager copy it (shm from foreign memory)
            import torch
            from ._agent import raw_view
            t = torch.from_numpy(raw_view(int(p), int(n)).reshape(int(n) // int(it), int(it)))
        except Exception:  # noqa: BLE001 - numpy/torch missing: no staging
            t = None
        bufs.append(Buffer(int(p), int(n) // int(it), int(it), int(it), t))
    return BufferSet(ctx, bufs, sending=sending, driver=driver, staging="auto",
                     known=[m for m in list(ctx._mems) if m.allocated and m._h is not None],
                     geom=geom)


def _locked(fn):
    @functools.wraps(fn)
    def wrapper(self, *a, **k):
        with self.mgr.lock:
            return fn(self, *a, **k)
    return wrapper


# ------------------------------------------------------------------ sender
class KVSender:
    def __init__(self, mgr: KVManager, bootstrap_addr: str, bootstrap_room: int,
                 dest_tp_ranks: Optional[list[int]] = None, pp_rank: int = 0):
        with mgr.lock:
            self._init(mgr, bootstrap_addr, bootstrap_room)

    def _init(self, mgr: KVManager, bootstrap_addr: str, bootstrap_room: int) -> None:
        self.mgr = mgr
        self.bootstrap_addr = bootstrap_addr
        self.room = int(bootstrap_room)
        self.seq = seq_of(self.room)
        self.t = Transfer(str(self.room), self.seq, [])
        self.num_kv_indices: Optional[int] = None
        self.aux_index: Optional[int] = None
        self._pages: list[int] = []
        self._posted = False
        self._aborted = False
        self._exc: Optional[KVTransferError] = None
        self._t0 = time.monotonic()
        mgr.senders[self.room] = self
        p = mgr._pulls.get(self.room)
        if p is not None:
            self._pulled(p)

    def _pulled(self, peer: Peer) -> None:
        self.t.peer = peer
        self._post()

    @_locked
    def init(self, num_kv_indices: int, aux_index: Optional[int] = None) -> None:
        self.num_kv_indices = int(num_kv_indices)
        self.aux_index = aux_index

    @_locked
    def send(self, kv_indices: Sequence[int], state_indices: Any = None) -> None:
        """One prefill chunk's pages; the last chunk (num_kv_indices in all) posts."""
        self._pages.extend(int(x) for x in kv_indices)
        if self.num_kv_indices is not None and len(self._pages) > self.num_kv_indices:
            self._fail(f"send(): {len(self._pages)} pages for init(num_kv_indices="
                       f"{self.num_kv_indices})")
        self._post()
        self.mgr.progress(0)

    def _post(self) -> None:
        t, mgr = self.t, self.mgr
        if self._posted or self._aborted or t.peer is None or self.num_kv_indices is None or \
                len(self._pages) < self.num_kv_indices or not t.peer.ep.ready:
            return
        ep = t.peer.ep
        t.blocks = list(self._pages)
        try:
            blocks = self._stage(mgr.kv, t.blocks)
            tokens = (0, len(blocks) * mgr.page_size) if mgr.kv.geom is not None else None
            for g, grp in enumerate(mgr.kv.groups):
                t.reqs[g] = ep.send(group_seq(t.seq, g), grp.layout, blocks, 0,
                                    grp.layout.n_layers, timeout=mgr.timeout_s, tokens=tokens)
            if self.aux_index is not None:
                for a, bs in enumerate(mgr.aux):
                    blocks = self._stage(bs, [self.aux_index])
                    t.reqs[1000 + a] = ep.send(group_seq(t.seq, a, aux=True), bs.groups[0].layout,
                                               blocks, 0, 1, timeout=mgr.timeout_s)
        except kvwire.KvwireError as e:
            t.error = e
            t.abort()
        self._posted = True

    def _stage(self, bs: BufferSet, pages: list[int]) -> list[int]:
        if not bs.staged:
            return pages
        first = bs.stager.alloc(len(pages))
        if first is None:
            raise kvwire.NoMemError("kvwire staging memory full", status=_abi.KVW_ERR_NOMEM)
        for b in range(len(bs.buffers)):
            bs.stager.copy_out(b, pages, first)
        self._staged = getattr(self, "_staged", []) + [(bs, first, len(pages))]
        return list(range(first, first + len(pages)))

    @_locked
    def poll(self) -> int:
        self.mgr.progress(0)
        self._post()
        if self._exc is not None:
            return KVPoll.Failed
        t = self.t
        if t.peer is not None and t.peer.failed is not None and not t.finished():
            self._fail(str(t.peer.failed), t.peer.failed)
            return KVPoll.Failed
        if not self._posted:
            if t.peer is None:
                if time.monotonic() - self._t0 > self.mgr.timeout_s:
                    self._fail(f"no decode receiver asked for room {self.room} within "
                               f"{self.mgr.timeout_s:.0f} s")
                    return KVPoll.Failed
                return KVPoll.Bootstrapping
            return KVPoll.WaitingForInput
        err = t.first_error()
        if err is not None:
            self._fail(str(err), err)
            return KVPoll.Failed
        if t.finished():
            self._release()
            return KVPoll.Success
        return KVPoll.Transferring

    def _fail(self, why: str, cause: Optional[BaseException] = None) -> None:
        if self._exc is None:
            self._exc = KVTransferError(self.room, why, cause)
            self.t.abort()
            self._release()

    def _release(self) -> None:
        for bs, first, n in getattr(self, "_staged", []):
            bs.stager.release(first, n)
        self._staged = []
        self.mgr.senders.pop(self.room, None)
        self.mgr._pulls.pop(self.room, None)
        self.mgr._pull_msgs.pop(self.room, None)

    @_locked
    def failure_exception(self) -> None:
        raise self._exc or KVTransferError(self.room, "the transfer has not failed")

    @_locked
    def abort(self) -> None:
        """Fence: when it returns, the decode receives nothing more of this room
        (and a decode that granted it but got nothing yet is told at once)."""
        self._aborted = True
        self.t.abort()
        msg = self.mgr._pull_msgs.get(self.room)
        if not self._posted and self.t.peer is not None and msg is not None:
            lays = [(group_seq(self.seq, g), grp.layout) for g, grp in enumerate(self.mgr.kv.groups)]
            refuse(self.t.peer, self.seq, lays, int(msg.get("n", 1)))
            if msg.get("aux"):
                refuse(self.t.peer, self.seq, [(group_seq(self.seq, a, aux=True),
                                                bs.groups[0].layout)
                                               for a, bs in enumerate(self.mgr.aux)], 1)
            self.mgr.progress(0)
        if self._exc is None:
            self._exc = KVTransferError(self.room, "aborted by the prefill side")
        self._release()


# ------------------------------------------------------------------ receiver
class KVReceiver:
    def __init__(self, mgr: KVManager, bootstrap_addr: str, bootstrap_room: Optional[int] = None,
                 data_parallel_rank: Optional[int] = None, prefill_engine_rank: int = 0):
        with mgr.lock:
            self._init(mgr, bootstrap_addr, bootstrap_room, prefill_engine_rank)

    def _init(self, mgr: KVManager, bootstrap_addr: str, bootstrap_room: Optional[int],
              prefill_engine_rank: int) -> None:
        self.mgr = mgr
        self.room = int(bootstrap_room or 0)
        self.seq = seq_of(self.room)
        self.t = Transfer(str(self.room), self.seq, [])
        self._exc: Optional[KVTransferError] = None
        self._inited = False
        try:
            r = mgr.route(bootstrap_addr, prefill_engine_rank)
            self.t.peer = mgr.agent.connect(r["uri"], r.get("engine_id"))
        except Exception as e:  # noqa: BLE001 - the bootstrap server said no / is not there
            self._exc = KVTransferError(self.room, f"bootstrap {bootstrap_addr}: {e}", e)
        self.mgr.progress(0)

    @_locked
    def init(self, kv_indices: Sequence[int], aux_index: Optional[int] = None,
             num_tokens: Optional[int] = None) -> None:
        """Grants these pages (and the aux slot) and tells the prefill: SGLang's
        send_metadata. num_tokens (kvwire): the request's tokens, when this side's
        page size differs from the prefill's (default: all the pages hold)."""
        self._kv_indices = [int(x) for x in kv_indices]
        self._aux_index = aux_index
        cap = len(self._kv_indices) * self.mgr.page_size
        if num_tokens is not None and not 0 < int(num_tokens) <= cap:
            self._fail(f"init(): num_tokens {num_tokens} for {len(self._kv_indices)} pages of "
                       f"{self.mgr.page_size} tokens (at most {cap})")
        self._num_tokens = int(num_tokens) if num_tokens is not None else cap
        self._inited = True
        self._post()

    def send_metadata(self, kv_indices: Sequence[int], aux_index: Optional[int] = None,
                      num_tokens: Optional[int] = None) -> None:
        self.init(kv_indices, aux_index, num_tokens)

    def _post(self) -> None:
        t, mgr = self.t, self.mgr
        if self._exc is not None or not self._inited or t.reqs or t.peer is None or \
                not t.peer.ep.ready:
            return
        ep = t.peer.ep
        t.blocks = self._kv_indices
        tokens = (0, self._num_tokens) if mgr.kv.geom is not None else None
        try:
            for g, grp in enumerate(mgr.kv.groups):
                t.reqs[g] = ep.recv(group_seq(t.seq, g), grp.layout, t.blocks, mgr.timeout_s,
                                    tokens=tokens)
            if self._aux_index is not None:
                for a, bs in enumerate(mgr.aux):
                    t.reqs[1000 + a] = ep.recv(group_seq(t.seq, a, aux=True), bs.groups[0].layout,
                                               [self._aux_index], mgr.timeout_s)
        except kvwire.KvwireError as e:
            t.error = e
            t.abort()
        t.peer.send_msg({"type": "pull", "room": self.room, "seq": self.seq,
                         "n": len(t.blocks), "aux": self._aux_index is not None,
                         "tokens": [0, self._num_tokens], "page_size": mgr.page_size})
        mgr.progress(0)

    @_locked
    def poll(self) -> int:
        self.mgr.progress(0)
        self._post()
        if self._exc is not None:
            return KVPoll.Failed
        t = self.t
        if t.peer is not None and t.peer.failed is not None and not t.finished():
            self._fail(str(t.peer.failed), t.peer.failed)
            return KVPoll.Failed
        if not t.reqs:
            return KVPoll.WaitingForInput if t.peer is not None and t.peer.ep.ready \
                else KVPoll.Bootstrapping
        err = t.first_error()
        if err is not None:
            self._fail(str(err), err)
            return KVPoll.Failed
        return KVPoll.Success if t.finished() else KVPoll.Transferring

    def _fail(self, why: str, cause: Optional[BaseException] = None) -> None:
        if self._exc is None:
            self._exc = KVTransferError(self.room, why, cause)
            self.t.abort()

    @_locked
    def failure_exception(self) -> None:
        raise self._exc or KVTransferError(self.room, "the transfer has not failed")

    @_locked
    def abort(self) -> None:
        """Fence: when it returns nothing lands in the granted pages any more."""
        self.t.abort()
        if self.t.reqs and self.t.peer is not None and self.t.peer.failed is None:
            self.t.peer.send_msg({"type": "cancel", "room": self.room})
        if self._exc is None:
            self._exc = KVTransferError(self.room, "aborted by the decode side")


# the names SGLang's backends export
KVBootstrapServer_ = KVBootstrapServer
__all__ = ["KVPoll", "KVArgs", "KVManager", "KVSender", "KVReceiver", "KVBootstrapServer",
           "DisaggregationMode", "ServerArgs", "KVTransferError"]
