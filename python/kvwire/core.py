# SPDX-License-Identifier: MIT
"""Pythonic objects over the kvwire C API (include/kvwire/kvwire.h).

Ownership follows the C library: a Context owns everything made from it.
Python keeps each parent alive as long as a child needs it (a Request holds
its Endpoint and Layout, a Layout its Memory, a Memory the buffer it
registered), and frees handles in the order the C library needs
(requests, endpoints, listeners, layouts, memory, context) -- at close(),
at the end of a `with` block, or when the objects are garbage collected
(then on the context's next call, on the thread that uses it).

Threading is the C library's: a context and everything made from it is used
from one thread at a time. Times are seconds (float) in this module.
"""
from __future__ import annotations

import array
import ctypes as C
import dataclasses
import os
import sys
import time
import weakref
from typing import Any, Callable, Mapping, Sequence

from . import _abi, _lib
from .errors import (BusyError, ClosedError, InvalidError, KvwireError, UnsupportedError,
                     WaitTimeout, make_error)

__all__ = [
    "Config", "Context", "Memory", "Layout", "Listener", "Endpoint", "Request", "Event",
    "EndpointInfo", "Counters", "RequestInfo", "ConfigEntry", "drivers_built", "strerror",
    "config_table", "library_path", "library_version",
]

_EV_BATCH = 64
_SLICE_S = 0.2  # longest single sleep inside a blocking call (keeps Ctrl-C responsive)


def _L() -> C.CDLL:
    return _lib.load()


def strerror(status: int) -> str:
    """kvw_strerror(): "KVW_ERR_TIMEDOUT: deadline passed ..." for a status code."""
    return _L().kvw_strerror(int(status)).decode()


def drivers_built() -> list[str]:
    """Drivers compiled into the loaded libkvwire (kvw_drivers_built)."""
    s = _L().kvw_drivers_built().decode()
    return [d for d in s.split(",") if d]


def library_path() -> str:
    return _lib.path()


def library_version() -> str:
    return _lib.version()


def _raise(st: int, where: str, ctx_h: int | None) -> None:
    lib = _L()
    sentence = lib.kvw_ctx_last_error(ctx_h).decode(errors="replace")
    raise make_error(st, where, sentence, strerror(st))


def _check(st: int, where: str, ctx_h: int | None) -> int:
    if st < 0:
        _raise(st, where, ctx_h)
    return st


# ------------------------------------------------------------------ config
@dataclasses.dataclass(frozen=True)
class ConfigEntry:
    name: str
    default: str
    help: str


def config_table() -> list[ConfigEntry]:
    """Every option the library knows (kvw_config_table): name, default, help."""
    tab = C.POINTER(_abi.kvw_config_entry)()
    n = _L().kvw_config_table(C.byref(tab))
    out = []
    for i in range(n):
        e = tab[i]
        out.append(ConfigEntry(e.name.decode(), (e.default_value or b"").decode(),
                               (e.help or b"").decode()))
    return out


class Config:
    """A kvw_config: the defaults, the KVW_* environment, then what you set.

        cfg = Config(timeout_ms=5000, rails=2)
        cfg["spin_us"] = 0
        ctx = Context(cfg)        # the context copies it
    """

    def __init__(self, values: Mapping[str, Any] | None = None, **options: Any):
        h = C.c_void_p()
        _check(_L().kvw_config_create(C.byref(h)), "kvw_config_create", None)
        self._h: int | None = h.value
        self._fin = weakref.finalize(self, _L().kvw_config_destroy, h.value)
        for k, v in {**(values or {}), **options}.items():
            self.set(k, v)

    @property
    def handle(self) -> int:
        if self._h is None:
            raise ClosedError("Config is closed", status=_abi.KVW_ERR_CLOSED)
        return self._h

    def set(self, name: str, value: Any) -> None:
        if isinstance(value, bool):
            value = int(value)
        _check(_L().kvw_config_set(self.handle, name.encode(), str(value).encode()),
               f"config {name}={value!r}", None)

    def get(self, name: str) -> str:
        buf = C.create_string_buffer(4096)
        _check(_L().kvw_config_get(self.handle, name.encode(), buf, len(buf)),
               f"config {name}", None)
        return buf.value.decode()

    __setitem__ = set
    __getitem__ = get

    def as_dict(self) -> dict[str, str]:
        return {e.name: self.get(e.name) for e in config_table()}

    def close(self) -> None:
        if self._h is not None:
            self._fin()
            self._h = None

    def __enter__(self) -> "Config":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------ data classes
@dataclasses.dataclass(frozen=True)
class Event:
    """One kvw_event: a layer landed ("layer") or a request finished ("seq")."""
    type: str                 # "layer" | "seq"
    status: int
    request: "Request | None"
    seq_id: int
    layer: int
    bytes: int

    @property
    def ok(self) -> bool:
        return self.status == _abi.KVW_OK


@dataclasses.dataclass(frozen=True)
class EndpointInfo:
    driver: str
    peer_uri: str
    peer_version: tuple[int, int]
    caps: frozenset[str]
    rails: int
    id: int
    authenticated: bool
    refs: int = 1              # holders: >1 when config ep_cache shares the endpoint
    peer_incarnation: int = 0  # the peer context's random id, new at each start (0: wire < 1.4)
    fds: int = 0               # what the endpoint holds now (kvwire stat "resources")
    qps: int = 0
    resource_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class RailCounters:
    bytes_tx: int
    bytes_rx: int
    frags_tx: int
    frags_rx: int
    errors: int


@dataclasses.dataclass(frozen=True)
class Counters:
    bytes_tx: int
    bytes_rx: int
    frags_tx: int
    frags_rx: int
    frames_tx: int
    frames_rx: int
    seqs_ok: int
    seqs_failed: int
    rejected: int
    bad_frames: int
    retransmits: int
    drops: int
    dups: int
    out_of_order: int
    keepalives_tx: int
    keepalives_rx: int
    rtt_us: int
    rails: int
    rail: tuple[RailCounters, ...]
    remote_refused: int = 0      # remote accesses a NIC refused (rdma)


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    seq_id: int
    is_send: bool
    status: int
    bytes: int
    bytes_total: int
    n_layers: int
    layers_done: int
    t_posted: int       # CLOCK_MONOTONIC ns (time.monotonic_ns() scale), 0 = not yet
    t_matched: int
    t_first_byte: int
    t_last_byte: int
    t_completed: int


# ------------------------------------------------------------ helpers
def _u32_blocks(blocks: Any) -> tuple[Any, int, Any]:
    """(uint32_t* , n, object to keep alive) for a block list of any usual kind."""
    np = sys.modules.get("numpy")
    torch = sys.modules.get("torch")
    if np is not None and isinstance(blocks, np.ndarray):
        arr = blocks
        if arr.ndim != 1:
            arr = arr.reshape(-1)
        if arr.dtype not in (np.uint32, np.int32) or not arr.flags.c_contiguous:
            if arr.size and int(arr.min()) < 0:
                raise InvalidError("block list holds negative block ids",
                                   status=_abi.KVW_ERR_INVALID)
            arr = np.ascontiguousarray(arr, dtype=np.uint32)
        return C.cast(arr.ctypes.data, C.POINTER(C.c_uint32)), int(arr.size), arr
    if torch is not None and isinstance(blocks, torch.Tensor):
        t = blocks.reshape(-1)
        if t.device.type != "cpu" or t.dtype != torch.int32 or not t.is_contiguous():
            t = t.to(device="cpu", dtype=torch.int32).contiguous()
        return C.cast(t.data_ptr(), C.POINTER(C.c_uint32)), int(t.numel()), t
    if isinstance(blocks, array.array) and blocks.typecode in ("I", "L") and \
            blocks.itemsize == 4:
        arr = blocks
    else:
        try:
            arr = array.array("I", blocks)
        except (OverflowError, TypeError) as e:
            raise InvalidError(f"block list: {e} (block ids are 0..2^32-1)",
                               status=_abi.KVW_ERR_INVALID) from None
    n = len(arr)
    if n == 0:
        return C.POINTER(C.c_uint32)(), 0, arr
    buf = (C.c_uint32 * n).from_buffer(arr)
    return C.cast(buf, C.POINTER(C.c_uint32)), n, (arr, buf)


def _timeout_ms(timeout: float | None) -> int:
    if timeout is None:
        return -1
    return max(0, int(timeout * 1000 + 0.999))


class _State:
    """Handle-level registry of one context (no references to the Python objects,
    so that a finalizer can tear everything down in the right order)."""

    def __init__(self, h: int):
        self.h: int | None = h
        self.reqs: set[int] = set()
        self.eps: set[int] = set()
        self.lsn: set[int] = set()
        self.lays: set[int] = set()
        self.mems: dict[int, Any] = {}      # handle -> owner object kept alive
        self.grave: list[tuple[str, int]] = []

    def bury(self, kind: str, h: int) -> None:
        self.grave.append((kind, h))

    def drain(self) -> None:
        """Frees what Python dropped, children before parents."""
        if not self.grave or self.h is None:
            return
        lib = _L()
        order = {"req": 0, "ep": 1, "lsn": 2, "lay": 3, "mem": 4}
        grave, self.grave = sorted(self.grave, key=lambda x: order[x[0]]), []
        for kind, h in grave:
            if kind == "req" and h in self.reqs:
                if lib.kvw_req_status(h) == _abi.KVW_INPROGRESS:
                    self.grave.append((kind, h))  # still running: try later
                    continue
                lib.kvw_req_free(h)
                self.reqs.discard(h)
            elif kind == "ep" and h in self.eps:
                lib.kvw_ep_close(h)
                self.eps.discard(h)
            elif kind == "lsn" and h in self.lsn:
                lib.kvw_listener_close(h)
                self.lsn.discard(h)
            elif kind == "lay" and h in self.lays:
                lib.kvw_layout_destroy(h)
                self.lays.discard(h)
            elif kind == "mem" and h in self.mems:
                if lib.kvw_mem_dereg(h) == _abi.KVW_ERR_BUSY:
                    self.grave.append((kind, h))
                    continue
                self.mems.pop(h, None)

    def teardown(self) -> None:
        if self.h is None:
            return
        lib = _L()
        for h in list(self.eps):
            lib.kvw_ep_close(h)     # fails every live request ABORTED; they stay freeable
        for h in list(self.reqs):
            lib.kvw_req_free(h)
        for h in list(self.lsn):
            lib.kvw_listener_close(h)
        for h in list(self.lays):
            lib.kvw_layout_destroy(h)
        for h in list(self.mems):
            lib.kvw_mem_dereg(h)
        lib.kvw_ctx_destroy(self.h)
        self.reqs.clear(); self.eps.clear(); self.lsn.clear(); self.lays.clear()
        self.mems.clear(); self.grave.clear()
        self.h = None


def _teardown_unless_threads_at_exit(st: "_State") -> None:
    """A context's finalizer. At interpreter exit, daemon threads may still be
    inside a kvwire call on this context (a connector's progress thread, an
    engine stepped on a thread): destroying it under them would crash the
    exiting process. Then the context is left to the process's end (the kernel
    takes back its memory, sockets and queue pairs; an shm listener's socket
    file stays: close contexts before exit to remove it)."""
    import sys
    import threading
    if sys.is_finalizing() or (threading.main_thread() is threading.current_thread()
                               and threading.active_count() > 1 and _at_exit[0]):
        return
    st.teardown()


_at_exit = [False]
_at_exit_hooked = [False]


def _mark_exit() -> None:
    _at_exit[0] = True


# ------------------------------------------------------------------ context
class Context:
    """A kvw_ctx: drivers, endpoints, memory, the event queue.

        with kvwire.Context(timeout_ms=5000) as ctx:
            ep = ctx.connect("tcp://decode0:7471")
            ...

    `config` is a Config, a mapping of option names, or None (defaults plus the
    KVW_* environment); keyword options are added to it.
    """

    def __init__(self, config: "Config | Mapping[str, Any] | None" = None, **options: Any):
        lib = _L()
        own_cfg = None
        if config is None and not options:
            cfg_h = None
        else:
            if isinstance(config, Config) and not options:
                cfg = config
            else:
                base = config.as_dict() if isinstance(config, Config) else dict(config or {})
                cfg = own_cfg = Config({**base, **options})
            cfg_h = cfg.handle
        self.keepalive_s = self._cfg_ms(cfg_h, "keepalive_ms", 250) / 1000.0
        self.timeout_s = self._cfg_ms(cfg_h, "timeout_ms", 30000) / 1000.0
        self.fault = bool(self._cfg_str(cfg_h, "fault"))
        h = C.c_void_p()
        st = lib.kvw_ctx_create(cfg_h, C.byref(h))
        if own_cfg is not None:
            own_cfg.close()
        _check(st, "kvw_ctx_create", None)
        self._st = _State(h.value)
        self._fin = weakref.finalize(self, _teardown_unless_threads_at_exit, self._st)
        if not _at_exit_hooked[0]:   # after weakref's own exit hook: runs before it (LIFO)
            import atexit
            atexit.register(_mark_exit)
            _at_exit_hooked[0] = True
        self._events = (_abi.kvw_event * _EV_BATCH)()
        self._next_id = 1
        self._live: dict[int, Request] = {}                  # in progress: strong
        self._all: "weakref.WeakValueDictionary[int, Request]" = weakref.WeakValueDictionary()
        self._by_ptr: "weakref.WeakValueDictionary[int, Request]" = weakref.WeakValueDictionary()
        self._eps: "weakref.WeakSet[Endpoint]" = weakref.WeakSet()
        self._mems: "weakref.WeakSet[Memory]" = weakref.WeakSet()
        self._closables: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._poll_hooks: list[Callable[[], None]] = []
        self._aio: Any = None
        # one kvw_poll_wait sleeps at most this long: under half the keepalive
        # interval (a sleep longer than keepalive_ms makes the core's liveness
        # check take the gap for this process's own absence, and a silent peer
        # is then never declared dead), and short enough for Ctrl-C
        self._slice = min(_SLICE_S, self.keepalive_s / 2)

    @staticmethod
    def _cfg_str(cfg_h: int | None, name: str) -> str:
        if cfg_h is not None:
            buf = C.create_string_buffer(4096)
            if _L().kvw_config_get(cfg_h, name.encode(), buf, len(buf)) == 0:
                return buf.value.decode()
        return os.environ.get("KVW_" + name.upper(), "")

    @classmethod
    def _cfg_ms(cls, cfg_h: int | None, name: str, dflt: int) -> int:
        try:
            return int(cls._cfg_str(cfg_h, name) or dflt)
        except ValueError:
            return dflt

    # ---- basics
    @property
    def handle(self) -> int:
        h = self._st.h
        if h is None:
            raise ClosedError("the kvwire Context is closed", status=_abi.KVW_ERR_CLOSED)
        return h

    @property
    def closed(self) -> bool:
        return self._st.h is None

    @property
    def last_error(self) -> str:
        """kvw_ctx_last_error(): the sentence about the last failure ("" if none)."""
        return _L().kvw_ctx_last_error(self.handle).decode(errors="replace")

    def set_log(self, fn: "Callable[[int, str], None] | None") -> None:
        """kvw_ctx_set_log(): fn(level, line) for each library log line at or below
        config log_level (1 errors .. 4 debug); None = back to stderr. fn runs inside
        the kvwire call that logs; exceptions it raises are printed and dropped."""
        if fn is None:
            self._log_cb = None
            _L().kvw_ctx_set_log(self.handle, _abi.kvw_log_fn(), None)
            return

        def tramp(_user: int, level: int, line: bytes) -> None:
            try:
                fn(int(level), line.decode(errors="replace"))
            except Exception:  # never unwind through C
                import traceback
                traceback.print_exc()
        self._log_cb = _abi.kvw_log_fn(tramp)   # kept alive as long as the context
        _L().kvw_ctx_set_log(self.handle, self._log_cb, None)

    def fileno(self) -> int:
        """kvw_ctx_fd(): readable when progress has work (for select/epoll/asyncio)."""
        return _L().kvw_ctx_fd(self.handle)

    fd = property(fileno)

    def _check(self, st: int, where: str) -> int:
        if st < 0:
            _raise(st, where, self._st.h)
        return st

    def progress(self) -> None:
        """kvw_progress(): drives every driver, endpoint and timer once (never blocks).
        Events it produces are dispatched to their Requests at the next poll()."""
        self._st.drain()
        self._check(_L().kvw_progress(self.handle), "kvw_progress")

    def wait(self, timeout: float | None = None) -> None:
        """kvw_ctx_wait(): sleeps on the context fd up to `timeout` s or the next timer."""
        self._check(_L().kvw_ctx_wait(self.handle, _timeout_ms(timeout)), "kvw_ctx_wait")

    def poll(self, timeout: float | None = 0.0) -> list[Event]:
        """Drives progress and returns the events that came (kvw_poll / kvw_poll_wait).

        timeout 0 = do not wait; > 0 = spin, then sleep on the fd, up to that many
        seconds until at least one event; None = until an event. Every event is
        first applied to its Request (status, layers, callbacks)."""
        lib = _L()
        h = self.handle
        self._st.drain()
        out: list[Event] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if timeout == 0 or out:
                n = lib.kvw_poll(h, self._events, _EV_BATCH)
            else:
                left = self._slice if deadline is None else \
                    max(0.0, deadline - time.monotonic())
                n = lib.kvw_poll_wait(h, self._events, _EV_BATCH,
                                      _timeout_ms(min(left, self._slice)))
            if n < 0:
                _raise(n, "kvw_poll", h)
            for i in range(n):
                out.append(self._dispatch(self._events[i]))
            if n == _EV_BATCH:
                continue  # more may be queued
            if out or timeout == 0:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        for hook in self._poll_hooks:
            hook()
        return out

    def _dispatch(self, ev: _abi.kvw_event) -> Event:
        rid = ev.user_data or 0
        req = self._all.get(rid)
        typ = "layer" if ev.type == _abi.KVW_EV_LAYER else "seq"
        if req is not None:
            if typ == "layer":
                req._on_layer(ev.layer)
            else:
                req._on_final(ev.status)
        return Event(typ, ev.status, req, ev.seq_id, ev.layer, ev.bytes)

    # ---- objects
    def listen(self, uri: str) -> "Listener":
        """kvw_listen(): e.g. "tcp://0.0.0.0:7471", "shm:///run/kvwire/d0.sock"."""
        return Listener(self, uri)

    def connect(self, uri: str, timeout: float | None = None, *, wait: bool = True) -> "Endpoint":
        """kvw_connect() (wait=True; timeout None = the config's connect_timeout_ms) or
        kvw_connect_start() (wait=False: check Endpoint.ready / wait_connected())."""
        return Endpoint._connect(self, uri, timeout, wait)

    def alloc(self, nbytes: int, *, pin: bool = True) -> "Memory":
        """kvw_mem_alloc(): shareable (memfd) memory with guard pages, registered.
        The shm driver needs it on the sending side."""
        return Memory._alloc(self, nbytes, pin)

    def register(self, obj: Any, nbytes: int | None = None, *, pin: bool = True) -> "Memory":
        """kvw_mem_reg() over a numpy array, a CPU torch tensor (data_ptr + byte size),
        a writable buffer (bytearray, mmap, memoryview) or an int address + nbytes."""
        return Memory._register(self, obj, nbytes, pin)

    def layout(self, mem: "Memory", **desc: Any) -> "Layout":
        return Layout(mem, **desc)

    @property
    def requests(self) -> list["Request"]:
        """Requests still running."""
        return list(self._live.values())

    def _new_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def aio(self):
        """The asyncio driver of this context on the running loop (see kvwire.aio)."""
        from . import aio
        return aio.driver(self)

    # ---- teardown
    def close(self, *, force: bool = False) -> None:
        """Frees everything made from this context, then the context.

        Raises BusyError (and frees nothing) while a numpy/torch view made by
        Memory.numpy()/torch() of kvwire-allocated memory is alive, unless
        force=True: the memory is unmapped and such a view would fault."""
        if self._st.h is None:
            return
        if not force:
            for m in list(self._mems):
                m._check_no_views("Context.close()")
        if self._aio is not None:
            self._aio._detach()
        for req in list(self._all.values()):
            req._closing()
        for ep in list(self._eps):
            ep._mark_closed()
        self._fin()          # _State.teardown: endpoints, requests, listeners, layouts, memory
        for req in list(self._all.values()):
            req._mark_freed()
        for obj in list(self._closables):
            obj._mark_closed()
        self._live.clear()

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<kvwire.Context {'closed' if self.closed else hex(self._st.h or 0)}>"


# ------------------------------------------------------------------ memory
class Memory:
    """Registered memory (kvw_mem): the pool pages move from and into.

    Made by Context.alloc() (kvwire allocates: shareable, guard pages) or
    Context.register(obj) (your buffer; kept alive while registered)."""

    def __init__(self, *_a: Any, **_k: Any):
        raise TypeError("use Context.alloc() or Context.register()")

    @classmethod
    def _new(cls, ctx: Context, h: int, owner: Any, allocated: bool, keep: Any = None
             ) -> "Memory":
        self = object.__new__(cls)
        self.ctx = ctx
        self._h: int | None = h
        self.allocated = allocated
        self.owner = owner          # what was registered (None: allocated by kvwire)
        self._keep = keep           # buffer exports held while registered
        lib = _L()
        self.addr: int = lib.kvw_mem_addr(h) or 0
        self.nbytes: int = lib.kvw_mem_len(h)
        self.reg_ns: int = lib.kvw_mem_reg_ns(h)
        self._carray = (C.c_uint8 * self.nbytes).from_address(self.addr) if allocated else None
        self._base_refs = sys.getrefcount(self._carray) if allocated else 0
        ctx._st.mems[h] = keep
        ctx._mems.add(self)
        ctx._closables.add(self)
        st = ctx._st
        self._fin = weakref.finalize(self, st.bury, "mem", h)
        return self

    @classmethod
    def _alloc(cls, ctx: Context, nbytes: int, pin: bool) -> "Memory":
        h = C.c_void_p()
        ctx._check(_L().kvw_mem_alloc(ctx.handle, int(nbytes), 0 if pin else _abi.KVW_MEM_NO_PIN,
                                      C.byref(h)), f"kvw_mem_alloc({nbytes} bytes)")
        return cls._new(ctx, h.value, None, True)

    @classmethod
    def _register(cls, ctx: Context, obj: Any, nbytes: int | None, pin: bool) -> "Memory":
        addr, n, keep = _buffer_of(obj, nbytes)
        h = C.c_void_p()
        ctx._check(_L().kvw_mem_reg(ctx.handle, C.c_void_p(addr), n,
                                    0 if pin else _abi.KVW_MEM_NO_PIN, C.byref(h)),
                   f"kvw_mem_reg({n} bytes at {addr:#x})")
        return cls._new(ctx, h.value, None if isinstance(obj, int) else obj, False, keep)

    @property
    def handle(self) -> int:
        if self._h is None:
            raise ClosedError("this Memory was deregistered", status=_abi.KVW_ERR_CLOSED)
        self.ctx.handle
        return self._h

    def __len__(self) -> int:
        return self.nbytes

    def _buffer(self) -> Any:
        if self._carray is None:
            self.handle
            return (C.c_uint8 * self.nbytes).from_address(self.addr)
        self.handle
        return self._carray

    def view(self) -> memoryview:
        """A memoryview of the whole region (valid until the memory is closed)."""
        return memoryview(self._buffer()).cast("B")

    def numpy(self, dtype: Any = "uint8", shape: Sequence[int] | int | None = None,
              offset: int = 0):
        """A numpy array over the memory (no copy)."""
        import numpy as np
        dt = np.dtype(dtype)
        count = -1 if shape is None else int(np.prod(shape))
        arr = np.frombuffer(self._buffer(), dtype=dt, count=count, offset=offset)
        return arr if shape is None else arr.reshape(shape)

    def torch(self, dtype: Any = None, shape: Sequence[int] | int | None = None, offset: int = 0):
        """A CPU torch tensor over the memory (no copy)."""
        import torch
        dtype = dtype or torch.uint8
        es = torch.empty((), dtype=dtype).element_size()
        count = (self.nbytes - offset) // es if shape is None else \
            int(torch.Size([shape] if isinstance(shape, int) else shape).numel())
        t = torch.frombuffer(self._buffer(), dtype=dtype, count=count, offset=offset)
        return t if shape is None else t.reshape(shape)

    def _check_no_views(self, what: str) -> None:
        if self._carray is not None and self._h is not None:
            extra = sys.getrefcount(self._carray) - self._base_refs
            if extra > 0:
                raise BusyError(
                    f"{what}: {extra} numpy/torch/memoryview view(s) of kvwire memory "
                    f"{self.addr:#x} ({self.nbytes} bytes) are still alive; del them first "
                    f"(or close(force=True): the memory is unmapped and such a view would fault)",
                    status=_abi.KVW_ERR_BUSY)

    def close(self, *, force: bool = False) -> None:
        """kvw_mem_dereg(). BusyError while a layout or running request uses it, or
        (allocated memory) while views made by numpy()/torch()/view() are alive."""
        if self._h is None or self.ctx.closed:
            self._mark_closed()
            return
        if not force:
            self._check_no_views("Memory.close()")
        st = _L().kvw_mem_dereg(self._h)
        self.ctx._check(st, "kvw_mem_dereg")
        self.ctx._st.mems.pop(self._h, None)
        self._fin.detach()
        self._mark_closed()

    def _mark_closed(self) -> None:
        self._h = None
        self._keep = None           # releases the buffer export (a bytearray may resize again)
        self._fin.detach()

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "alloc" if self.allocated else type(self.owner).__name__
        return f"<kvwire.Memory {kind} {self.nbytes} B at {self.addr:#x}>"


def _buffer_of(obj: Any, nbytes: int | None) -> tuple[int, int, Any]:
    """(address, length, object to keep alive) of something registrable."""
    np = sys.modules.get("numpy")
    torch = sys.modules.get("torch")
    if isinstance(obj, int):
        if not nbytes:
            raise InvalidError("register(address): give nbytes", status=_abi.KVW_ERR_INVALID)
        return obj, int(nbytes), None
    if torch is not None and isinstance(obj, torch.Tensor):
        if obj.device.type != "cpu":
            raise UnsupportedError(
                f"register(): a {obj.device} tensor is not host memory; kvwire moves host "
                f"memory -- stage it through pinned host buffers (kvwire.staging.Stager, used by "
                f"the vLLM connector for CUDA caches)", status=_abi.KVW_ERR_UNSUPPORTED)
        if not obj.is_contiguous():
            raise InvalidError("register(): the tensor is not contiguous; register its "
                               "contiguous base tensor", status=_abi.KVW_ERR_INVALID)
        n = obj.numel() * obj.element_size()
        return obj.data_ptr(), int(nbytes or n), obj
    if np is not None and isinstance(obj, np.ndarray):
        if not (obj.flags.c_contiguous or obj.flags.f_contiguous):
            raise InvalidError("register(): the array is not contiguous; register its base "
                               "array", status=_abi.KVW_ERR_INVALID)
        if not obj.flags.writeable:
            raise InvalidError("register(): the array is read-only; kvwire writes into "
                               "registered memory on the receiving side",
                               status=_abi.KVW_ERR_INVALID)
        return obj.ctypes.data, int(nbytes or obj.nbytes), obj
    try:
        mv = memoryview(obj)
    except TypeError:
        raise InvalidError(f"register(): {type(obj).__name__} is neither a buffer, a numpy "
                           f"array nor a torch tensor", status=_abi.KVW_ERR_INVALID) from None
    if mv.readonly:
        raise InvalidError(f"register(): {type(obj).__name__} is read-only; pass a bytearray, "
                           f"a writable mmap or array", status=_abi.KVW_ERR_INVALID)
    if not mv.contiguous:
        raise InvalidError("register(): the buffer is not contiguous", status=_abi.KVW_ERR_INVALID)
    n = mv.nbytes
    carr = (C.c_uint8 * n).from_buffer(mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv)
    return C.addressof(carr), int(nbytes or n), (obj, mv, carr)


# ---------------------------------------------------------------- geometry
_GEOM_KINDS = {
    "nhd": _abi.KVW_GEOM_NHD,                 # per layer [2][blocks][tokens][heads][dim]: vLLM
    "hnd": _abi.KVW_GEOM_HND,                 # per layer [2][blocks][heads][tokens][dim]
    "nhd_kv_block": _abi.KVW_GEOM_NHD_KV_BLOCK,   # per layer [blocks][2][tokens][heads][dim]
    "flashinfer": _abi.KVW_GEOM_NHD_KV_BLOCK,
    "hnd_kv_block": _abi.KVW_GEOM_HND_KV_BLOCK,   # per layer [blocks][2][heads][tokens][dim]
    "mla": _abi.KVW_GEOM_MLA,                 # per layer [blocks][tokens][latent]
}


class Geometry:
    """Where each element of a KV cache lives (kvw_geom, kvwire.h): what a
    prefill engine and a decode engine with different layouts describe so that
    pages move between them -- block size, NHD/HND, K/V together or apart, the
    heads a tensor-parallel rank holds, MLA.

        Geometry("nhd", n_layers=32, n_blocks=1024, block_tokens=16,
                 head_dim=128, num_heads=8, elem_bytes=2, heads=(0, 8))

    kvw_geom_init fills the strides of the named kind (layers packed after
    base_offset); layer_stride or kv_offsets (n_layers * n_kv bases) override
    where layers (and K/V regions) start. Strides are read back as attributes."""

    def __init__(self, kind: str, *, n_layers: int, n_blocks: int, block_tokens: int,
                 head_dim: int, num_heads: int = 1, elem_bytes: int = 2,
                 heads: tuple[int, int] | None = None, base_offset: int = 0,
                 layer_stride: int | None = None, kv_offsets: Sequence[int] | None = None):
        if kind not in _GEOM_KINDS:
            raise InvalidError(f"Geometry: kind {kind!r} is none of {sorted(_GEOM_KINDS)}",
                               status=_abi.KVW_ERR_INVALID)
        g = _abi.kvw_geom()
        g.size = C.sizeof(g)
        g.n_layers, g.n_blocks, g.block_tokens = int(n_layers), int(n_blocks), int(block_tokens)
        g.head_dim, g.num_heads, g.elem_bytes = int(head_dim), int(num_heads), int(elem_bytes)
        g.h0, g.h1 = (int(heads[0]), int(heads[1])) if heads else (0, 0)
        g.base_offset = int(base_offset)
        _check(_L().kvw_geom_init(_GEOM_KINDS[kind], C.byref(g)), f"kvw_geom_init({kind})", None)
        if layer_stride is not None:
            g.layer_stride = int(layer_stride)
        self.kind = kind
        self._offs = None
        if kv_offsets is not None:
            offs = [int(x) for x in kv_offsets]
            if len(offs) != g.n_layers * g.n_kv:
                raise InvalidError(f"Geometry: {len(offs)} kv_offsets for {g.n_layers} layers x "
                                   f"{g.n_kv} (K/V)", status=_abi.KVW_ERR_INVALID)
            self._offs = (C.c_uint64 * len(offs))(*offs)
            g.kv_offsets = C.cast(self._offs, C.POINTER(C.c_uint64))
        self._g = g

    def __getattr__(self, name: str) -> Any:
        g = self.__dict__.get("_g")
        if g is not None and name in {f[0] for f in _abi.kvw_geom._fields_} and name != "kv_offsets":
            return getattr(g, name)
        raise AttributeError(name)

    @property
    def heads(self) -> tuple[int, int]:
        return (self._g.h0, self._g.h1)

    def kv_base(self, layer: int, kv: int = 0) -> int:
        g = self._g
        if self._offs is not None:
            return int(self._offs[layer * g.n_kv + kv])
        return g.base_offset + layer * g.layer_stride + kv * g.kv_stride

    def offset(self, layer: int, kv: int, block: int, slot: int, head: int) -> int:
        """Byte offset of (layer, K/V, block, slot in the block, head) in the memory."""
        g = self._g
        return (self.kv_base(layer, kv) + block * g.block_stride + slot * g.token_stride +
                (head - g.h0) * g.head_stride)

    @property
    def nbytes(self) -> int:
        """The bytes a Memory must hold for this geometry (its last element's end)."""
        g = self._g
        last = max(self.kv_base(lay, kv) for lay in range(g.n_layers) for kv in range(g.n_kv))
        return (last + (g.n_blocks - 1) * g.block_stride + (g.block_tokens - 1) * g.token_stride +
                (g.h1 - g.h0 - 1) * g.head_stride + g.head_dim * g.elem_bytes)

    @property
    def block_bytes(self) -> int:
        """Bytes of one block of one layer that this side holds (K and V)."""
        g = self._g
        return g.n_kv * g.block_tokens * (g.h1 - g.h0) * g.head_dim * g.elem_bytes

    def __repr__(self) -> str:
        g = self._g
        return (f"<kvwire.Geometry {self.kind} layers={g.n_layers} blocks={g.n_blocks}x"
                f"{g.block_tokens} heads={g.h0}..{g.h1}/{g.num_heads} dim={g.head_dim}x"
                f"{g.elem_bytes}B>")


def _seq_range(tokens: tuple[int, int] | None, heads: tuple[int, int] | None) -> Any:
    r = _abi.kvw_seq_range()
    r.size = C.sizeof(r)
    if heads:
        r.h0, r.h1 = int(heads[0]), int(heads[1])
    if tokens:
        r.t0, r.t1 = int(tokens[0]), int(tokens[1])
    return r


# ------------------------------------------------------------------ layout
class Layout:
    """Where page (layer l, block b) lives in a Memory (kvw_layout_desc):

        mem + layer_offset(l) + b * block_stride, block_bytes long
        layer_offset(l) = layer_offsets[l] if given, else base_offset + l * layer_stride

    block_stride defaults to block_bytes, layer_stride to n_blocks * block_stride.
    K and V may be separate layers. (The layout is one class so that the
    per-side geometry of heterogeneous caches can grow here.)"""

    def __init__(self, mem: Memory, n_layers: int, n_blocks: int, block_bytes: int,
                 block_stride: int | None = None, base_offset: int = 0,
                 layer_stride: int | None = None, layer_offsets: Sequence[int] | None = None):
        self.mem = mem
        self.ctx = mem.ctx
        self.geometry: Geometry | None = None
        self.n_layers = int(n_layers)
        self.n_blocks = int(n_blocks)
        self.block_bytes = int(block_bytes)
        self.block_stride = int(block_stride if block_stride is not None else block_bytes)
        self.base_offset = int(base_offset)
        self.layer_stride = int(layer_stride if layer_stride is not None
                                else self.n_blocks * self.block_stride)
        self.layer_offsets = None if layer_offsets is None else [int(x) for x in layer_offsets]
        if self.layer_offsets is not None and len(self.layer_offsets) != self.n_layers:
            raise InvalidError(f"Layout: {len(self.layer_offsets)} layer_offsets for "
                               f"{self.n_layers} layers", status=_abi.KVW_ERR_INVALID)
        desc = _abi.kvw_layout_desc(self.n_layers, self.n_blocks, self.block_bytes,
                                    self.block_stride, self.base_offset, self.layer_stride, None)
        offs = None
        if self.layer_offsets is not None:
            offs = (C.c_uint64 * self.n_layers)(*self.layer_offsets)
            desc.layer_offsets = C.cast(offs, C.POINTER(C.c_uint64))
        h = C.c_void_p()
        self.ctx._check(_L().kvw_layout_create(mem.handle, C.byref(desc), C.byref(h)),
                        "kvw_layout_create")
        self._h: int | None = h.value
        self._users: "weakref.WeakSet[Request]" = weakref.WeakSet()
        self.ctx._st.lays.add(h.value)
        self.ctx._closables.add(self)
        self._fin = weakref.finalize(self, self.ctx._st.bury, "lay", h.value)

    @classmethod
    def from_geometry(cls, mem: Memory, geometry: Geometry) -> "Layout":
        """kvw_layout_create_geom(): a layout whose pages are those of a Geometry.
        Requests on it move tokens and heads (Endpoint.recv/send take tokens= and
        heads=), and the peer's geometry may differ: the library joins the two."""
        self = cls.__new__(cls)
        self.mem, self.ctx, self.geometry = mem, mem.ctx, geometry
        self.n_layers, self.n_blocks = geometry.n_layers, geometry.n_blocks
        self.block_bytes = geometry.block_bytes
        self.block_stride = geometry.block_stride
        self.base_offset, self.layer_stride = geometry.base_offset, geometry.layer_stride
        self.layer_offsets = None
        h = C.c_void_p()
        self.ctx._check(_L().kvw_layout_create_geom(mem.handle, C.byref(geometry._g), C.byref(h)),
                        "kvw_layout_create_geom")
        self._h = h.value
        self._users = weakref.WeakSet()
        self.ctx._st.lays.add(h.value)
        self.ctx._closables.add(self)
        self._fin = weakref.finalize(self, self.ctx._st.bury, "lay", h.value)
        return self

    @property
    def handle(self) -> int:
        if self._h is None:
            raise ClosedError("this Layout is closed", status=_abi.KVW_ERR_CLOSED)
        self.ctx.handle
        return self._h

    def layer_offset(self, layer: int) -> int:
        if self.layer_offsets is not None:
            return self.layer_offsets[layer]
        return self.base_offset + layer * self.layer_stride

    def offset(self, layer: int, block: int) -> int:
        """Byte offset of page (layer, block) in the memory."""
        return self.layer_offset(layer) + block * self.block_stride

    def page(self, layer: int, block: int):
        """A numpy uint8 view of one page."""
        return self.mem.numpy("uint8", self.block_bytes, self.offset(layer, block)) \
            if self.mem.allocated else \
            __import__("numpy").frombuffer(
                (C.c_uint8 * self.block_bytes).from_address(self.mem.addr + self.offset(layer, block)),
                dtype="uint8")

    def runs(self, blocks: Any) -> int:
        """kvw_layout_runs(): contiguous memory runs the block list makes in one layer."""
        p, n, _keep = _u32_blocks(blocks)
        return int(_L().kvw_layout_runs(self.handle, p, n))

    def seq_bytes(self, n_blocks: int) -> int:
        return n_blocks * self.block_bytes * self.n_layers

    def close(self) -> None:
        """kvw_layout_destroy(). BusyError while a running request uses it."""
        if self._h is None or self.ctx.closed:
            self._mark_closed()
            return
        busy = [r for r in self._users if not r.done]
        if busy:
            raise BusyError(f"Layout.close(): {len(busy)} running request(s) use this layout "
                            f"(e.g. seq {busy[0].seq_id}); wait for or abort them first",
                            status=_abi.KVW_ERR_BUSY)
        _L().kvw_layout_destroy(self._h)
        self.ctx._st.lays.discard(self._h)
        self._mark_closed()

    def _mark_closed(self) -> None:
        self._h = None
        self._fin.detach()

    def __enter__(self) -> "Layout":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<kvwire.Layout {self.n_layers} layers x {self.n_blocks} blocks x "
                f"{self.block_bytes} B>")


# ------------------------------------------------------------ listener
class Listener:
    """kvw_listener: accepts endpoints that completed the handshake."""

    def __init__(self, ctx: Context, uri: str):
        self.ctx = ctx
        h = C.c_void_p()
        ctx._check(_L().kvw_listen(ctx.handle, uri.encode(), C.byref(h)), f"kvw_listen({uri})")
        self._h: int | None = h.value
        ctx._st.lsn.add(h.value)
        ctx._closables.add(self)
        self._fin = weakref.finalize(self, ctx._st.bury, "lsn", h.value)
        self.uri: str = _L().kvw_listener_uri(h.value).decode()

    @property
    def handle(self) -> int:
        if self._h is None:
            raise ClosedError("this Listener is closed", status=_abi.KVW_ERR_CLOSED)
        self.ctx.handle
        return self._h

    def accept(self, timeout: float | None = None) -> "Endpoint | None":
        """kvw_accept(): the next endpoint, or None when none came within timeout
        (0 = do not wait, None = forever)."""
        lib = _L()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.ctx._st.drain()
            left = _SLICE_S if deadline is None else max(0.0, deadline - time.monotonic())
            h = C.c_void_p()
            st = lib.kvw_accept(self.handle, _timeout_ms(min(left, _SLICE_S)), C.byref(h))
            if st == _abi.KVW_OK:
                return Endpoint._adopt(self.ctx, h.value, self.uri)
            if st != _abi.KVW_INPROGRESS:
                self.ctx._check(st, f"kvw_accept({self.uri})")
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        if self._h is not None and not self.ctx.closed:
            _L().kvw_listener_close(self._h)
            self.ctx._st.lsn.discard(self._h)
        self._mark_closed()

    def _mark_closed(self) -> None:
        self._h = None
        self._fin.detach()

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<kvwire.Listener {self.uri}>"


# ------------------------------------------------------------ endpoint
class Endpoint:
    """kvw_ep: one connection to a peer; both sides may send and receive."""

    def __init__(self, *_a: Any, **_k: Any):
        raise TypeError("use Context.connect() or Listener.accept()")

    @classmethod
    def _adopt(cls, ctx: Context, h: int, uri: str) -> "Endpoint":
        self = object.__new__(cls)
        self.ctx = ctx
        self._h: int | None = h
        self.uri = uri
        self._reqs: "weakref.WeakSet[Request]" = weakref.WeakSet()
        self._driver: str | None = None
        ctx._st.eps.add(h)
        ctx._eps.add(self)
        self._fin = weakref.finalize(self, ctx._st.bury, "ep", h)
        return self

    @classmethod
    def _connect(cls, ctx: Context, uri: str, timeout: float | None, wait: bool) -> "Endpoint":
        h = C.c_void_p()
        lib = _L()
        if wait:
            ms = -1 if timeout is None else _timeout_ms(timeout)
            ctx._check(lib.kvw_connect(ctx.handle, uri.encode(), ms, C.byref(h)),
                       f"kvw_connect({uri})")
        else:
            ctx._check(lib.kvw_connect_start(ctx.handle, uri.encode(), C.byref(h)),
                       f"kvw_connect_start({uri})")
        return cls._adopt(ctx, h.value, uri)

    @property
    def handle(self) -> int:
        if self._h is None:
            raise ClosedError(f"endpoint {self.uri} is closed", status=_abi.KVW_ERR_CLOSED)
        self.ctx.handle
        return self._h

    @property
    def closed(self) -> bool:
        return self._h is None

    @property
    def status(self) -> int:
        """kvw_ep_status(): 0 usable, 1 connecting, else why not (KVW_ERR_CLOSED once closed)."""
        if self._h is None or self.ctx.closed:
            return _abi.KVW_ERR_CLOSED
        return _L().kvw_ep_status(self._h)

    @property
    def ready(self) -> bool:
        return self.status == _abi.KVW_OK

    def check(self) -> None:
        """Raises the endpoint's failure (PeerDeadError, AuthError, ...) if it has one."""
        st = self.status
        if st < 0:
            raise make_error(st, f"endpoint {self.uri}", self.ctx.last_error if not
                             self.ctx.closed else "", strerror(st))

    def wait_connected(self, timeout: float | None = None) -> None:
        """Drives progress until a connect_start() endpoint is up (or raises why not)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.status == _abi.KVW_INPROGRESS:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"endpoint {self.uri}: handshake not done within {timeout} s")
            self.ctx.poll(0.001)
        self.check()

    def info(self) -> EndpointInfo:
        i = _abi.sized(_abi.kvw_ep_info)
        self.ctx._check(_L().kvw_ep_query(self.handle, C.byref(i)), "kvw_ep_query")
        caps = frozenset(n for bit, n in _abi.CAP_NAMES.items() if i.caps & bit)
        return EndpointInfo(i.driver.decode(), i.peer_uri.decode(),
                            (i.peer_version_major, i.peer_version_minor), caps, i.rails, i.id,
                            bool(i.authenticated), i.refs, i.peer_incarnation, i.res_fds,
                            i.res_qps, i.res_bytes)

    @property
    def driver(self) -> str:
        if self._driver is None:
            self._driver = self.info().driver
        return self._driver

    def counters(self) -> Counters:
        c = _abi.sized(_abi.kvw_counters)
        self.ctx._check(_L().kvw_ep_counters(self.handle, C.byref(c)), "kvw_ep_counters")
        rails = tuple(RailCounters(r.bytes_tx, r.bytes_rx, r.frags_tx, r.frags_rx, r.errors)
                      for r in c.rail[:max(0, min(c.rails, _abi.KVW_MAX_RAILS))])
        return Counters(*[getattr(c, f) for f in _abi.COUNTER_FIELDS], c.rails, rails,
                        c.remote_refused)

    def ping(self, timeout: float = 1.0) -> float:
        """kvw_ep_ping(): one keepalive round trip; returns its time in seconds."""
        rtt = C.c_uint64()
        self.ctx._check(_L().kvw_ep_ping(self.handle, _timeout_ms(timeout), C.byref(rtt)),
                        f"kvw_ep_ping({self.uri})")
        return rtt.value / 1e9

    def recv(self, seq_id: int, layout: Layout, blocks: Any, timeout: float | None = None,
             *, tokens: tuple[int, int] | None = None, heads: tuple[int, int] | None = None
             ) -> "Request":
        """kvw_recv_seq(): grant the peer exactly these blocks (all layers) for seq_id.
        timeout: the request's deadline in seconds (None = the config's timeout_ms).
        On a Layout.from_geometry layout, tokens=(t0, t1) and heads=(h0, h1) narrow
        the grant (kvw_recv_seq_range: a cached prefix, a prompt ending mid-block,
        the heads one prefill rank holds); blocks is then the block table."""
        p, n, _keep = _u32_blocks(blocks)
        us = 0 if timeout is None else max(1, int(timeout * 1e6))
        h = C.c_void_p()
        self.ctx._st.drain()
        if tokens is not None or heads is not None:
            rng = _seq_range(tokens, heads)
            st = _L().kvw_recv_seq_range(self.handle, int(seq_id), layout.handle, p, n,
                                         C.byref(rng), us, C.byref(h))
        else:
            st = _L().kvw_recv_seq(self.handle, int(seq_id), layout.handle, p, n, us, C.byref(h))
        self.ctx._check(st, f"kvw_recv_seq(seq {seq_id})")
        return Request._new(self, h.value, int(seq_id), False, layout, n, timeout)

    def recv_fanin(self, others: "list[Endpoint]", seq_id: int, layout: Layout, blocks: Any,
                   ranges: "list[dict[str, tuple[int, int]]]", timeout: float | None = None
                   ) -> "Request":
        """kvw_recv_seq_fanin(): one request filled by several prefill senders (tensor-
        parallel fan-in), this endpoint's peer and each of `others`' peers. ranges[i]
        (dict with heads=(h0, h1) and/or tokens=(t0, t1)) is what endpoint i writes:
        this endpoint is 0, others follow. Layer events fire once every sender's part of
        a layer is in; the request ends once all did, or at the first failure (the other
        parts aborted first). A Layout.from_geometry layout."""
        eps = [self] + list(others)
        if len(ranges) != len(eps):
            raise InvalidError(f"recv_fanin: {len(ranges)} ranges for {len(eps)} endpoints",
                               status=_abi.KVW_ERR_INVALID)
        if any(e.ctx is not self.ctx for e in eps):
            raise InvalidError("recv_fanin: every endpoint must belong to this context",
                               status=_abi.KVW_ERR_INVALID)
        p, n, _keep = _u32_blocks(blocks)
        hv = (C.c_void_p * len(eps))(*[e.handle for e in eps])
        rv = (_abi.kvw_seq_range * len(eps))(*[_seq_range(r.get("tokens"), r.get("heads"))
                                              for r in ranges])
        us = 0 if timeout is None else max(1, int(timeout * 1e6))
        h = C.c_void_p()
        self.ctx._st.drain()
        st = _L().kvw_recv_seq_fanin(C.cast(hv, _abi._P(_abi.handle)), len(eps), int(seq_id),
                                     layout.handle, p, n, rv, us, C.byref(h))
        self.ctx._check(st, f"kvw_recv_seq_fanin(seq {seq_id}, {len(eps)} senders)")
        req = Request._new(self, h.value, int(seq_id), False, layout, n, timeout)
        for e in eps[1:]:
            e._reqs.add(req)
        return req

    def send(self, seq_id: int, layout: Layout, blocks: Any, first_layer: int = 0,
             end_layer: int | None = None, *, last: bool | None = None,
             timeout: float | None = None, tokens: tuple[int, int] | None = None
             ) -> "Request":
        """kvw_send_seq(): send layers [first_layer, end_layer) of these blocks.

        Call once per layer or chunk as they are produced; the first call makes the
        Request, later calls for the same seq_id return the same one. last defaults
        to end_layer == layout.n_layers (KVW_SEND_LAST). timeout sets the request's
        deadline from now (kvw_req_set_timeout). tokens=(t0, t1): the tokens this
        side's block table holds (kvw_send_seq_range; a Layout.from_geometry layout)."""
        end = layout.n_layers if end_layer is None else int(end_layer)
        if last is None:
            last = end == layout.n_layers
        p, n, _keep = _u32_blocks(blocks)
        h = C.c_void_p()
        self.ctx._st.drain()
        flags = _abi.KVW_SEND_LAST if last else 0
        if tokens is not None:
            rng = _seq_range(tokens, None)
            st = _L().kvw_send_seq_range(self.handle, int(seq_id), layout.handle, p, n,
                                         C.byref(rng), int(first_layer), end, flags, C.byref(h))
        else:
            st = _L().kvw_send_seq(self.handle, int(seq_id), layout.handle, p, n,
                                   int(first_layer), end, flags, C.byref(h))
        self.ctx._check(st, f"kvw_send_seq(seq {seq_id}, layers {first_layer}..{end})")
        req = self.ctx._by_ptr.get(h.value)
        if req is not None and req._h == h.value and req.endpoint is self:
            if timeout is not None:
                req.set_timeout(timeout)
            return req
        req = Request._new(self, h.value, int(seq_id), True, layout, n, None)
        if timeout is not None:
            req.set_timeout(timeout)
        return req

    def close(self) -> None:
        """kvw_ep_close(): fails every running request of this endpoint with ABORTED
        (their Request objects stay valid: status, wait(), info() keep working)."""
        if self._h is None or self.ctx.closed:
            self._mark_closed()
            return
        reqs = list(self._reqs)
        _L().kvw_ep_close(self._h)
        self.ctx._st.eps.discard(self._h)
        self._mark_closed()
        for r in reqs:
            r._orphaned()

    def _mark_closed(self) -> None:
        self._h = None
        self._fin.detach()

    def __enter__(self) -> "Endpoint":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<kvwire.Endpoint {self.uri} status {self.status}>"


# ------------------------------------------------------------ request
class Request:
    """A sequence in flight (kvw_req): a grant (recv) or a send.

    Final status: `status` (0 ok, 1 running, else the kvw_status), `done`,
    `ok`, `exception()`; `wait()` drives progress and raises the failure as its
    KvwireError subclass; `layers_done` grows with each KVW_EV_LAYER."""

    def __init__(self, *_a: Any, **_k: Any):
        raise TypeError("use Endpoint.send() or Endpoint.recv()")

    @classmethod
    def _new(cls, ep: Endpoint, h: int, seq_id: int, is_send: bool, layout: Layout,
             n_blocks: int, timeout: float | None) -> "Request":
        self = object.__new__(cls)
        ctx = ep.ctx
        self.ctx = ctx
        self.endpoint = ep
        self.layout = layout
        self.seq_id = seq_id
        self.is_send = is_send
        self.n_blocks = n_blocks
        self.n_layers = layout.n_layers
        self.bytes_total = layout.seq_bytes(n_blocks)
        self._h: int | None = h
        self._id = ctx._new_id()
        self._final: int | None = None
        self._sentence = ""
        self._layers: set[int] = set()
        self._layer_cbs: list[Callable[["Request", int], None]] = []
        self._done_cbs: list[Callable[["Request"], None]] = []
        self._waiters: list[Any] = []       # asyncio futures
        self._layer_waiters: dict[int, list[Any]] = {}
        self.t_created = time.monotonic()
        self.deadline: float | None = None
        if timeout is not None:
            self.deadline = self.t_created + timeout
        elif not is_send:
            self.deadline = self.t_created + ctx.timeout_s
        _L().kvw_req_set_user_data(h, C.c_void_p(self._id))
        ctx._st.reqs.add(h)
        ctx._live[self._id] = self
        ctx._all[self._id] = self
        ctx._by_ptr[h] = self
        ep._reqs.add(self)
        layout._users.add(self)
        self._fin = weakref.finalize(self, ctx._st.bury, "req", h)
        if ctx._aio is not None:
            ctx._aio.kick()
        return self

    # ---- state
    @property
    def status(self) -> int:
        if self._final is not None:
            return self._final
        if self._h is None or self.ctx.closed:
            return self._final if self._final is not None else _abi.KVW_ERR_CLOSED
        st = _L().kvw_req_status(self._h)
        if st != _abi.KVW_INPROGRESS:
            self._on_final(st)
        return st

    @property
    def done(self) -> bool:
        return self.status != _abi.KVW_INPROGRESS

    @property
    def ok(self) -> bool:
        return self.status == _abi.KVW_OK

    @property
    def layers_done(self) -> frozenset[int]:
        return frozenset(self._layers)

    def exception(self) -> KvwireError | None:
        st = self.status
        if st in (_abi.KVW_OK, _abi.KVW_INPROGRESS):
            return None
        return make_error(st, self._what(), self._sentence, strerror(st))

    def _what(self) -> str:
        return (f"{'send' if self.is_send else 'recv'} of sequence {self.seq_id} "
                f"on {self.endpoint.uri}")

    def info(self) -> RequestInfo:
        i = _abi.sized(_abi.kvw_req_info)
        self.ctx._check(_L().kvw_req_query(self._handle(), C.byref(i)), "kvw_req_query")
        return RequestInfo(i.seq_id, bool(i.is_send), i.status, i.bytes, i.bytes_total,
                           i.n_layers, i.layers_done, i.t_posted, i.t_matched, i.t_first_byte,
                           i.t_last_byte, i.t_completed)

    def _handle(self) -> int:
        if self._h is None:
            raise ClosedError(f"{self._what()}: request already freed",
                              status=_abi.KVW_ERR_CLOSED)
        self.ctx.handle
        return self._h

    # ---- events
    def _on_layer(self, layer: int) -> None:
        if layer in self._layers:
            return
        self._layers.add(layer)
        for cb in list(self._layer_cbs):
            cb(self, layer)
        for fut in self._layer_waiters.pop(layer, []):
            if not fut.done():
                fut.set_result(layer)

    def _on_final(self, st: int) -> None:
        if self._final is not None:
            return
        if st < 0 and not self.ctx.closed:
            self._sentence = self._own_sentence(self.ctx.last_error)
        if st == _abi.KVW_OK:
            self._layers.update(range(self.n_layers))
        self._final = st
        self.ctx._live.pop(self._id, None)
        for cb in list(self._done_cbs):
            cb(self)
        self._wake()

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(self._final)
        self._waiters.clear()
        for futs in self._layer_waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)
        self._layer_waiters.clear()

    def _own_sentence(self, sentence: str) -> str:
        """The context's sentence, unless it is visibly about another sequence (two
        requests that fail in one poll share the context's one sentence)."""
        import re
        m = re.search(r"\bsequence (\d+)", sentence)
        if m and int(m.group(1)) != self.seq_id:
            return ""
        return sentence

    def _orphaned(self) -> None:
        """Its endpoint was closed: read the final status (ABORTED) at once."""
        if self._h is not None and self._final is None:
            st = _L().kvw_req_status(self._h)
            if st != _abi.KVW_INPROGRESS:
                self._sentence = self._sentence or \
                    f"endpoint {self.endpoint.uri} was closed by this process"
                self._on_final(st)

    def _closing(self) -> None:
        if self._final is None:
            self._sentence = "the context was closed"
            self._on_final(_abi.KVW_ERR_ABORTED)

    def _mark_freed(self) -> None:
        if self._h is not None:
            self.ctx._by_ptr.pop(self._h, None)
        self._h = None
        self._fin.detach()

    def add_done_callback(self, fn: Callable[["Request"], None]) -> None:
        """fn(request) when it finishes (from inside poll()/wait()); at once if done."""
        if self.done:
            fn(self)
        else:
            self._done_cbs.append(fn)

    def add_layer_callback(self, fn: Callable[["Request", int], None]) -> None:
        """fn(request, layer) for each KVW_EV_LAYER (layer landed at the receiver)."""
        self._layer_cbs.append(fn)

    # ---- blocking API
    def wait(self, timeout: float | None = None) -> "Request":
        """Drives progress until the request finishes; returns it on success, raises
        its KvwireError (TimedOutError, PeerDeadError, AbortedError, ...) on failure,
        WaitTimeout when `timeout` seconds passed first (the request goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(f"{self._what()}: still running after {timeout} s")
            self.ctx.poll(_SLICE_S if left is None else min(left, _SLICE_S))
        exc = self.exception()
        if exc is not None:
            raise exc
        return self

    def wait_layer(self, layer: int, timeout: float | None = None) -> None:
        """Until `layer` has landed (KVW_EV_LAYER); raises like wait() if the request
        fails first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while layer not in self._layers:
            if self.done:
                exc = self.exception()
                if exc is not None:
                    raise exc
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(f"{self._what()}: layer {layer} not landed after {timeout} s")
            self.ctx.poll(_SLICE_S if left is None else min(left, _SLICE_S))

    def __await__(self):
        from . import aio
        return aio.wait(self).__await__()

    async def wait_async(self, timeout: float | None = None) -> "Request":
        from . import aio
        return await aio.wait(self, timeout)

    async def wait_layer_async(self, layer: int, timeout: float | None = None) -> None:
        from . import aio
        await aio.wait_layer(self, layer, timeout)

    def abort(self) -> None:
        """kvw_req_abort(): a fence -- when it returns nothing of the request lands any
        more and this side's pages may be reused. No-op on a finished request."""
        if self._h is None or self.ctx.closed:
            return
        self.ctx._check(_L().kvw_req_abort(self._h), f"kvw_req_abort({self._what()})")
        st = _L().kvw_req_status(self._h)
        if st != _abi.KVW_INPROGRESS:
            self._on_final(st)

    def set_timeout(self, timeout: float) -> None:
        """kvw_req_set_timeout(): the request's deadline becomes now + timeout seconds."""
        self.ctx._check(_L().kvw_req_set_timeout(self._handle(), max(1, int(timeout * 1e6))),
                        f"kvw_req_set_timeout({self._what()})")
        self.deadline = time.monotonic() + timeout
        if self.ctx._aio is not None:
            self.ctx._aio.kick()

    def free(self) -> None:
        """kvw_req_free(). BusyError while running (abort or wait first)."""
        if self._h is None:
            return
        if not self.ctx.closed:
            self.ctx._check(_L().kvw_req_free(self._h), f"kvw_req_free({self._what()})")
            self.ctx._st.reqs.discard(self._h)
        self._mark_freed()

    close = free

    def __enter__(self) -> "Request":
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.done:
            self.abort()
        self.free()

    def __repr__(self) -> str:
        st = self.status
        s = "running" if st == _abi.KVW_INPROGRESS else _abi.STATUS_NAMES.get(st, str(st))
        return (f"<kvwire.Request {'send' if self.is_send else 'recv'} seq {self.seq_id} {s} "
                f"{len(self._layers)}/{self.n_layers} layers>")
