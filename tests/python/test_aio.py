# SPDX-License-Identifier: MIT
"""asyncio on the context fd: awaiting requests, handshakes and layers without
busy-looping."""
from __future__ import annotations

import asyncio
import resource
import time

import pytest

import kvwire
from kvwire import _abi

np = pytest.importorskip("numpy", reason="python3-numpy missing (scripts/install-deps.sh)")


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _pair(tmp_path, driver="tcp"):
    srv, cli = kvwire.Context(), kvwire.Context()
    lsn = srv.listen(f"shm://{tmp_path}/a.sock" if driver == "shm" else "tcp://127.0.0.1:0")
    acc = asyncio.ensure_future(kvwire.aio.accept(lsn, 10))
    ep = await kvwire.aio.connect(cli, lsn.uri, 10)
    sv = await acc
    assert sv is not None and ep.ready and sv.ready
    return srv, cli, lsn, ep, sv


def _lay(ctx, L=4, nb=16, bb=16384):
    return kvwire.Layout(ctx.alloc(L * nb * bb), L, nb, bb)


@pytest.mark.parametrize("driver", ["shm", "tcp"])
def test_await_a_transfer_between_two_contexts_on_one_loop(tmp_path, driver):
    async def main():
        srv, cli, lsn, ep, sv = await _pair(tmp_path, driver)
        ls, ld = _lay(cli), _lay(srv)
        src = ls.mem.numpy()
        src[:] = 7
        del src
        r = sv.recv(1, ld, [5, 6, 7], timeout=10)
        layers = []

        async def recv_side():
            for layer in range(4):
                await r.wait_layer_async(layer, 10)
                layers.append(layer)
            return await r

        async def send_side():
            s = None
            for layer in range(4):
                s = ep.send(1, ls, [0, 1, 2], layer, layer + 1)
                await asyncio.sleep(0.01)   # prefill computing the next layer
            return await kvwire.aio.wait(s, 10)

        rr, ss = await asyncio.gather(recv_side(), send_side())
        assert rr is r and r.ok and ss.ok and layers == [0, 1, 2, 3]
        got = ld.mem.numpy().reshape(4, 16, 16384)[:, [5, 6, 7]]
        assert (got == 7).all()
        del got
        srv.close()
        cli.close()
    asyncio.run(main())


def test_an_idle_await_sleeps(tmp_path):
    async def main():
        srv, cli, lsn, ep, sv = await _pair(tmp_path)
        ld = _lay(srv)
        r = sv.recv(2, ld, [0], timeout=30)
        d = kvwire.aio.driver(srv)
        w0, c0, t0 = d.wakeups, cpu_s(), time.monotonic()
        with pytest.raises(kvwire.WaitTimeout):
            await r.wait_async(1.0)
        took, wakes, cpu = time.monotonic() - t0, d.wakeups - w0, cpu_s() - c0
        assert 0.95 <= took < 1.5
        # keepalive_ms 250: a few timer passes a second, plus the peer's pings
        assert wakes < 40, f"{wakes} driver passes in 1 s: busy-looping"
        assert cpu < 0.25, f"{cpu:.2f} s of CPU in a 1 s idle await"
        assert not r.done     # the request goes on after WaitTimeout
        r.abort()
        srv.close()
        cli.close()
    asyncio.run(main())


def test_await_raises_the_request_failure(tmp_path):
    async def main():
        srv, cli, lsn, ep, sv = await _pair(tmp_path)
        ld = _lay(srv)
        t = time.monotonic()
        r = sv.recv(3, ld, [1], timeout=0.3)
        with pytest.raises(kvwire.TimedOutError) as ei:
            await r
        assert 0.28 <= time.monotonic() - t < 1.5
        assert ei.value.status == _abi.KVW_ERR_TIMEDOUT and "deadline" in ei.value.sentence
        r2 = sv.recv(4, ld, [2], timeout=10)
        asyncio.get_running_loop().call_later(0.1, r2.abort)
        with pytest.raises(kvwire.AbortedError):
            await r2
        with pytest.raises(kvwire.AbortedError):
            await kvwire.aio.wait_layer(r2, 0)
        srv.close()
        cli.close()
    asyncio.run(main())


def test_many_requests_awaited_together(tmp_path):
    async def main():
        srv, cli, lsn, ep, sv = await _pair(tmp_path, "shm")
        L, nb, bb = 2, 64, 4096
        ls, ld = _lay(cli, L, nb, bb), _lay(srv, L, nb, bb)
        grants = [sv.recv(100 + i, ld, [i], timeout=20) for i in range(nb)]
        sends = [ep.send(100 + i, ls, [nb - 1 - i], 0, L) for i in range(nb)]
        done = await asyncio.gather(*(kvwire.aio.wait(x, 20) for x in grants + sends))
        assert all(x.ok for x in done)
        srv.close()
        cli.close()
    asyncio.run(main())


def test_a_handshake_that_never_ends_fails_without_blocking_the_loop(tmp_path):
    import socket
    mute = socket.socket()          # accepts TCP, never speaks kvwire
    mute.bind(("127.0.0.1", 0))
    mute.listen(4)
    port = mute.getsockname()[1]

    async def main():
        ctx = kvwire.Context(connect_timeout_ms=500)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
        tk = asyncio.ensure_future(ticker())
        with pytest.raises(kvwire.KvwireError) as ei:
            await kvwire.aio.connect(ctx, f"tcp://127.0.0.1:{port}", 5)
        tk.cancel()
        assert isinstance(ei.value, kvwire.TimedOutError), ei.value
        assert "connect_timeout_ms" in ei.value.sentence, ei.value.sentence
        assert ticks >= 10, f"the loop ran {ticks} ticks in 0.5 s: blocked while connecting"
        ctx.close()
    asyncio.run(main())
    mute.close()
