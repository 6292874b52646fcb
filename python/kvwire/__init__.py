# SPDX-License-Identifier: MIT
"""kvwire: move paged LLM KV caches from prefill hosts to decode hosts.

A ctypes binding of libkvwire's public C API (include/kvwire/kvwire.h), plus
vLLM- and SGLang-shaped connectors (kvwire.connectors). Standard library only;
numpy and torch are used when you pass their arrays.

    import kvwire
    with kvwire.Context() as ctx:
        mem = ctx.alloc(64 << 20)
        lay = kvwire.Layout(mem, n_layers=32, n_blocks=16, block_bytes=64 << 10)
        ep = ctx.connect("tcp://decode0:7471")
        for layer in range(32):
            req = ep.send(seq_id, lay, blocks, layer, layer + 1)
        req.wait()

The library is found through $KVWIRE_LIB, $KVWIRE_BUILD_DIR, the source
tree's build/ or the system loader (see kvwire._lib); its version is checked
at import.
"""
from __future__ import annotations

from . import _abi
from ._lib import LibraryError, load as _load
from .core import (Config, ConfigEntry, Context, Counters, Endpoint, EndpointInfo, Event,
                   Geometry,
                   Layout, Listener, Memory, Request, RequestInfo, config_table, drivers_built,
                   library_path, library_version, strerror)
from .errors import (AbortedError, AuthError, BusyError, ClosedError, ConnRefusedError,
                     InvalidError, IOFailedError, KvwireError, MemlockError, NoMemError,
                     NotFoundError, PeerDeadError, ProtoError, RejectedError, TimedOutError,
                     UnsupportedError, VersionError, WaitTimeout, error_class)
from . import aio

__version__ = _abi.ABI_VERSION_STRING

OK = _abi.KVW_OK
INPROGRESS = _abi.KVW_INPROGRESS
MEM_NO_PIN = _abi.KVW_MEM_NO_PIN
MAX_LAYERS = _abi.KVW_MAX_LAYERS
MAX_BLOCKS_PER_SEQ = _abi.KVW_MAX_BLOCKS_PER_SEQ

_load()  # find the library and check its version now, with a clear message

_default_ctx: Context | None = None


def default_context() -> Context:
    """A process-wide Context (defaults + KVW_* environment), made on first use.
    The connectors use it unless given one."""
    global _default_ctx
    if _default_ctx is None or _default_ctx.closed:
        _default_ctx = Context()
    return _default_ctx


__all__ = [
    "Config", "ConfigEntry", "Context", "Counters", "Endpoint", "EndpointInfo", "Event",
    "Geometry", "Layout", "Listener", "Memory", "Request", "RequestInfo", "config_table", "drivers_built",
    "library_path", "library_version", "strerror", "default_context", "aio", "LibraryError",
    "KvwireError", "InvalidError", "NoMemError", "UnsupportedError", "TimedOutError",
    "PeerDeadError", "AbortedError", "RejectedError", "ProtoError", "VersionError", "AuthError",
    "BusyError", "MemlockError", "IOFailedError", "ConnRefusedError", "NotFoundError",
    "ClosedError", "WaitTimeout", "error_class",
]
