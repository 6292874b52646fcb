# SPDX-License-Identifier: MIT
"""Lifetimes: a closed endpoint with live Python requests, a closed context,
garbage-collected objects, a peer process killed or stopped midway."""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import HERE, pair

import kvwire
from kvwire import _abi

np = pytest.importorskip("numpy", reason="python3-numpy missing (scripts/install-deps.sh)")


def _pools(ctx, L=4, nb=8, bb=4096):
    src = ctx.alloc(L * nb * bb)
    dst = ctx.alloc(L * nb * bb)
    return kvwire.Layout(src, L, nb, bb), kvwire.Layout(dst, L, nb, bb)


@pytest.mark.parametrize("driver", ["shm", "tcp"])
def test_closed_endpoint_with_live_python_requests(ctx, driver, tmp_path):
    cl, sv, _l = pair(ctx, driver, tmp_path)
    ls, ld = _pools(ctx)
    grants = [sv.recv(100 + i, ld, [i]) for i in range(4)]
    sends = [cl.send(200 + i, ls, [i], 0, 1) for i in range(3)]   # never granted
    half = cl.send(100, ls, [0], 0, 2)                              # 2 of 4 layers
    ctx.poll(0.05)
    assert all(not r.done for r in grants + sends)
    sv.close()       # the receiving side closes with everything in flight
    cl.close()
    for r in grants + sends + [half]:
        assert r.done
        assert r.status in (_abi.KVW_ERR_ABORTED, _abi.KVW_ERR_CLOSED, _abi.KVW_ERR_PEER_DEAD), r
        with pytest.raises(kvwire.KvwireError) as ei:
            r.wait(1)
        assert ei.value.status == r.status
        info = r.info()                 # the C request is orphaned, not freed
        assert info.status == r.status
        r.abort()                       # no-op on a finished request
        with pytest.raises(kvwire.InvalidError):
            r.set_timeout(1)
    assert grants[0].exception().where.startswith("recv of sequence 100")
    with pytest.raises(kvwire.ClosedError):
        sv.recv(1, ld, [0])
    with pytest.raises(kvwire.ClosedError):
        cl.send(1, ls, [0])
    ctx.poll(0.01)                      # events of the closed endpoint: still harmless
    for r in grants + sends:
        r.free()
    del grants, sends, half, r, ei   # (ei: its traceback holds the last request)
    gc.collect()
    ctx.poll(0)
    assert not ctx._st.reqs - set(), ctx._st.reqs   # the last one freed via the graveyard


def test_closing_the_context_under_live_requests(tmp_path):
    ctx = kvwire.Context()
    cl, sv, _l = pair(ctx, "shm", tmp_path)
    ls, ld = _pools(ctx)
    r = sv.recv(1, ld, [0, 1])
    s = cl.send(1, ls, [2, 3], 0, 1)
    view = ld.mem.numpy()
    with pytest.raises(kvwire.BusyError, match="view"):
        ctx.close()
    assert not ctx.closed
    del view
    ctx.close()
    assert ctx.closed and r.done and s.done
    assert r.status == _abi.KVW_ERR_ABORTED
    for call in (lambda: r.info(), lambda: cl.ping(), lambda: ld.runs([0]),
                 lambda: ctx.alloc(10), lambda: ld.mem.numpy(), lambda: _l.accept(0)):
        with pytest.raises(kvwire.ClosedError):
            call()
    r.free()
    s.abort()
    cl.close()
    ctx.close()          # twice: fine


def test_layout_and_memory_refuse_to_close_under_a_running_request(ctx, tmp_path):
    cl, sv, _l = pair(ctx, "tcp", tmp_path)
    ls, ld = _pools(ctx)
    r = sv.recv(7, ld, [0])
    with pytest.raises(kvwire.BusyError, match="running request"):
        ld.close()
    with pytest.raises(kvwire.BusyError) as ei:
        ld.mem.close()
    assert ei.value.sentence
    r.abort()
    ld.close()
    ld.mem.close()


def test_dropped_objects_are_freed_on_the_next_call(tmp_path):
    with kvwire.Context() as ctx:
        cl, sv, lsn = pair(ctx, "shm", tmp_path)
        ls, ld = _pools(ctx)
        for i in range(20):
            r = sv.recv(i, ld, [i % 8])
            s = cl.send(i, ls, [i % 8], 0, 4)
            r.wait(5)
            s.wait(5)
        del r, s
        gc.collect()
        ctx.poll(0)
        assert len(ctx._st.reqs) == 0
        del cl, sv, lsn, ls, ld
        gc.collect()
        ctx.poll(0)
        assert not ctx._st.eps and not ctx._st.lsn and not ctx._st.lays and not ctx._st.mems


def test_a_context_dropped_without_close_is_torn_down(tmp_path):
    code = f"""
import gc, kvwire
ctx = kvwire.Context()
lsn = ctx.listen("shm://{tmp_path}/drop.sock")
ep = ctx.connect(lsn.uri, timeout=5)
sv = lsn.accept(5)
mem = ctx.alloc(1 << 20)
lay = kvwire.Layout(mem, 1, 16, 65536)
r = sv.recv(1, lay, [0])
del ctx, lsn, ep, sv, mem, lay, r
gc.collect()
print("alive")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "alive"


def _spawn_sender(uri, seq, L, nb, bb, interval):
    return subprocess.Popen([sys.executable, str(HERE / "peer.py"), uri, str(seq), str(L),
                             str(nb), str(bb), str(interval)], stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("driver", ["shm", "tcp"])
def test_sender_killed_mid_transfer_fails_peer_dead(driver, tmp_path):
    L, nb, bb = 16, 32, 65536
    with kvwire.Context(peer_dead_ms=1000, keepalive_ms=100) as ctx:
        uri = f"shm://{tmp_path}/k.sock" if driver == "shm" else "tcp://127.0.0.1:0"
        lsn = ctx.listen(uri)
        p = _spawn_sender(lsn.uri, 5, L, nb, bb, 0.2)
        ep = lsn.accept(15)
        assert ep is not None
        assert p.stdout.readline().strip() == "connected"
        mem = ctx.alloc(L * nb * bb)
        lay = kvwire.Layout(mem, L, nb, bb)
        r = ep.recv(5, lay, list(range(nb)), timeout=30)
        r.wait_layer(1, 15)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        t = time.monotonic()
        with pytest.raises(kvwire.PeerDeadError) as ei:
            r.wait(10)
        took = time.monotonic() - t
        assert took < 1.5, f"PEER_DEAD after {took:.2f} s (socket closed: should be at once)"
        assert isinstance(ei.value, ConnectionError) and ei.value.sentence
        assert 0 < len(r.layers_done) < L
        # the listener goes on serving the next peer
        p2 = _spawn_sender(lsn.uri, 6, L, nb, bb, 0)
        ep2 = lsn.accept(15)
        r2 = ep2.recv(6, lay, list(range(nb)), timeout=30)
        r2.wait(30)
        assert p2.stdout.read().strip().endswith("done 0")
        p2.wait(30)


def test_stopped_sender_fails_peer_dead_after_peer_dead_ms(tmp_path):
    L, nb, bb = 8, 8, 65536
    with kvwire.Context(peer_dead_ms=600, keepalive_ms=100) as ctx:
        lsn = ctx.listen("tcp://127.0.0.1:0")
        p = _spawn_sender(lsn.uri, 9, L, nb, bb, 0.3)
        try:
            ep = lsn.accept(15)
            p.stdout.readline()
            mem = ctx.alloc(L * nb * bb)
            lay = kvwire.Layout(mem, L, nb, bb)
            r = ep.recv(9, lay, list(range(nb)), timeout=30)
            r.wait_layer(0, 15)
            os.kill(p.pid, signal.SIGSTOP)
            t = time.monotonic()
            with pytest.raises(kvwire.PeerDeadError) as ei:
                r.wait(10)
            took = time.monotonic() - t
            assert 0.4 < took < 3.0, took
            assert "peer_dead_ms" in ei.value.sentence, ei.value.sentence
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
