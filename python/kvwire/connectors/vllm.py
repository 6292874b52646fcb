# SPDX-License-Identifier: MIT
"""A vLLM V1 KV connector over kvwire: push-based and layer by layer.

    vllm serve MODEL --kv-transfer-config '{"kv_connector": "KVWireConnector",
        "kv_connector_module_path": "kvwire.connectors.vllm", "kv_role": "kv_both",
        "kv_connector_extra_config": {"listen": "tcp://0.0.0.0:7471"}}'

How a request moves (docs/python.md has the whole story):
- The proxy gives both engines the same kv_transfer_params["transfer_id"]
  (default: the request id). Prefill: {"do_remote_decode": true}. Decode:
  {"do_remote_prefill": true, "remote_uri": <the prefill's kvwire URI>} --
  either built by the proxy up front (both requests sent at once: the KV
  streams while the prefill computes) or taken from the prefill's response
  (request_finished returns them, as NixlConnector's do).
- Decode (scheduler): get_num_new_matched_tokens answers (prompt tokens, True):
  the request waits for remote KV; update_state_after_alloc records its
  blocks; build_connector_meta hands them to the worker. Decode (worker):
  start_load_kv connects to the prefill (once per engine), grants exactly
  those blocks (kvw_recv_seq, one per cache group) plus an aux page, and
  sends a "pull" message naming the transfer. get_finished reports the
  request in finished_recving when every layer and the aux page landed.
- Prefill (worker): save_kv_layer(layer) posts that layer's K and V pages of
  every request finishing its prompt in this step (kvw_send_seq), as soon as
  the layer is computed: the transfer of layer L runs while layer L+1 is
  computed. request_finished (scheduler) returns (True, params): the blocks
  stay allocated until get_finished reports the request in finished_sending,
  i.e. until the decode confirmed every byte landed, or the transfer failed
  or was aborted (kvw_req_abort is a fence: nothing lands after it).
- The aux page carries the prefill's sampled token ids, so the decode
  continues from the prefill's first token instead of recomputing the last
  prompt token (get_remote_output(); a kvwire extension).
- A request finished or aborted while its transfer runs: the connector
  aborts the transfer (a fence) before the request's blocks are reported
  freeable, on both sides: no byte can land in a block that was freed.

Extra config keys (kv_connector_extra_config): listen (kvwire URI to listen
on; default tcp://0.0.0.0:0; "none" for a decode-only engine), advertise (URI put in kv_transfer_params;
default: the bound listener URI), layerwise (true: stream from save_kv_layer;
false: send the whole cache in wait_for_save; a request's
kv_transfer_params["layerwise"] overrides it), staging ("auto", "always",
"never"), load ("async": vLLM's WAITING_FOR_REMOTE_KVS; "layerwise": the
step that loads waits per layer in wait_for_layer_load), transfer_timeout_s
(deadline of each transfer, default 30), kvwire (dict of kvwire config
options, e.g. {"dpdk_eal": "...", "rails": 2}), kv_layout ("NHD": vLLM's
FlashAttention [2, num_blocks, block_size, num_kv_heads, head_size], the
default, or $VLLM_KV_CACHE_LAYOUT; "HND": [2, num_blocks, num_kv_heads,
block_size, head_size], head-major as NIXL's), geometry (true, the default:
each layer is described by a kvwire Geometry and a request moves as the
token range [0, prompt tokens), so the prefill and the decode may use
different block sizes and head orders -- the library maps every token and
head; false: the page layouts of before, both sides then need the same
block size and layout).

Heterogeneous engines: the prefill puts its block size and layout in the
kv_transfer_params it returns (remote_block_size, remote_kv_layout) and the
decode names its own in the "pull" message; each grant and send carries the
tokens it covers. Engines that cannot meet -- geometry false on one side and
another block size or layout, or geometry true on one side and false on the
other -- fail the request with a sentence: the decode before granting
anything when the kv_transfer_params tell it (and it tells the prefill, which
frees the blocks at once), else the prefill refuses the pull.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import select
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

import kvwire
from kvwire import _abi

from ._agent import (Agent, Buffer, BufferSet, GeomSpec, Peer, Transfer, block_ids_of, group_seq,
                     refuse, seq_of)
from ._vllm_base import (CacheConfig, KVTransferConfig, RequestStatus,  # noqa: F401 (re-export)
                         VllmConfig)

try:  # vLLM's own base class when vLLM is installed
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (  # type: ignore
        KVConnectorBase_V1, KVConnectorMetadata, KVConnectorRole)
    HAVE_VLLM = True
except Exception:  # noqa: BLE001 - not installable here: the same shapes, locally
    from ._vllm_base import KVConnectorBase_V1, KVConnectorMetadata, KVConnectorRole
    HAVE_VLLM = False

log = logging.getLogger("kvwire.connectors.vllm")

AUX_BYTES = 4096
AUX_SLOTS = 256
_WORKER_URIS: dict[str, str] = {}   # engine id -> bound URI (scheduler and worker in one process)


# ------------------------------------------------------------------ metadata
@dataclass
class RecvSpec:
    req_id: str
    transfer_id: str
    block_ids: list[int]
    remote_engine_id: Optional[str]
    remote_uri: str
    num_tokens: int
    layerwise: bool = False
    remote_block_size: Optional[int] = None     # the prefill's, from kv_transfer_params
    remote_kv_layout: Optional[str] = None
    remote_geometry: Optional[bool] = None
    num_cached: int = 0       # tokens [0, num_cached) are in local blocks (prefix cache hit)


@dataclass
class SendSpec:
    req_id: str
    transfer_id: str
    block_ids: list[int]
    num_tokens: int
    layerwise: bool = True


@dataclass
class KVWireConnectorMetadata(KVConnectorMetadata):
    reqs_to_recv: dict[str, RecvSpec] = field(default_factory=dict)
    reqs_to_send: dict[str, SendSpec] = field(default_factory=dict)
    reqs_to_finish: dict[str, list[int]] = field(default_factory=dict)  # id -> output token ids
    reqs_to_abort: set[str] = field(default_factory=set)
    reqs_to_cancel: dict[str, str] = field(default_factory=dict)   # id -> transfer id (never sent)


def _params(request: Any) -> dict:
    p = getattr(request, "kv_transfer_params", None)
    return p if isinstance(p, dict) else {}


def _aborted(request: Any) -> bool:
    st = getattr(request, "status", None)
    return st is not None and "ABORT" in str(getattr(st, "name", st)).upper()


def _prompt_len(request: Any) -> int:
    n = getattr(request, "num_prompt_tokens", None)
    if n is None:
        n = len(getattr(request, "prompt_token_ids", []) or [])
    return int(n)


def _locked(fn):
    """Worker-side entry points hold the worker's lock: its progress thread and
    the engine's thread never use the kvwire context at the same time."""
    @functools.wraps(fn)
    def wrapper(self, *a, **k):
        w = self._work()
        with w.lock:
            return fn(self, *a, **k)
    return wrapper


# ------------------------------------------------------------------ connector
class KVWireConnector(KVConnectorBase_V1):
    """vLLM KVConnectorBase_V1 over kvwire (see the module doc)."""

    def __init__(self, vllm_config: Any, role: Any, kv_cache_config: Any = None):
        try:
            super().__init__(vllm_config, role, kv_cache_config)  # type: ignore[call-arg]
        except TypeError:
            super().__init__(vllm_config, role)
        self._vllm_config_ = vllm_config
        ktc = vllm_config.kv_transfer_config
        self.kv_transfer_config = ktc
        extra = dict(getattr(ktc, "kv_connector_extra_config", None) or {})
        self.extra = extra
        self.engine_id = str(getattr(ktc, "engine_id", None) or extra.get("engine_id") or
                             uuid.uuid4().hex[:12])
        self.block_size = int(vllm_config.cache_config.block_size)
        self.kv_layout = str(extra.get("kv_layout") or os.environ.get("VLLM_KV_CACHE_LAYOUT")
                             or "NHD").upper()
        if self.kv_layout not in ("NHD", "HND"):
            raise kvwire.InvalidError(
                f"kv_layout {self.kv_layout!r}: kvwire's vLLM connector knows NHD ([2, num_blocks, "
                f"block_size, num_kv_heads, head_size]) and HND ([2, num_blocks, num_kv_heads, "
                f"block_size, head_size])", status=_abi.KVW_ERR_INVALID)
        self.use_geometry = bool(extra.get("geometry", True))
        self.kv_role = getattr(ktc, "kv_role", "kv_both")
        self.layerwise = bool(extra.get("layerwise", True))
        self.load_mode = str(extra.get("load", "async"))
        self.transfer_timeout_s = float(extra.get("transfer_timeout_s", 30.0))
        self.is_scheduler = getattr(role, "name", str(role)).upper().endswith("SCHEDULER")
        self._s = _SchedulerSide(self) if self.is_scheduler else None
        self._w = None if self.is_scheduler else _WorkerSide(self)

    # ---------------------------------------------------------- scheduler side
    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int
                                   ) -> tuple[Optional[int], bool]:
        return self._sched().get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        self._sched().update_state_after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output: Any) -> KVWireConnectorMetadata:
        return self._sched().build_connector_meta(scheduler_output)

    def update_connector_output(self, connector_output: Any) -> None:
        self._sched().update_connector_output(connector_output)

    def request_finished(self, request: Any, block_ids: Any) -> tuple[bool, Optional[dict]]:
        return self._sched().request_finished(request, block_ids)

    # ---------------------------------------------------------- worker side
    @_locked
    def register_kv_caches(self, kv_caches: dict[str, Any]) -> None:
        self._work().register_kv_caches(kv_caches)

    @_locked
    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        self._work().start_load_kv(self._get_connector_metadata())

    @_locked
    def wait_for_layer_load(self, layer_name: str) -> None:
        self._work().wait_for_layer_load(layer_name)

    @_locked
    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any,
                      **kwargs: Any) -> None:
        self._work().save_kv_layer(self._get_connector_metadata(), layer_name)

    @_locked
    def wait_for_save(self) -> None:
        self._work().wait_for_save(self._get_connector_metadata())

    @_locked
    def get_finished(self, finished_req_ids: set[str]
                     ) -> tuple[Optional[set[str]], Optional[set[str]]]:
        return self._work().get_finished(finished_req_ids)

    @_locked
    def get_block_ids_with_load_errors(self) -> set[int]:
        return self._work().take_failed_blocks()

    def shutdown(self) -> None:
        if self._w is not None:
            self._w.close()     # stops the progress thread, then frees under the lock

    # ---------------------------------------------------------- kvwire extensions
    @_locked
    def alloc_kv_caches(self, layer_names: list[str], num_blocks: int, num_kv_heads: int,
                        head_size: int, dtype: Any) -> dict[str, Any]:
        """CPU KV caches in vLLM's per-layer layout [2, num_blocks, block_size,
        num_kv_heads, head_size] (kv_layout "HND": [2, num_blocks, num_kv_heads,
        block_size, head_size]), allocated by kvwire in one region (zero copy on
        every driver, shm included). Pass the result to register_kv_caches()."""
        return self._work().alloc_kv_caches(layer_names, num_blocks, num_kv_heads, head_size, dtype)

    @_locked
    def get_remote_output(self, req_id: str) -> Optional[dict]:
        """Decode side: what the prefill sent with the KV ({"first_token_ids": [...]})."""
        return self._work().remote_outputs.pop(req_id, None)

    @_locked
    def get_load_error(self, req_id: str) -> Optional[kvwire.KvwireError]:
        """Decode side: why a request reported in finished_recving did not load."""
        return self._work().load_errors.pop(req_id, None)

    @_locked
    def connect(self, uri: str, engine_id: Optional[str] = None) -> None:
        """Dials a prefill engine ahead of its first request (the handshake then
        runs while both engines are idle, not while one computes a prompt)."""
        self._work().agent.connect(uri, engine_id)
        self._work().progress(0)

    @_locked
    def peers_ready(self) -> list[str]:
        """Engine ids (or URIs) of the peers whose endpoint is up."""
        a = self._work().agent
        return sorted({p.engine_id or p.uri or "?" for p in
                       list(a.peers.values()) + list(a._by_uri.values()) if p.ready})

    @_locked
    def progress(self, timeout: float = 0.0) -> None:
        """Drives the transfers between engine steps (the engine calls it while idle)."""
        if self._w is not None:
            self._w.progress(timeout)

    @property
    def uri(self) -> Optional[str]:
        return self._w.agent.uri if self._w is not None else _WORKER_URIS.get(self.engine_id)

    @property
    def agent(self) -> Agent:
        return self._work().agent

    def busy(self) -> bool:
        """True while transfers are in flight (the engine keeps stepping)."""
        if self._w is None:
            return False
        with self._w.lock:
            return self._w.busy()

    def _sched(self) -> "_SchedulerSide":
        if self._s is None:
            raise RuntimeError("a scheduler-side call on the worker-role connector")
        return self._s

    def _work(self) -> "_WorkerSide":
        if self._w is None:
            raise RuntimeError("a worker-side call on the scheduler-role connector")
        return self._w


# ------------------------------------------------------------------ scheduler
class _SchedulerSide:
    def __init__(self, c: KVWireConnector):
        self.c = c
        self._recv: dict[str, RecvSpec] = {}
        self._sending: dict[str, Any] = {}          # prefill requests to push, by id
        self._finish: dict[str, list[int]] = {}
        self._abort: set[str] = set()
        self._loading: set[str] = set()             # decode: grants in flight
        self._send_blocks: dict[str, list[int]] = {}  # prefill: the request's blocks so far
        self._cancel: dict[str, str] = {}
        self._local_hit: dict[str, int] = {}        # decode: prefix tokens cached here

    def _n_blocks(self, request: Any) -> int:
        return math.ceil(_prompt_len(request) / self.c.block_size)

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int
                                   ) -> tuple[Optional[int], bool]:
        p = _params(request)
        if p.get("do_remote_prefill"):
            n = _prompt_len(request)
            self._local_hit[request.request_id] = int(num_computed_tokens)
            if self.c.load_mode == "layerwise":
                count = n - 1 - num_computed_tokens      # this step computes the last token
                return (count, False) if count > 0 else (0, False)
            count = n - num_computed_tokens
            return (count, True) if count > 0 else (0, False)
        return 0, False

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        p = _params(request)
        rid = request.request_id
        if p.get("do_remote_prefill") and num_external_tokens > 0:
            ids = block_ids_of(blocks)[:self._n_blocks(request)]
            uri = p.get("remote_uri") or _uri_of(p)
            if not uri:
                raise kvwire.InvalidError(
                    f"request {rid}: kv_transfer_params has do_remote_prefill but no remote_uri "
                    f"(or remote_host/remote_port) of the prefill engine",
                    status=_abi.KVW_ERR_INVALID)
            self._recv[rid] = RecvSpec(rid, str(p.get("transfer_id") or p.get("remote_request_id")
                                                or rid), ids, p.get("remote_engine_id"), uri,
                                       _prompt_len(request), self.c.load_mode == "layerwise",
                                       p.get("remote_block_size"), p.get("remote_kv_layout"),
                                       p.get("remote_kv_geometry"),
                                       self._local_hit.pop(rid, 0))
            p["do_remote_prefill"] = False   # as NixlConnector: load once
            self._loading.add(rid)
        elif p.get("do_remote_decode"):
            self._sending[rid] = request
            self._send_blocks[rid] = block_ids_of(blocks)

    def build_connector_meta(self, scheduler_output: Any) -> KVWireConnectorMetadata:
        meta = KVWireConnectorMetadata(reqs_to_recv=self._recv, reqs_to_finish=self._finish,
                                       reqs_to_abort=self._abort, reqs_to_cancel=self._cancel)
        sched = getattr(scheduler_output, "num_scheduled_tokens", None) or {}
        # blocks vLLM gave each request this step: new requests list all of theirs,
        # running ones (later chunks of a chunked prefill) the new ones
        for nr in getattr(scheduler_output, "scheduled_new_reqs", None) or ():
            if nr.req_id in self._sending:
                self._send_blocks[nr.req_id] = block_ids_of(nr.block_ids)
        cached = getattr(scheduler_output, "scheduled_cached_reqs", None)
        if cached is not None and getattr(cached, "req_ids", None):
            for rid, new in zip(cached.req_ids, cached.new_block_ids or ()):
                if rid in self._sending and new:
                    self._send_blocks.setdefault(rid, []).extend(block_ids_of(new))
        for rid, req in list(self._sending.items()):
            if sched and rid not in sched:
                continue
            done_after = int(getattr(req, "num_computed_tokens", 0)) + int(sched.get(rid, 0))
            if sched and done_after < _prompt_len(req):
                continue                     # an earlier chunk of a chunked prefill
            p = _params(req)
            ids = self._send_blocks.pop(rid, [])[:self._n_blocks(req)]
            meta.reqs_to_send[rid] = SendSpec(rid, str(p.get("transfer_id") or rid), ids,
                                              _prompt_len(req),
                                              bool(p.get("layerwise", self.c.layerwise)))
            del self._sending[rid]
        self._recv, self._finish, self._abort, self._cancel = {}, {}, set(), {}
        return meta

    def update_connector_output(self, out: Any) -> None:
        for rid in (getattr(out, "finished_recving", None) or ()):
            self._loading.discard(rid)

    def request_finished(self, request: Any, block_ids: Any) -> tuple[bool, Optional[dict]]:
        rid = request.request_id
        p = _params(request)
        self._local_hit.pop(rid, None)
        never_sent = self._sending.pop(rid, None) is not None
        self._send_blocks.pop(rid, None)
        if p.get("do_remote_decode"):
            if never_sent and _aborted(request):
                # aborted before its prompt was computed: nothing moved, the blocks go
                # now; the worker tells a decode that granted it (it fails at once)
                self._cancel[rid] = str(p.get("transfer_id") or rid)
                return False, None
            if _aborted(request):
                self._abort.add(rid)       # the worker fences the send, then frees
                return True, None
            out = [int(t) for t in (getattr(request, "output_token_ids", None) or [])]
            self._finish[rid] = out
            n = _prompt_len(request)
            ids = block_ids_of(block_ids)[:math.ceil(n / self.c.block_size)]
            uri = self.c.extra.get("advertise") or _WORKER_URIS.get(self.c.engine_id) or \
                self.c.extra.get("listen")
            host, port = _host_port(uri)
            return True, {
                "do_remote_prefill": True, "do_remote_decode": False,
                "remote_engine_id": self.c.engine_id, "remote_uri": uri,
                "remote_host": host, "remote_port": port, "remote_block_ids": ids,
                "remote_request_id": rid, "transfer_id": str(p.get("transfer_id") or rid),
                "num_tokens": n, "first_token_ids": out,
                # what a decode with another geometry checks (NixlConnector's handshake
                # carries the same: block size and KV cache layout)
                "remote_block_size": self.c.block_size, "remote_kv_layout": self.c.kv_layout,
                "remote_kv_geometry": self.c.use_geometry,
            }
        if rid in self._loading:
            self._loading.discard(rid)
            self._abort.add(rid)           # grants still posted: fence them before freeing
            return True, None
        return False, None


def _uri_of(p: dict) -> Optional[str]:
    if p.get("remote_host") and p.get("remote_port"):
        return f"tcp://{p['remote_host']}:{p['remote_port']}"
    return None


def _host_port(uri: Optional[str]) -> tuple[Optional[str], Optional[int]]:
    if not uri or "://" not in uri:
        return None, None
    rest = uri.split("://", 1)[1].split("?", 1)[0]
    if rest.startswith("/") or ":" not in rest:
        return None, None
    h, _, port = rest.rpartition(":")
    try:
        return h, int(port)
    except ValueError:
        return h, None


# ------------------------------------------------------------------ worker
@dataclass
class _Send:
    t: Transfer
    spec: SendSpec
    ready: list[bool]                 # per buffer: pages are in place (copied to staging)
    sent: list[bool]
    copies: list[tuple[int, Any]] = field(default_factory=list)   # (buffer, copy event)
    finished_by_scheduler: bool = False
    first_tokens: Optional[list[int]] = None
    aux_slot: Optional[int] = None
    aborted: bool = False
    t_finished: Optional[float] = None
    release: bool = False             # may post: layerwise at once, else after wait_for_save


@dataclass
class _Recv:
    t: Transfer
    spec: RecvSpec
    posted: bool = False
    aux_slot: Optional[int] = None
    copies: list[Any] = field(default_factory=list)
    copied: set[int] = field(default_factory=set)
    aborted: bool = False


class _WorkerSide:
    def __init__(self, c: KVWireConnector):
        self.c = c
        extra = c.extra
        listen = extra.get("listen", "tcp://0.0.0.0:0")
        if listen in (None, "", "none"):
            listen = None           # a decode-only engine dials out and needs no listener
        kvcfg = dict(extra.get("kvwire") or {})
        # a prefill engine busy with a long prompt answers a handshake only between
        # layers: give connections as long as a transfer
        kvcfg.setdefault("connect_timeout_ms", int(c.transfer_timeout_s * 1000))
        self.agent = Agent(c.engine_id, listen, kvcfg)
        self.advertise = extra.get("advertise") or self.agent.uri
        if self.advertise:
            _WORKER_URIS[c.engine_id] = self.advertise
        self.driver = str(extra.get("driver") or (listen or "tcp://").split("://", 1)[0])
        self.agent.on_message = self._on_message
        self.staging = str(extra.get("staging", "auto"))
        self.kv: Optional[BufferSet] = None
        self.layer_names: list[str] = []
        self._known: list[kvwire.Memory] = []
        self.aux_mem = self.agent.ctx.alloc(AUX_SLOTS * AUX_BYTES)
        self.aux_lay = kvwire.Layout(self.aux_mem, 1, AUX_SLOTS, AUX_BYTES)
        self.aux_buf = self.aux_mem.numpy()
        self._aux_free = list(range(AUX_SLOTS))
        self.sends: dict[str, _Send] = {}
        self.recvs: dict[str, _Recv] = {}
        self._pulls: dict[int, Peer] = {}            # seq -> peer that granted it
        self._pull_n: dict[int, int] = {}            # seq -> blocks it granted
        self._canceled: set[int] = set()             # never sent: refuse a later pull
        self._fail_later: dict[int, kvwire.KvwireError] = {}  # seq -> why its send must fail
        self._freeable: set[str] = set()             # send side: report in finished_sending
        self.remote_outputs: dict[str, dict] = {}
        self.load_errors: dict[str, kvwire.KvwireError] = {}
        self._failed_blocks: set[int] = set()
        self.stats: dict[str, dict] = {}             # per request timeline (tests, TTFT split)
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if bool(extra.get("progress_thread", True)):
            self._thread = threading.Thread(target=self._progress_loop, daemon=True,
                                            name=f"kvwire-{c.engine_id}")
            self._thread.start()

    def _progress_loop(self) -> None:
        """Moves the transfers while the engine's thread computes (torch releases the
        GIL in its kernels): a layer posted by save_kv_layer goes on moving -- on dpdk,
        which only moves when progressed, and on tcp/shm past the socket buffers --
        and grants, acks and keepalives are answered during a long prefill."""
        busy_poll = self.driver == "dpdk" or bool((self.c.extra.get("kvwire") or {}).get("fault"))
        while not self._stop.is_set():
            with self.lock:
                if self._stop.is_set():
                    break
                try:
                    self.progress(0)
                except kvwire.ClosedError:
                    break
                active = self.busy()
                fd = self.agent.ctx.fd
            if active and busy_poll:
                time.sleep(0.0002)
            else:
                try:
                    select.select([fd], [], [], 0.001 if active else 0.02)
                except (OSError, ValueError):
                    time.sleep(0.001)

    # ---- caches
    def alloc_kv_caches(self, names: list[str], num_blocks: int, heads: int, head_size: int,
                        dtype: Any) -> dict[str, Any]:
        import torch
        es = torch.empty((), dtype=dtype).element_size()
        per = 2 * num_blocks * self.c.block_size * heads * head_size * es
        mem = self.agent.ctx.alloc(per * len(names))
        self._known.append(mem)
        out = {}
        bs = self.c.block_size
        shape = (2, num_blocks, bs, heads, head_size) if self.c.kv_layout == "NHD" else \
            (2, num_blocks, heads, bs, head_size)
        for i, n in enumerate(names):
            out[n] = mem.torch(dtype, shape, offset=i * per)
            out[n].zero_()
        return out

    def register_kv_caches(self, kv_caches: dict[str, Any]) -> None:
        self.layer_names = list(kv_caches)
        bufs = []
        geom = None
        for name, t in kv_caches.items():
            if t.dim() != 5 or t.shape[0] != 2:
                raise kvwire.InvalidError(
                    f"KV cache {name}: shape {tuple(t.shape)}; kvwire expects vLLM's per-layer "
                    f"layout [2, num_blocks, block_size, num_kv_heads, head_size]",
                    status=_abi.KVW_ERR_INVALID)
            geom = geom or self._geom_of(name, t)
            es = t.element_size()
            for kv in (0, 1):
                half = t[kv]
                if not half.is_contiguous():
                    raise kvwire.InvalidError(f"KV cache {name}[{kv}] is not contiguous",
                                              status=_abi.KVW_ERR_INVALID)
                item = half[0].numel() * es
                bufs.append(Buffer(half.data_ptr(), half.shape[0], item, half.stride(0) * es, half))
        sending = self.c.kv_role in ("kv_producer", "kv_both")
        self.kv = BufferSet(self.agent.ctx, bufs, sending=sending, driver=self.driver,
                            staging=self.staging, known=self._known,
                            units=[[2 * i, 2 * i + 1] for i in range(len(self.layer_names))],
                            geom=geom if self.c.use_geometry else None)
        if self.kv.staged:
            log.info("kvwire: KV caches staged through host memory (%s)",
                     "CUDA" if self.kv.stager.cuda else "shm sending foreign memory / forced")

    def _geom_of(self, name: str, t: Any) -> GeomSpec:
        """The kvwire geometry of one layer's [2, ...] cache tensor (NHD or HND)."""
        c = self.c
        bs, heads = (t.shape[2], t.shape[3]) if c.kv_layout == "NHD" else (t.shape[3], t.shape[2])
        if bs != c.block_size:
            raise kvwire.InvalidError(
                f"KV cache {name}: shape {tuple(t.shape)} read as {c.kv_layout} has blocks of {bs} "
                f"tokens but cache_config.block_size is {c.block_size}: set kv_layout "
                f"(kv_connector_extra_config) to the layout the tensors have",
                status=_abi.KVW_ERR_INVALID)
        return GeomSpec(c.kv_layout.lower(), int(bs), int(t.shape[4]), int(heads),
                        int(t.element_size()))

    def _geometry_refusal(self, spec: RecvSpec) -> Optional[kvwire.KvwireError]:
        """A sentence when the two engines cannot meet: one of them moves pages
        (geometry false) and their block sizes or layouts differ."""
        c = self.c
        mine = (c.block_size, c.kv_layout)
        theirs = (spec.remote_block_size or c.block_size, spec.remote_kv_layout or c.kv_layout)
        pages = not c.use_geometry or spec.remote_geometry is False
        if pages and mine != theirs:
            return kvwire.InvalidError(
                f"request {spec.req_id}: the prefill engine has blocks of {theirs[0]} tokens "
                f"({theirs[1]}) and this decode engine {mine[0]} ({mine[1]}), but "
                f"{'this engine' if not c.use_geometry else 'the prefill'} moves whole pages "
                f"(kv_connector_extra_config geometry false): set geometry true on both, or the "
                f"same block size and kv_layout", status=_abi.KVW_ERR_INVALID)
        if spec.remote_geometry is not None and spec.remote_geometry != c.use_geometry:
            return kvwire.InvalidError(
                f"request {spec.req_id}: the prefill engine has kv_connector_extra_config "
                f"geometry {str(spec.remote_geometry).lower()} and this decode engine "
                f"{str(c.use_geometry).lower()}: a page layout and a geometry do not join; set "
                f"the same on both", status=_abi.KVW_ERR_INVALID)
        return None

    def _tokens(self, n: int, t0: int = 0) -> Optional[tuple[int, int]]:
        """The token range a grant or send covers (geometry layouts only): a decode
        with a local prefix-cache hit grants only the tokens after it."""
        if self.kv is None or self.kv.geom is None:
            return None
        return (int(t0) if 0 < t0 < n else 0, int(n))

    def _remember_failure(self, seq: int, err: kvwire.KvwireError) -> None:
        """A send of seq not made yet fails with err when it is (the last 1024 kept)."""
        self._fail_later[seq] = err
        while len(self._fail_later) > 1024:
            self._fail_later.pop(next(iter(self._fail_later)))

    # ---- messages
    def _on_message(self, peer: Peer, msg: dict) -> None:
        if msg.get("type") == "cancel":      # the decode gave up this transfer
            seq = int(msg["seq"])
            found = False
            for s in self.sends.values():
                if s.t.seq == seq:
                    found = True
                    if not s.aborted:
                        s.aborted = True
                        s.t.abort()
            if not found and msg.get("why"):  # not computed yet: fail it when it is
                self._remember_failure(seq, kvwire.AbortedError(
                    f"the decode engine {msg.get('engine_id')} gave this transfer up: "
                    f"{msg['why']}", status=_abi.KVW_ERR_ABORTED))
            return
        if msg.get("type") != "pull":
            return
        seq = int(msg["seq"])
        n = int(msg.get("n", 1))
        if msg.get("tokens") and self.kv is not None and self.kv.geom is not None:
            n = max(1, math.ceil(int(msg["tokens"][1]) / self.c.block_size))  # in our blocks
        if seq in self._canceled:
            self._refuse(peer, seq, n)
            self._canceled.discard(seq)
            return
        mine = self.kv is not None and self.kv.geom is not None
        if "geometry" in msg and bool(msg["geometry"]) != mine:
            err = kvwire.InvalidError(
                f"decode engine {msg.get('engine_id')} granted transfer {msg.get('transfer_id')} "
                f"with kv_connector_extra_config geometry {bool(msg['geometry'])}, this prefill "
                f"engine has {mine}: a page layout and a geometry do not join; set the same on "
                f"both", status=_abi.KVW_ERR_INVALID)
            log.warning("kvwire: %s (refused)", err)
            self._refuse(peer, seq, n)
            self._remember_failure(seq, err)
            for s in self.sends.values():
                if s.t.seq == seq:
                    s.t.error = err
            return
        self._pulls[seq] = peer
        self._pull_n[seq] = n
        for s in self.sends.values():
            if s.t.seq == seq and s.t.peer is None:
                s.t.peer = peer
                self._flush(s)

    # ---- decode
    def start_load_kv(self, meta: KVWireConnectorMetadata) -> None:
        self._apply_finishing(meta)
        for rid, spec in meta.reqs_to_recv.items():
            t = Transfer(rid, seq_of(spec.transfer_id), list(spec.block_ids))
            r = _Recv(t, spec)
            self.recvs[rid] = r
            self.stats[rid] = {"t_start_load": time.monotonic()}
            t.error = self._geometry_refusal(spec)
            if t.error is not None:
                r.posted = True                 # fails in get_finished, nothing granted
                try:                            # the prefill frees its blocks at once too
                    self.agent.connect(spec.remote_uri, spec.remote_engine_id).send_msg(
                        {"type": "cancel", "seq": t.seq, "engine_id": self.c.engine_id,
                         "why": str(t.error)})
                except kvwire.KvwireError:
                    pass
                continue
            try:
                t.peer = self.agent.connect(spec.remote_uri, spec.remote_engine_id)
            except kvwire.KvwireError as e:     # nobody there: the load fails, reported next
                t.error = e
                r.posted = True
        self.progress(0)

    def _post_recv(self, r: _Recv) -> None:
        t, kv = r.t, self.kv
        assert kv is not None, "register_kv_caches() first"
        p = t.peer
        if p is None or not p.ep.ready:
            return
        blocks = t.blocks
        if kv.staged:
            first = kv.stager.alloc(len(blocks))
            if first is None:
                return                        # staging full: later
            t.staging_first = first
            blocks = list(range(first, first + len(t.blocks)))
        # staged: the copy back moves whole blocks, the cached prefix's too, so the
        # grant covers it (the prefill's same values land there) -- as without geometry
        tokens = self._tokens(r.spec.num_tokens, 0 if kv.staged else r.spec.num_cached)
        try:
            for g, grp in enumerate(kv.groups):
                t.reqs[g] = p.ep.recv(group_seq(t.seq, g), grp.layout, blocks,
                                      self.c.transfer_timeout_s, tokens=tokens)
            r.aux_slot = self._aux_free.pop() if self._aux_free else None
            if r.aux_slot is None:
                raise kvwire.NoMemError(f"all {AUX_SLOTS} aux pages in use",
                                        status=_abi.KVW_ERR_NOMEM)
            t.aux_req = p.ep.recv(group_seq(t.seq, 0, aux=True), self.aux_lay, [r.aux_slot],
                                  self.c.transfer_timeout_s)
        except kvwire.KvwireError as e:
            t.error = e
            t.abort()
        r.posted = True
        p.send_msg({"type": "pull", "seq": t.seq, "transfer_id": r.spec.transfer_id,
                    "engine_id": self.c.engine_id, "n": len(blocks),
                    "tokens": list(tokens or (0, r.spec.num_tokens)),
                    "block_size": self.c.block_size,
                    "kv_layout": self.c.kv_layout, "geometry": kv.geom is not None})

    def wait_for_layer_load(self, layer_name: str) -> None:
        layerwise = [r for r in self.recvs.values() if r.spec.layerwise and not r.aborted]
        if not layerwise or not self.kv:
            self.progress(0)
            return
        li = self.layer_names.index(layer_name)
        need = [self.kv.where(2 * li), self.kv.where(2 * li + 1)]
        deadline = time.monotonic() + self.c.transfer_timeout_s
        for r in layerwise:
            while True:
                if r.t.first_error() is not None:
                    break
                if r.posted and all(pos in r.t.reqs[g].layers_done for g, pos in need if
                                    g in r.t.reqs):
                    break
                if time.monotonic() > deadline:
                    break
                self.progress(0.001)

    # ---- prefill
    def save_kv_layer(self, meta: KVWireConnectorMetadata, layer_name: str) -> None:
        if not meta.reqs_to_send or self.kv is None:
            return
        li = self.layer_names.index(layer_name)
        for rid, spec in meta.reqs_to_send.items():
            s = self._send_of(rid, spec)
            if s is None:
                continue
            for b in (2 * li, 2 * li + 1):
                self._stage(s, b)
            if s.release:
                self._flush(s)
        self.progress(0)

    def _send_of(self, rid: str, spec: SendSpec) -> Optional[_Send]:
        s = self.sends.get(rid)
        if s is not None:
            return s
        kv = self.kv
        t = Transfer(rid, seq_of(spec.transfer_id), list(spec.block_ids))
        nb = len(kv.buffers)
        s = _Send(t, spec, [False] * nb, [False] * nb, release=spec.layerwise)
        if kv.staged:
            first = kv.stager.alloc(len(t.blocks))
            if first is None:
                t.error = kvwire.NoMemError("kvwire staging memory full", status=_abi.KVW_ERR_NOMEM)
            t.staging_first = first
        t.peer = self._pulls.get(t.seq)
        if t.seq in self._fail_later:
            t.error = self._fail_later.pop(t.seq)
        self.sends[rid] = s
        self.stats[rid] = {"t_first_layer": time.monotonic()}
        return s

    def _stage(self, s: _Send, b: int) -> None:
        kv = self.kv
        if kv.staged and s.t.staging_first is not None:
            ev = kv.stager.copy_out(b, s.t.blocks, s.t.staging_first)
            s.copies.append((b, ev))
        else:
            s.ready[b] = True

    def wait_for_save(self, meta: KVWireConnectorMetadata) -> None:
        now = time.monotonic()
        for rid in meta.reqs_to_send:
            s = self.sends.get(rid)
            if s is not None:
                self.stats[rid]["t_last_layer"] = now
                s.release = True
                self._flush(s)
        self.progress(0)

    def _flush(self, s: _Send) -> None:
        """Posts every buffer whose pages are ready, in order, once the decode pulled."""
        kv, t = self.kv, s.t
        if s.copies:
            left = []
            for b, ev in s.copies:
                if ev.query():
                    s.ready[b] = True
                else:
                    left.append((b, ev))
            s.copies = left
        if t.peer is None or s.aborted or t.error is not None or t.peer.failed is not None \
                or not s.release:
            return
        err = t.first_error()
        if err is not None:          # e.g. the decode aborted: post nothing more
            t.error = err
            t.abort()
            return
        ep = t.peer.ep
        tokens = self._tokens(s.spec.num_tokens)
        try:
            for g, grp in enumerate(kv.groups):
                blocks = t.blocks if not kv.staged else \
                    list(range(t.staging_first, t.staging_first + len(t.blocks)))
                lays = grp.layers        # the buffers of each layer of the group's layout
                pos = 0
                while pos < len(lays):
                    if all(s.sent[b] for b in lays[pos]):
                        pos += 1
                        continue
                    if not all(s.ready[b] for b in lays[pos]):
                        break
                    end = pos       # a run of ready layers goes in one call
                    while end < len(lays) and all(s.ready[b] for b in lays[end]) and \
                            not any(s.sent[b] for b in lays[end]):
                        end += 1
                    first = g not in t.reqs
                    req = ep.send(group_seq(t.seq, g), grp.layout, blocks, pos, end,
                                  last=end == len(lays),
                                  timeout=self.c.transfer_timeout_s if first else None,
                                  tokens=tokens if first else None)
                    t.reqs[g] = req
                    for k in range(pos, end):
                        for b in lays[k]:
                            s.sent[b] = True
                    pos = end
            if s.first_tokens is not None and t.aux_req is None and self._aux_free:
                s.aux_slot = self._aux_free.pop()
                self._aux_write(s.aux_slot, {"first_token_ids": s.first_tokens,
                                             "num_tokens": s.spec.num_tokens})
                t.aux_req = ep.send(group_seq(t.seq, 0, aux=True), self.aux_lay, [s.aux_slot],
                                    0, 1, timeout=self.c.transfer_timeout_s)
        except kvwire.KvwireError as e:
            t.error = e
            t.abort()

    def _aux_write(self, slot: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        if len(data) + 4 > AUX_BYTES:
            data = json.dumps({"first_token_ids": obj["first_token_ids"][:500]}).encode()
        o = slot * AUX_BYTES
        self.aux_buf[o:o + 4] = list(len(data).to_bytes(4, "little"))
        self.aux_buf[o + 4:o + 4 + len(data)] = list(data)

    def _aux_read(self, slot: int) -> dict:
        o = slot * AUX_BYTES
        n = int.from_bytes(bytes(self.aux_buf[o:o + 4]), "little")
        return json.loads(bytes(self.aux_buf[o + 4:o + 4 + n]))

    # ---- both
    def _refuse(self, peer: Peer, seq: int, n: int) -> None:
        lays = [(group_seq(seq, g), grp.layout) for g, grp in enumerate(self.kv.groups)]
        refuse(peer, seq, lays + [(group_seq(seq, 0, aux=True), self.aux_lay)], n)

    def _apply_finishing(self, meta: KVWireConnectorMetadata) -> None:
        now = time.monotonic()
        for rid, tid in getattr(meta, "reqs_to_cancel", {}).items():
            seq = seq_of(tid)
            peer = self._pulls.pop(seq, None)
            if peer is not None:
                self._refuse(peer, seq, self._pull_n.pop(seq, 1))
            else:
                self._canceled.add(seq)
        for rid, toks in meta.reqs_to_finish.items():
            s = self.sends.get(rid)
            if s is None:       # finished before any layer was saved (e.g. prompt fully cached)
                self._freeable.add(rid)
                continue
            s.finished_by_scheduler = True
            s.first_tokens = toks
            s.t_finished = now
            self._flush(s)
        for rid in meta.reqs_to_abort:
            s = self.sends.get(rid)
            if s is not None:
                s.aborted = True
                s.finished_by_scheduler = True
                s.t.abort()                  # fence: the decode reads no page of ours any more
            elif rid not in self.recvs:
                self._freeable.add(rid)
            r = self.recvs.get(rid)
            if r is not None:
                r.aborted = True
                r.t.abort()                  # fence: nothing lands in these blocks any more
                if r.t.peer is not None and r.posted and r.t.peer.failed is None:
                    r.t.peer.send_msg({"type": "cancel", "seq": r.t.seq})  # stop the prefill too
                self._freeable.add(rid)

    def progress(self, timeout: float = 0.0) -> None:
        for r in self.recvs.values():
            if not r.posted and not r.aborted:
                self._post_recv(r)
        for s in self.sends.values():
            if s.copies or (s.t.peer is not None and not all(s.sent)) or \
                    (s.first_tokens is not None and s.t.aux_req is None):
                self._flush(s)
        self.agent.progress(timeout)

    def busy(self) -> bool:
        return bool(self.sends or self.recvs or self._freeable)

    def get_finished(self, finished_req_ids: set[str]
                     ) -> tuple[Optional[set[str]], Optional[set[str]]]:
        self.progress(0)
        done_send, done_recv = set(self._freeable), set()
        self._freeable.clear()
        now = time.monotonic()
        for rid, s in list(self.sends.items()):
            t = s.t
            if not s.finished_by_scheduler:
                continue
            over = t.peer is None and s.t_finished is not None and \
                now - s.t_finished > self.c.transfer_timeout_s
            sent_all = all(s.sent) and t.aux_req is not None
            if s.aborted or t.error is not None or over or \
                    (t.peer is not None and t.peer.failed is not None) or \
                    (sent_all and t.finished()):
                if over:
                    log.warning("kvwire: no decode engine pulled transfer %s of request %s within "
                                "%.0f s; its blocks are freed", s.spec.transfer_id, rid,
                                self.c.transfer_timeout_s)
                t.abort()
                err = t.first_error()
                st = self.stats.setdefault(rid, {})
                st["t_sent"] = now
                st["status"] = "ok" if (err is None and not s.aborted and not over) else \
                    ("aborted" if s.aborted else str(err or "not pulled"))
                self._release_send(s)
                del self.sends[rid]
                done_send.add(rid)
        for rid, r in list(self.recvs.items()):
            t = r.t
            if r.aborted:
                t.abort()
                self._release_recv(r)
                del self.recvs[rid]
                continue
            if not r.posted:
                if t.peer is not None and t.peer.failed is not None:
                    self.load_errors[rid] = t.peer.failed
                    self._failed_blocks.update(r.spec.block_ids)
                    self._release_recv(r)
                    del self.recvs[rid]
                    done_recv.add(rid)
                continue
            err = t.first_error()
            if err is None and not t.finished():
                if self.kv.staged:
                    self._copy_in_landed(r)
                continue
            if err is None and self.kv.staged:
                self._copy_in_landed(r)
                if not all(ev.query() for ev in r.copies) or \
                        len(r.copied) < len(self.kv.buffers):
                    continue
            st = self.stats.setdefault(rid, {})
            st["kv_layers_landed"] = sum(len(q.layers_done) for q in t.reqs.values())
            st["kv_layers_total"] = sum(q.n_layers for q in t.reqs.values())
            if err is not None:
                t.abort()                    # fence the rest before the blocks are reused
                self.load_errors[rid] = err
                self._failed_blocks.update(r.spec.block_ids)
            else:
                self.remote_outputs[rid] = self._aux_read(r.aux_slot)
            st["t_loaded"] = now
            st["status"] = "ok" if err is None else str(err)
            self._release_recv(r)
            del self.recvs[rid]
            done_recv.add(rid)
        return (done_send or None), (done_recv or None)

    def _copy_in_landed(self, r: _Recv) -> None:
        kv, t = self.kv, r.t
        for g, req in t.reqs.items():
            grp = kv.groups[g]
            for pos in req.layers_done:
                for b in grp.layers[pos]:
                    if b not in r.copied:
                        r.copies.append(kv.stager.copy_in(b, t.blocks, t.staging_first))
                        r.copied.add(b)

    def _release_send(self, s: _Send) -> None:
        s.t.free()
        if s.aux_slot is not None:
            self._aux_free.append(s.aux_slot)
        if self.kv.staged and s.t.staging_first is not None:
            self.kv.stager.release(s.t.staging_first, len(s.t.blocks))
        self._pulls.pop(s.t.seq, None)
        self._pull_n.pop(s.t.seq, None)
        self._fail_later.pop(s.t.seq, None)

    def _release_recv(self, r: _Recv) -> None:
        r.t.free()
        if r.aux_slot is not None:
            self._aux_free.append(r.aux_slot)
        if self.kv.staged and r.t.staging_first is not None:
            self.kv.stager.release(r.t.staging_first, len(r.t.blocks))

    def take_failed_blocks(self) -> set[int]:
        out, self._failed_blocks = self._failed_blocks, set()
        return out

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        with self.lock:
            self._close()

    def _close(self) -> None:
        for s in self.sends.values():
            s.t.abort()
        for r in self.recvs.values():
            r.t.abort()
        self.aux_buf = None
        if self.kv is not None:
            self.kv.close()
        self.agent.close()
        _WORKER_URIS.pop(self.c.engine_id, None)


__all__ = ["KVWireConnector", "KVWireConnectorMetadata", "RecvSpec", "SendSpec", "HAVE_VLLM",
           "KVConnectorBase_V1", "KVConnectorMetadata", "KVConnectorRole", "KVTransferConfig",
           "VllmConfig", "CacheConfig", "RequestStatus"]
