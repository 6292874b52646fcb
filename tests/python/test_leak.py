# SPDX-License-Identifier: MIT
"""No leak over 10,000 requests: RSS and the live handle sets stay bounded,
whether requests are freed explicitly, dropped to the garbage collector, or
fail (deadline / abort)."""
from __future__ import annotations

import gc
import time

import pytest

from conftest import pair, rss_kib

import kvwire

N = 10_000


def _setup(ctx, tmp_path, driver="shm"):
    cl, sv, lsn = pair(ctx, driver, tmp_path)
    L, nb, bb = 2, 16, 4096
    ls = kvwire.Layout(ctx.alloc(L * nb * bb), L, nb, bb)
    ld = kvwire.Layout(ctx.alloc(L * nb * bb), L, nb, bb)
    return cl, sv, lsn, ls, ld


def _growth(step, n=N, warm=1000):
    for i in range(warm):
        step(i)
    gc.collect()
    r0 = rss_kib()
    t = time.monotonic()
    for i in range(warm, n):
        step(i)
    gc.collect()
    return rss_kib() - r0, time.monotonic() - t


@pytest.mark.parametrize("mode", ["with", "dropped"])
def test_ten_thousand_transfers_do_not_grow(tmp_path, mode):
    with kvwire.Context() as ctx:
        cl, sv, lsn, ls, ld = _setup(ctx, tmp_path)

        def step(i):
            blk = [i % 16]
            if mode == "with":
                with sv.recv(i, ld, blk) as r, cl.send(i, ls, blk, 0, 2) as s:
                    r.wait(10)
                    s.wait(10)
            else:
                r = sv.recv(i, ld, blk)
                cl.send(i, ls, blk, 0, 2).wait(10)
                r.wait(10)
        grew, took = _growth(step)
        ctx.poll(0)
        assert len(ctx._st.reqs) <= 4, f"{len(ctx._st.reqs)} C requests not freed"
        assert len(ctx._all) <= 4 and not ctx._live
        assert ctx._st.grave == []
        assert grew < 8 * 1024, f"RSS grew {grew} KiB over {N - 1000} requests"
        c = cl.counters()
        assert c.seqs_ok >= N


def test_ten_thousand_failed_requests_do_not_grow(tmp_path):
    with kvwire.Context() as ctx:
        cl, sv, lsn, ls, ld = _setup(ctx, tmp_path, "tcp")

        def step(i):
            r = sv.recv(i, ld, [i % 16], timeout=5)
            if i % 2:
                r.abort()
            else:
                s = cl.send(i, ls, [i % 16], 0, 1)   # half a sequence, then abort it
                s.abort()
                r.abort()
            try:
                r.wait(5)
            except kvwire.AbortedError:
                pass
        grew, took = _growth(step)
        ctx.poll(0.05)
        gc.collect()
        ctx.poll(0)
        assert len(ctx._st.reqs) <= 4 and not ctx._live
        assert grew < 8 * 1024, f"RSS grew {grew} KiB over {N - 1000} failed requests"
        assert cl.ready and sv.ready, "the endpoint must survive 10,000 aborts"


def test_ten_thousand_contexts_objects_and_events(tmp_path):
    """Contexts, memory, layouts and endpoints made and closed again and again."""
    def step(i):
        with kvwire.Context() as c:
            m = c.alloc(65536)
            lay = kvwire.Layout(m, 1, 1, 65536)
            lay.close()
            m.close()
    grew, took = _growth(step, n=2000, warm=200)
    assert grew < 8 * 1024, f"RSS grew {grew} KiB over 1,800 contexts"
