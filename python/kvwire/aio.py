# SPDX-License-Identifier: MIT
"""asyncio integration on the context fd (kvw_ctx_fd), without busy-looping.

    async def fetch(ep, layout, blocks):
        req = ep.recv(seq, layout, blocks, timeout=5)
        await req                       # or: await kvwire.aio.wait(req, timeout=1)
        await kvwire.aio.wait_layer(req, 3)

How it runs: the loop watches kvw_ctx_fd() with add_reader; when it is
readable (a socket, a completion channel, a writable stream that was full),
the driver calls kvw_poll and hands each event to its Request, which resolves
the futures awaiting it. A timer covers what no fd announces: the nearest
request deadline, keepalive (keepalive_ms / 2) and, for drivers that are
busy-polled (dpdk) or a context with fault injection, a short tick while
requests are in flight. Idle, the loop sleeps.

A context stays single-threaded: use it from the loop's thread only while a
driver is attached.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from . import _abi
from .errors import WaitTimeout

if TYPE_CHECKING:
    from .core import Context, Endpoint, Listener, Request

_BUSY_POLL_S = 0.0005     # dpdk / fault injection, while requests run
_BUSY_DRIVERS = {"dpdk"}


class Driver:
    """Attaches one Context to one asyncio loop."""

    def __init__(self, ctx: "Context", loop: asyncio.AbstractEventLoop):
        self.ctx = ctx
        self.loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False
        self._pass_waiters: list[asyncio.Future] = []
        self.wakeups = 0          # how often the driver ran (tests check it stays low when idle)
        self._fd = ctx.fileno()
        loop.add_reader(self._fd, self._run)
        ctx._aio = self

    def kick(self) -> None:
        """Run a poll pass soon (after an API call queued work)."""
        if not self._soon and not self.loop.is_closed():
            self._soon = True
            self.loop.call_soon(self._run)

    def _run(self) -> None:
        self._soon = False
        if self.ctx.closed:
            self._detach()
            return
        self.wakeups += 1
        self.ctx.poll(0)
        self._arm()
        waiters, self._pass_waiters = self._pass_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _busy(self) -> bool:
        if self.ctx.fault:
            return True
        for r in self.ctx._live.values():
            ep = r.endpoint
            if not ep.closed:
                try:
                    if ep.driver in _BUSY_DRIVERS:
                        return True
                except Exception:
                    pass
        return False

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.ctx.closed:
            return
        delay = self.ctx.keepalive_s / 2 if self.ctx._eps else None
        if self.ctx._live:
            now = time.monotonic()
            delay = self.ctx.keepalive_s / 2
            for r in self.ctx._live.values():
                if r.deadline is not None:
                    delay = min(delay, max(0.0, r.deadline - now) + 0.002)
            if self._busy():
                delay = min(delay, _BUSY_POLL_S)
        if delay is not None:
            self._timer = self.loop.call_later(delay, self._run)

    def _detach(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self.loop.remove_reader(self._fd)
        except Exception:
            pass
        if self.ctx._aio is self:
            self.ctx._aio = None


def driver(ctx: "Context") -> Driver:
    """The driver of `ctx` on the running loop (made on first use)."""
    loop = asyncio.get_running_loop()
    d = ctx._aio
    if d is not None and d.loop is loop:
        return d
    if d is not None:
        d._detach()
    return Driver(ctx, loop)


async def wait(req: "Request", timeout: float | None = None) -> "Request":
    """Awaits the end of a request; raises its KvwireError on failure, WaitTimeout
    after `timeout` seconds (the request goes on)."""
    if not req.done:
        d = driver(req.ctx)
        fut = d.loop.create_future()
        req._waiters.append(fut)
        d.kick()
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise WaitTimeout(f"{req._what()}: still running after {timeout} s") from None
    exc = req.exception()
    if exc is not None:
        raise exc
    return req


async def wait_layer(req: "Request", layer: int, timeout: float | None = None) -> None:
    """Awaits KVW_EV_LAYER for `layer` (or the request's end)."""
    if layer not in req._layers and not req.done:
        d = driver(req.ctx)
        fut = d.loop.create_future()
        req._layer_waiters.setdefault(layer, []).append(fut)
        d.kick()
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise WaitTimeout(f"{req._what()}: layer {layer} not landed after {timeout} s") \
                from None
    if layer not in req._layers:
        exc = req.exception()
        if exc is not None:
            raise exc


async def connect(ctx: "Context", uri: str, timeout: float | None = None) -> "Endpoint":
    """kvw_connect_start + the handshake driven by the loop (the loop is not blocked)."""
    ep = ctx.connect(uri, wait=False)
    d = driver(ctx)
    end = None if timeout is None else time.monotonic() + timeout
    while ep.status == _abi.KVW_INPROGRESS:
        if end is not None and time.monotonic() >= end:
            ep.close()
            raise WaitTimeout(f"connect {uri}: handshake not done within {timeout} s")
        await _readable_or(d, 0.005)
        ctx.poll(0)
    ep.check()
    return ep


async def accept(listener: "Listener", timeout: float | None = None) -> "Endpoint | None":
    """The next endpoint of the listener, or None after `timeout` seconds."""
    d = driver(listener.ctx)
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        ep = listener.accept(0)
        if ep is not None:
            return ep
        if end is not None and time.monotonic() >= end:
            return None
        await _readable_or(d, 0.05 if end is None else min(0.05, max(0.0, end - time.monotonic())))


async def _readable_or(d: Driver, delay: float) -> None:
    """Sleeps until the driver's next pass (the context fd was readable, or its
    timer fired) or `delay` passed."""
    fut = d.loop.create_future()
    d._pass_waiters.append(fut)

    def fire() -> None:
        if not fut.done():
            fut.set_result(None)
    h = d.loop.call_later(delay, fire)
    try:
        await fut
    finally:
        h.cancel()
