# SPDX-License-Identifier: MIT
"""What the vLLM- and SGLang-shaped connectors share.

- Agent: one kvwire Context, a listener, and the peers (other engines) it
  talks to. The side that *receives* KV (decode) connects to the side that
  sends it (prefill), so a decode engine only needs the prefill's URI (from
  kv_transfer_params or the bootstrap server). Over each endpoint the
  connecting side sends small JSON messages (kvwire sequences of one 4 KiB
  page into a grant the accepting side keeps posted): first its identity,
  then "pull" messages naming the transfers it has granted blocks for, so
  the prefill knows on which endpoint to send each transfer.
- BufferSet: the engine's KV (or aux) buffers in transfer units that both
  sides agree on whatever their memory looks like (vLLM: one unit per model
  layer = its K and V halves, which share a tensor; SGLang: one per buffer).
  Each unit has a Layout over the registered Memory that holds it (a kvwire
  allocation, a torch storage, or staging memory); a transfer is one kvwire
  sequence per unit.
- Staging: buffers kvwire cannot move directly (CUDA tensors; foreign memory
  on the sending side of the shm driver, which sends only kvw_mem_alloc
  memory) go through host buffers from kvw_mem_alloc (pinned for CUDA with
  cudaHostRegister through torch), copied per layer with torch.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import kvwire
from kvwire import _abi

log = logging.getLogger("kvwire.connectors")

MSG_BIT = 1 << 63          # messages from the connecting side: seq MSG_BIT | n
AUX_BIT = 1 << 62          # the aux sequence of a transfer
GROUP_SHIFT = 52           # units of a transfer: seq | unit << 52 (unit < 1024)
SEQ_MASK = (1 << GROUP_SHIFT) - 1
MSG_BYTES = 4096
MSG_GRANT_S = 600.0        # a message grant waits this long, then is posted again


def seq_of(transfer_id: str | int) -> int:
    """The 56-bit sequence id of a transfer (both sides compute it alike)."""
    if isinstance(transfer_id, int):
        return transfer_id & SEQ_MASK
    h = hashlib.blake2b(str(transfer_id).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & SEQ_MASK


def group_seq(seq: int, group: int, aux: bool = False) -> int:
    return seq | (group << GROUP_SHIFT) | (AUX_BIT if aux else 0)


# ------------------------------------------------------------------ peers
class Peer:
    """One other engine: its endpoint, its message channel."""

    def __init__(self, agent: "Agent", ep: kvwire.Endpoint, outgoing: bool,
                 engine_id: str | None = None, uri: str | None = None):
        self.agent = agent
        self.ep = ep
        self.outgoing = outgoing          # we connected (we send messages)
        self.engine_id = engine_id
        self.uri = uri
        mem = agent.ctx.alloc(2 * MSG_BYTES)
        self._mem = mem
        self._lay = kvwire.Layout(mem, 1, 2, MSG_BYTES)
        self._buf = mem.numpy()
        self._n_out = 0                   # next message number to send
        self._n_in = 0                    # next message number to receive
        self._out: list[dict] = []
        self._send_req: kvwire.Request | None = None
        self._recv_req: kvwire.Request | None = None
        self.failed: kvwire.KvwireError | None = None
        self.identified = outgoing        # the accepting side learns who it is from msg 0
        if outgoing:
            self.send_msg({"type": "ident", "engine_id": agent.engine_id, "uri": agent.uri})

    @property
    def ready(self) -> bool:
        return self.failed is None and self.ep.ready and self.identified

    def send_msg(self, msg: dict) -> None:
        self._out.append(msg)

    def _pump(self) -> None:
        if self.failed is not None:
            return
        st = self.ep.status
        if st == _abi.KVW_INPROGRESS:
            return
        if st != _abi.KVW_OK:
            self._fail(kvwire.errors.make_error(st, f"peer {self.engine_id or self.ep.uri}",
                                                self.agent.ctx.last_error, kvwire.strerror(st)))
            return
        # outgoing messages, one at a time
        if self._send_req is not None and self._send_req.done:
            r, self._send_req = self._send_req, None
            if r.status == _abi.KVW_ERR_TIMEDOUT:   # the peer's grant expired just then: again
                self._n_out -= 1
            elif not r.ok:
                self._fail(r.exception())
                return
            else:
                self._out.pop(0)
            r.free()
        if self._send_req is None and self._out:
            data = json.dumps(self._out[0]).encode()
            if len(data) + 4 > MSG_BYTES:
                raise kvwire.InvalidError(f"message of {len(data)} bytes over {MSG_BYTES - 4}",
                                          status=_abi.KVW_ERR_INVALID)
            self._buf[0:4] = list(len(data).to_bytes(4, "little"))
            self._buf[4:4 + len(data)] = list(data)
            self._send_req = self.ep.send(MSG_BIT | self._n_out, self._lay, [0], 0, 1)
            self._n_out += 1
        # incoming messages (accepting side)
        if not self.outgoing:
            if self._recv_req is None:
                self._recv_req = self.ep.recv(MSG_BIT | self._n_in, self._lay, [1], MSG_GRANT_S)
            elif self._recv_req.done:
                r, self._recv_req = self._recv_req, None
                if r.ok:
                    n = int.from_bytes(bytes(self._buf[MSG_BYTES:MSG_BYTES + 4]), "little")
                    msg = json.loads(bytes(self._buf[MSG_BYTES + 4:MSG_BYTES + 4 + n]))
                    self._n_in += 1
                    r.free()
                    self._on_msg(msg)
                elif r.status == _abi.KVW_ERR_TIMEDOUT:
                    r.free()                        # idle: post the same grant again
                else:
                    self._fail(r.exception())

    def _on_msg(self, msg: dict) -> None:
        if msg.get("type") == "ident":
            self.engine_id = msg.get("engine_id")
            self.uri = msg.get("uri")
            self.identified = True
            self.agent._identified(self)
            return
        self.agent._message(self, msg)

    def _fail(self, exc: kvwire.KvwireError | None) -> None:
        if self.failed is None:
            self.failed = exc or kvwire.PeerDeadError("peer failed", status=_abi.KVW_ERR_PEER_DEAD)
            log.warning("kvwire peer %s failed: %s", self.engine_id or self.ep.uri, self.failed)
            self.agent._peer_failed(self)

    def close(self) -> None:
        for r in (self._send_req, self._recv_req):
            if r is not None and not r.done:
                r.abort()
        self._send_req = self._recv_req = None
        self._buf = None
        if not self.ep.closed:
            self.ep.close()


class Agent:
    """A kvwire Context with a listener and peers, driven by progress()."""

    def __init__(self, engine_id: str, listen: str | None = None,
                 config: dict[str, Any] | None = None, ctx: kvwire.Context | None = None):
        self.engine_id = engine_id
        self.ctx = ctx if ctx is not None else kvwire.Context(dict(config or {}))
        self._own_ctx = ctx is None
        self.listener = self.ctx.listen(listen) if listen else None
        self.uri = self.listener.uri if self.listener else None
        self.peers: dict[str, Peer] = {}          # engine id -> identified peer
        self._by_uri: dict[str, Peer] = {}        # outgoing, by the URI dialled
        self._anon: list[Peer] = []               # accepted, not identified yet
        self.on_message: Callable[[Peer, dict], None] | None = None
        self.on_peer_failed: Callable[[Peer], None] | None = None

    # ---- peers
    def connect(self, uri: str, engine_id: str | None = None) -> Peer:
        """The outgoing peer at `uri` (connects without blocking, once)."""
        p = self._by_uri.get(uri)
        if p is not None and p.failed is None:
            return p
        ep = self.ctx.connect(uri, wait=False)
        p = Peer(self, ep, True, engine_id, uri)
        self._by_uri[uri] = p
        if engine_id:
            self.peers[engine_id] = p
        return p

    def _identified(self, p: Peer) -> None:
        if p in self._anon:
            self._anon.remove(p)
        old = self.peers.get(p.engine_id or "")
        if old is not None and old is not p and old.failed is None and not old.outgoing:
            old._fail(kvwire.PeerDeadError(f"engine {p.engine_id} reconnected",
                                           status=_abi.KVW_ERR_PEER_DEAD))
        self.peers[p.engine_id or f"?{id(p)}"] = p

    def _message(self, p: Peer, msg: dict) -> None:
        if self.on_message is not None:
            self.on_message(p, msg)

    def _peer_failed(self, p: Peer) -> None:
        if self.on_peer_failed is not None:
            self.on_peer_failed(p)

    # ---- the loop
    def progress(self, timeout: float = 0.0) -> None:
        """Accepts new peers, moves messages, drives the context (poll)."""
        if self.listener is not None:
            while True:
                ep = self.listener.accept(0)
                if ep is None:
                    break
                self._anon.append(Peer(self, ep, False))
        self.ctx.poll(timeout)
        for p in list(self._by_uri.values()) + list(self._anon) + \
                [p for p in self.peers.values() if not p.outgoing]:
            p._pump()
        # what the pumps queued (grants, messages) goes out in this same call
        self.ctx.poll(0)

    def close(self) -> None:
        for p in set(self.peers.values()) | set(self._by_uri.values()) | set(self._anon):
            try:
                p.close()
            except kvwire.KvwireError:
                pass
        self.peers.clear()
        self._by_uri.clear()
        self._anon.clear()
        if self.listener is not None:
            self.listener.close()
        if self._own_ctx:
            self.ctx.close(force=True)


# ------------------------------------------------------------------ buffers
@dataclass
class Buffer:
    """One KV buffer: n_items pages of item_bytes at addr (e.g. the K half of a
    vLLM layer's cache, or an SGLang k_buffer[layer])."""
    addr: int
    n_items: int
    item_bytes: int
    item_stride: int
    tensor: Any = None          # a torch tensor [n_items, ...] over exactly these pages


@dataclass
class Group:
    mem: kvwire.Memory
    layout: kvwire.Layout
    buffers: list[int]          # indices into BufferSet.buffers, in layout-layer order
    staged: bool = False
    # the buffers of each layer of the layout: one each for a page layout; the
    # K and V halves together for a geometry layout (one model layer, n_kv 2)
    layers: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.layers:
            self.layers = [[b] for b in self.buffers]


@dataclass(frozen=True)
class GeomSpec:
    """What a BufferSet needs to describe each transfer unit as a kvwire
    Geometry (Layout.from_geometry) instead of a page layout: the unit's
    buffers are its K/V regions (n_kv of them: "nhd"/"hnd" 2, "mla" 1), each
    block_tokens tokens x heads x head_dim x elem_bytes a page. Transfers
    then move token ranges, and the peer may use another block size and
    head order (the library joins the two geometries)."""
    kind: str                   # "nhd" | "hnd" | "mla"
    block_tokens: int
    head_dim: int
    num_heads: int = 1
    elem_bytes: int = 2
    heads: tuple[int, int] | None = None

    @property
    def n_kv(self) -> int:
        return 1 if self.kind == "mla" else 2

    def page_bytes(self) -> int:
        h = (self.heads[1] - self.heads[0]) if self.heads else self.num_heads
        return self.block_tokens * h * self.head_dim * self.elem_bytes

    def geometry(self, n_blocks: int, kv_offsets: Sequence[int]) -> kvwire.Geometry:
        return kvwire.Geometry(self.kind, n_layers=1, n_blocks=n_blocks,
                               block_tokens=self.block_tokens, head_dim=self.head_dim,
                               num_heads=self.num_heads, elem_bytes=self.elem_bytes,
                               heads=self.heads, kv_offsets=list(kv_offsets))

    def describe(self) -> dict:
        """What the other side may check before a transfer (kv_transfer_params)."""
        return {"kv_layout": self.kind.upper(), "block_size": self.block_tokens,
                "head_size": self.head_dim, "num_kv_heads": self.num_heads,
                "elem_bytes": self.elem_bytes}


class BufferSet:
    """KV or aux buffers of an engine, in transfer units, each with a Layout.

    units: lists of buffer indices, the same on both sides of a transfer
    (default: one unit per buffer). staging: "never" | "auto" | "always"; auto
    stages CUDA buffers and, on the sending side of the shm driver, memory
    kvwire did not allocate. geom: each unit is one layer of a kvwire Geometry
    (its buffers the unit's K/V regions, see GeomSpec) instead of a page layout
    with a layer per buffer."""

    def __init__(self, ctx: kvwire.Context, buffers: Sequence[Buffer], *, sending: bool,
                 driver: str, staging: str = "auto", staging_items: int | None = None,
                 known: Iterable[kvwire.Memory] = (), units: Sequence[Sequence[int]] | None = None,
                 geom: GeomSpec | None = None):
        self.ctx = ctx
        self.geom = geom
        self.buffers = list(buffers)
        if not self.buffers:
            raise kvwire.InvalidError("no KV buffers to register", status=_abi.KVW_ERR_INVALID)
        sizes = {b.item_bytes for b in self.buffers}
        if len(sizes) != 1:
            raise kvwire.InvalidError(f"KV buffers with different page sizes {sorted(sizes)}: "
                                      f"register them as separate sets",
                                      status=_abi.KVW_ERR_INVALID)
        self.item_bytes = sizes.pop()
        self.n_items = min(b.n_items for b in self.buffers)
        self.units = [list(u) for u in (units or [[i] for i in range(len(self.buffers))])]
        if len(self.units) > 1 << (62 - GROUP_SHIFT):
            raise kvwire.InvalidError(f"{len(self.units)} transfer units: at most "
                                      f"{1 << (62 - GROUP_SHIFT)}", status=_abi.KVW_ERR_INVALID)
        if geom is not None:
            self._check_geom(geom)
        cuda = any(b.tensor is not None and getattr(b.tensor, "is_cuda", False)
                   for b in self.buffers)
        known = list(known)
        foreign = not all(any(m.addr <= b.addr and b.addr + b.n_items * b.item_stride
                              <= m.addr + m.nbytes for m in known if m.allocated)
                          for b in self.buffers)
        self.staged = staging == "always" or (staging == "auto" and (
            cuda or (sending and driver == "shm" and foreign)))
        if self.staged and any(b.tensor is None for b in self.buffers):
            raise kvwire.UnsupportedError(
                "these buffers need staging (CUDA memory, or shm sending from memory kvwire did "
                "not allocate) but came as raw pointers: allocate them with kvwire "
                "(Context.alloc) or pass torch tensors", status=_abi.KVW_ERR_UNSUPPORTED)
        self.groups: list[Group] = []
        self._mems: list[kvwire.Memory] = []
        if self.staged:
            self.stager = Stager(ctx, self.buffers, staging_items or self.n_items, cuda)
            sl = self.stager.layout
            for u in self.units:
                offs = [sl.layer_offset(b) for b in u]
                if geom is not None:    # staging pages keep the source's in-block order
                    lay = kvwire.Layout.from_geometry(self.stager.mem,
                                                      geom.geometry(sl.n_blocks, offs))
                    self.groups.append(Group(self.stager.mem, lay, u, True, [list(u)]))
                    continue
                lay = kvwire.Layout(self.stager.mem, len(u), sl.n_blocks, self.item_bytes,
                                    layer_offsets=offs)
                self.groups.append(Group(self.stager.mem, lay, u, True))
        else:
            self.stager = None
            self._group(known)

    def _region(self, i: int, known: list[kvwire.Memory], mems: dict) -> kvwire.Memory:
        """The registered Memory holding buffer i (registering its storage once)."""
        b = self.buffers[i]
        end = b.addr + b.n_items * b.item_stride
        m = next((m for m in known if m.addr <= b.addr and end <= m.addr + m.nbytes), None)
        if m is not None:
            return m
        if b.tensor is not None:
            st = b.tensor.untyped_storage() if hasattr(b.tensor, "untyped_storage") \
                else b.tensor.storage()
            key = ("storage", st.data_ptr())
            if key not in mems:
                mems[key] = self.ctx.register(st.data_ptr(), st.nbytes())
                mems[key]._keep = b.tensor  # the storage stays alive while registered
                self._mems.append(mems[key])
            return mems[key]
        key = ("buf", b.addr)
        if key not in mems:
            mems[key] = self.ctx.register(b.addr, b.n_items * b.item_stride)
            self._mems.append(mems[key])
        return mems[key]

    def _group(self, known: list[kvwire.Memory]) -> None:
        mems: dict = {}
        for u in self.units:
            regs = [self._region(i, known, mems) for i in u]
            strides = {self.buffers[i].item_stride for i in u}
            if len({m.addr for m in regs}) != 1 or len(strides) != 1:
                raise kvwire.InvalidError(
                    f"buffers {u} of one transfer unit lie in different memory or have different "
                    f"page strides: give each its own unit", status=_abi.KVW_ERR_INVALID)
            m = regs[0]
            stride = strides.pop()
            offs = [self.buffers[i].addr - m.addr for i in u]
            if self.geom is not None:
                if stride != self.item_bytes:
                    raise kvwire.InvalidError(
                        f"buffers {u}: blocks {stride} bytes apart but {self.item_bytes} long; a "
                        f"geometry needs packed blocks (pass contiguous K/V tensors)",
                        status=_abi.KVW_ERR_INVALID)
                lay = kvwire.Layout.from_geometry(m, self.geom.geometry(self.n_items, offs))
                self.groups.append(Group(m, lay, u, layers=[list(u)]))
                continue
            lay = kvwire.Layout(m, len(u), self.n_items, self.item_bytes, stride,
                                layer_offsets=offs)
            self.groups.append(Group(m, lay, u))

    def _check_geom(self, geom: GeomSpec) -> None:
        if any(len(u) != geom.n_kv for u in self.units):
            raise kvwire.InvalidError(
                f"a {geom.kind} geometry takes {geom.n_kv} buffer(s) per transfer unit (K and V "
                f"regions); units are {self.units}", status=_abi.KVW_ERR_INVALID)
        if geom.page_bytes() != self.item_bytes:
            raise kvwire.InvalidError(
                f"KV pages of {self.item_bytes} bytes, but the geometry {geom} makes "
                f"{geom.page_bytes()}: block size, heads, head size or dtype disagree with the "
                f"registered caches", status=_abi.KVW_ERR_INVALID)

    def where(self, buf: int) -> tuple[int, int]:
        """(unit index, layer index inside the unit's layout) of buffer `buf`."""
        for g, grp in enumerate(self.groups):
            for j, bufs in enumerate(grp.layers):
                if buf in bufs:
                    return g, j
        raise KeyError(buf)

    def close(self) -> None:
        for grp in self.groups:
            try:
                grp.layout.close()
            except kvwire.KvwireError:
                pass
        if self.stager is not None:
            self.stager.close()
        for m in self._mems:
            try:
                m.close()
            except kvwire.KvwireError:
                pass


# ------------------------------------------------------------------ staging
class Stager:
    """Host staging of buffers kvwire cannot move directly.

    The staging memory is kvw_mem_alloc memory laid out as one layout: layer i
    = buffer i, `items` pages each; a transfer takes a contiguous range of
    staging pages. Send side: copy_out(buf, blocks, first) copies the pages of a
    buffer into staging (CUDA: on a copy stream, non-blocking, with an event
    per copy so the next layer's copy overlaps this layer's transfer); decode
    side: copy_in(...) moves landed pages back into the device tensor.

    CUDA paths are written against torch's CUDA API and not run here (no GPU
    in this build's CI); CPU tensors take the same path synchronously."""

    def __init__(self, ctx: kvwire.Context, buffers: Sequence[Buffer], items: int, cuda: bool):
        self.ctx = ctx
        self.buffers = list(buffers)
        self.items = int(items)
        self.item_bytes = buffers[0].item_bytes
        n = len(buffers)
        self.mem = ctx.alloc(n * self.items * self.item_bytes)
        self.layout = kvwire.Layout(self.mem, n, self.items, self.item_bytes)
        self.cuda = cuda
        self._free = [(0, self.items)]      # free page ranges [start, end)
        import torch
        self.torch = torch
        self.view = self.mem.torch(torch.uint8, (n, self.items, self.item_bytes))
        self.pinned = False
        self.stream = None
        if cuda:
            try:  # page-lock kvwire's memory for CUDA async copies
                rc = torch.cuda.cudart().cudaHostRegister(self.mem.addr, self.mem.nbytes, 0)
                self.pinned = int(rc) == 0
            except Exception as e:  # noqa: BLE001
                log.warning("cudaHostRegister of the staging memory failed (%s): copies will "
                            "not overlap", e)
            self.stream = torch.cuda.Stream()

    def alloc(self, n: int) -> int | None:
        """First page of a free run of n staging pages, or None when full."""
        for i, (s, e) in enumerate(self._free):
            if e - s >= n:
                self._free[i] = (s + n, e)
                if s + n == e:
                    self._free.pop(i)
                return s
        return None

    def release(self, start: int, n: int) -> None:
        self._free.append((start, start + n))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for s, e in self._free:
            if merged and merged[-1][1] == s:
                merged[-1] = (merged[-1][0], e)
            else:
                merged.append((s, e))
        self._free = merged

    def _pages(self, buf: int) -> Any:
        t = self.buffers[buf].tensor
        return t.reshape(t.shape[0], -1).view(self.torch.uint8)

    def copy_out(self, buf: int, blocks: Sequence[int], first: int) -> Any:
        """Pages `blocks` of buffer `buf` -> staging [first, first+n). Returns an
        object with .query() (True when the copy is done)."""
        torch = self.torch
        src = self._pages(buf)
        idx = torch.as_tensor(list(blocks), dtype=torch.long, device=src.device)
        dst = self.view[buf, first:first + len(blocks)]
        if self.cuda and src.is_cuda:
            ev = torch.cuda.Event()
            cur = torch.cuda.current_stream(src.device)
            self.stream.wait_stream(cur)    # the layer's KV was written on the compute stream
            with torch.cuda.stream(self.stream):
                dst.copy_(src.index_select(0, idx), non_blocking=self.pinned)
                ev.record(self.stream)
            return ev
        dst.copy_(src.index_select(0, idx))
        return _Done()

    def copy_in(self, buf: int, blocks: Sequence[int], first: int) -> Any:
        """Staging [first, first+n) -> pages `blocks` of buffer `buf`."""
        torch = self.torch
        dst = self._pages(buf)
        idx = torch.as_tensor(list(blocks), dtype=torch.long, device=dst.device)
        src = self.view[buf, first:first + len(blocks)]
        if self.cuda and dst.is_cuda:
            ev = torch.cuda.Event()
            with torch.cuda.stream(self.stream):
                dst.index_copy_(0, idx, src.to(dst.device, non_blocking=self.pinned))
                ev.record(self.stream)
            return ev
        dst.index_copy_(0, idx, src)
        return _Done()

    def close(self) -> None:
        if self.cuda and self.pinned:
            try:
                self.torch.cuda.cudart().cudaHostUnregister(self.mem.addr)
            except Exception:  # noqa: BLE001
                pass
        self.view = None
        try:
            self.layout.close()
            self.mem.close()
        except kvwire.KvwireError:
            pass


class _Done:
    @staticmethod
    def query() -> bool:
        return True

    @staticmethod
    def synchronize() -> None:
        return None


# ------------------------------------------------------------------ transfers
@dataclass
class Transfer:
    """One request's KV moving over a peer: one kvwire sequence per group (+ aux)."""
    key: str                    # the engine's request id
    seq: int
    blocks: list[int]
    peer: Peer | None = None
    reqs: dict[int, kvwire.Request] = field(default_factory=dict)   # group -> request
    aux_req: kvwire.Request | None = None
    staging_first: int | None = None
    error: kvwire.KvwireError | None = None
    t_start: float = field(default_factory=time.monotonic)
    done_layers: set[int] = field(default_factory=set)

    def all_requests(self) -> list[kvwire.Request]:
        return list(self.reqs.values()) + ([self.aux_req] if self.aux_req is not None else [])

    def finished(self) -> bool:
        rs = self.all_requests()
        return bool(rs) and all(r.done for r in rs)

    def first_error(self) -> kvwire.KvwireError | None:
        if self.error is not None:
            return self.error
        for r in self.all_requests():
            if r.done and not r.ok:
                return r.exception()
        return None

    def abort(self) -> None:
        """The fence: when it returns, nothing of this transfer lands any more."""
        for r in self.all_requests():
            if not r.done:
                r.abort()

    def free(self) -> None:
        for r in self.all_requests():
            if r.done:
                r.free()
        self.reqs.clear()
        self.aux_req = None


def refuse(peer: Peer, seq: int, layouts: Sequence[tuple[int, kvwire.Layout]], n: int) -> None:
    """Tells a receiver that granted a transfer this side will not send: for each
    (sequence, layout) a send of the granted shape, aborted before any of it is
    posted (kvw_req_abort sends ABORT, and the grant ends ABORTED at once
    instead of at its deadline)."""
    ep = peer.ep
    if not ep.ready:
        return
    for s, lay in layouts:
        blocks = [i % lay.n_blocks for i in range(n)]
        try:
            r = ep.send(s, lay, blocks, 0, lay.n_layers)
            r.abort()
            r.free()
        except kvwire.KvwireError as e:
            log.info("kvwire: telling %s that sequence %#x will not come failed: %s",
                     peer.engine_id, s, e)


def block_ids_of(blocks: Any) -> list[int]:
    """vLLM's KVCacheBlocks / tuple of lists per group / a plain list -> group 0's ids."""
    if blocks is None:
        return []
    if hasattr(blocks, "get_block_ids"):
        ids = blocks.get_block_ids()
        return list(ids[0]) if ids and isinstance(ids[0], (list, tuple)) else list(ids)
    if isinstance(blocks, tuple) and blocks and isinstance(blocks[0], (list, tuple)):
        return list(blocks[0])
    return [int(b) for b in blocks]


def ptr_span(t: Any) -> tuple[int, int]:
    return t.data_ptr(), t.numel() * t.element_size()


def raw_view(addr: int, nbytes: int):
    """A numpy uint8 view of raw host memory (no ownership)."""
    import numpy as np
    return np.frombuffer((ctypes.c_uint8 * nbytes).from_address(addr), dtype=np.uint8)
