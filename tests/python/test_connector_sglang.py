# SPDX-License-Identifier: MIT
"""The SGLang-shaped backend through SGLang's call sequence: bootstrap, the
receiver's init (send_metadata), the sender's chunked send(), poll() states,
failure_exception(), abort() as a fence."""
from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch", reason="python3-torch missing (scripts/install-deps.sh)")

from kvwire.connectors import sglang as sg  # noqa: E402

L, PAGES, PAGE, HEADS, DIM = 3, 32, 4, 2, 16
ITEM = PAGE * HEADS * DIM * 4


class Pool:
    """SGLang's MHATokenToKVPool shape: k_buffer/v_buffer per layer, plus a
    metadata (aux) buffer of output ids per request slot."""

    def __init__(self, fill: float | None, page: int = PAGE):
        self.page_size = page
        self.k = [torch.zeros(PAGES * page, HEADS, DIM) for _ in range(L)]
        self.v = [torch.zeros(PAGES * page, HEADS, DIM) for _ in range(L)]
        self.aux = torch.zeros(8, 16, dtype=torch.int32)
        if fill is not None:
            for i, t in enumerate(self.k + self.v):
                t.copy_(torch.arange(t.numel(), dtype=torch.float32).reshape(t.shape) * (i + 1) + fill)
            self.aux.copy_(torch.arange(128, dtype=torch.int32).reshape(8, 16))

    def args(self) -> sg.KVArgs:
        bufs = self.k + self.v
        item = self.page_size * HEADS * DIM * 4
        return sg.KVArgs(engine_rank=0, kv_data_ptrs=[t.data_ptr() for t in bufs],
                         kv_data_lens=[t.numel() * 4 for t in bufs], kv_item_lens=[item] * len(bufs),
                         aux_data_ptrs=[self.aux.data_ptr()], aux_data_lens=[self.aux.numel() * 4],
                         aux_item_lens=[16 * 4], page_size=self.page_size, kv_head_num=HEADS)

    def page(self, buf: int, p: int):
        t = (self.k + self.v)[buf]
        return t[p * self.page_size:(p + 1) * self.page_size]

    def token(self, buf: int, pages: list[int], t: int):
        """Token t of a request whose page table is `pages`."""
        p, i = pages[t // self.page_size], t % self.page_size
        return (self.k + self.v)[buf][p * self.page_size + i]


@pytest.fixture
def boot():
    b = sg.KVBootstrapServer("127.0.0.1", 0)
    yield b
    b.close()


def managers(boot, tmp_path, driver="tcp", timeout=10.0, dst_page=PAGE):
    src, dst = Pool(0.5), Pool(None, dst_page)
    listen = f"shm://{tmp_path}/sg.sock" if driver == "shm" else "tcp://127.0.0.1:0"
    pm = sg.KVManager(src.args(), sg.DisaggregationMode.PREFILL,
                      sg.ServerArgs(bootstrap_port=boot.port, kvwire_listen=listen,
                                    transfer_timeout_s=timeout))
    dm = sg.KVManager(dst.args(), sg.DisaggregationMode.DECODE,
                      sg.ServerArgs(transfer_timeout_s=timeout))
    _MGRS[:] = [pm, dm]
    return src, dst, pm, dm


_MGRS: list = []   # every manager of the test: each runs in its own server in SGLang,
                   # here they share the test's thread, so every wait drives all of them


def until(cond, *polls, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        states = [p() for p in polls]
        if cond(states):
            return states
        for m in _MGRS:
            m.progress(0)
        time.sleep(0.0005)
    raise TimeoutError(f"states {states}")


@pytest.mark.parametrize("driver", ["tcp", "shm"])
def test_chunked_send_lands_every_page_and_the_aux(boot, tmp_path, driver):
    src, dst, pm, dm = managers(boot, tmp_path, driver)
    if driver == "shm":
        assert pm.kv.staged, "shm sends only kvwire memory: torch pools must be staged"
    room = 4242
    s = sg.KVSender(pm, boot.addr, room)
    assert s.poll() == sg.KVPoll.Bootstrapping
    r = sg.KVReceiver(dm, boot.addr, room)
    until(lambda st: st[0] == sg.KVPoll.WaitingForInput, r.poll)
    src_pages, dst_pages = [3, 4, 5, 9, 20, 21], [30, 1, 2, 17, 8, 0]
    r.init(dst_pages, aux_index=6)
    until(lambda st: st[0] == sg.KVPoll.WaitingForInput, s.poll)
    s.init(len(src_pages), aux_index=2)
    s.send(src_pages[:4])                  # first chunk: held until the last
    assert s.poll() == sg.KVPoll.WaitingForInput
    s.send(src_pages[4:])
    st = until(lambda st: all(x in (sg.KVPoll.Success, sg.KVPoll.Failed) for x in st), s.poll, r.poll)
    assert st == [sg.KVPoll.Success, sg.KVPoll.Success], st
    for b in range(2 * L):
        for sp, dp in zip(src_pages, dst_pages):
            assert torch.equal(dst.page(b, dp), src.page(b, sp)), (b, sp, dp)
    assert float(dst.page(0, 10).abs().sum()) == 0.0     # pages not granted stay untouched
    assert torch.equal(dst.aux[6], src.aux[2]) and int(dst.aux[5].abs().sum()) == 0
    with pytest.raises(sg.KVTransferError, match="not failed"):
        s.failure_exception()
    pm.close(); dm.close()


@pytest.mark.parametrize("driver", ["tcp", "shm"])
def test_decode_with_another_page_size(boot, tmp_path, driver):
    """Prefill pages of 4 tokens, decode pages of 8: a 21-token request (6 prefill
    pages, 3 decode pages, the last one part full) lands token by token."""
    src, dst, pm, dm = managers(boot, tmp_path, driver, dst_page=2 * PAGE)
    assert pm.kv.geom is not None and dm.kv.geom is not None
    n, src_pages, dst_pages = 21, [3, 9, 4, 20, 5, 21], [7, 0, 12]
    s = sg.KVSender(pm, boot.addr, 99)
    r = sg.KVReceiver(dm, boot.addr, 99)
    until(lambda st: st[0] == sg.KVPoll.WaitingForInput, r.poll)
    r.init(dst_pages, aux_index=1, num_tokens=n)
    until(lambda st: st[0] == sg.KVPoll.WaitingForInput, s.poll)
    s.init(len(src_pages), aux_index=3)
    s.send(src_pages)
    st = until(lambda st: all(x in (sg.KVPoll.Success, sg.KVPoll.Failed) for x in st), s.poll, r.poll)
    assert st == [sg.KVPoll.Success, sg.KVPoll.Success], (st, r._exc, s._exc)
    for b in range(2 * L):
        for t in range(n):
            assert torch.equal(dst.token(b, dst_pages, t), src.token(b, src_pages, t)), (b, t)
        for t in range(n, 3 * 2 * PAGE):           # the rest of the last decode page
            assert float(dst.token(b, dst_pages, t).abs().sum()) == 0.0, (b, t)
    assert torch.equal(dst.aux[1], src.aux[3])
    pm.close(); dm.close()


def test_receiver_abort_is_a_fence_and_the_sender_fails(boot, tmp_path):
    src, dst, pm, dm = managers(boot, tmp_path)
    s = sg.KVSender(pm, boot.addr, 7)
    r = sg.KVReceiver(dm, boot.addr, 7)
    until(lambda st: st[0] == sg.KVPoll.WaitingForInput, r.poll)
    r.init([1, 2, 3], aux_index=0)
    until(lambda st: st[0] == sg.KVPoll.WaitingForInput, s.poll)
    r.abort()
    assert r.poll() == sg.KVPoll.Failed
    s.init(3, 0)
    s.send([4, 5, 6])
    st = until(lambda st: st[0] in (sg.KVPoll.Success, sg.KVPoll.Failed), s.poll)
    assert st == [sg.KVPoll.Failed]
    with pytest.raises(sg.KVTransferError) as ei:
        s.failure_exception()
    assert ei.value.bootstrap_room == 7 and "KVW_ERR_" in ei.value.failure_reason
    for _ in range(50):
        dm.progress(0.002)
        pm.progress(0)
    for b in range(2 * L):
        assert float(dst.page(b, 1).abs().sum()) == 0.0, "bytes landed after abort()"
    pm.close(); dm.close()


def test_sender_abort_fails_the_receiver(boot, tmp_path):
    """As in SGLang, each side runs in its own process; here the prefill side
    gets a thread (a sender's abort waits for the receiver's acknowledgement)."""
    import queue
    import threading
    src, dst, pm, dm = managers(boot, tmp_path)
    jobs, stop = queue.Queue(), threading.Event()

    def prefill_loop():
        while not stop.is_set():
            while not jobs.empty():
                fn, out, ev = jobs.get()
                out.append(fn())
                ev.set()
            pm.progress(0.001)

    def on_prefill(fn):
        out, ev = [], threading.Event()
        jobs.put((fn, out, ev))
        assert ev.wait(10)
        return out[0]
    th = threading.Thread(target=prefill_loop, daemon=True)
    th.start()
    _MGRS[:] = [dm]
    s = on_prefill(lambda: sg.KVSender(pm, boot.addr, 8))
    r = sg.KVReceiver(dm, boot.addr, 8)
    until(lambda st: st[0] == sg.KVPoll.WaitingForInput, r.poll)
    r.init([1, 2], aux_index=1)
    until(lambda st: st[0] == sg.KVPoll.WaitingForInput, lambda: on_prefill(s.poll))
    dstop = threading.Event()        # the decode server keeps running meanwhile (acks aborts)
    dth = threading.Thread(target=lambda: [dm.progress(0.001) for _ in iter(dstop.is_set, True)])
    dth.start()
    t_abort = time.monotonic()
    on_prefill(s.abort)
    dstop.set()
    dth.join(10)
    assert time.monotonic() - t_abort < 1.0, "the sender's abort waited for an acknowledgement"
    assert on_prefill(s.poll) == sg.KVPoll.Failed
    t = time.monotonic()
    st = until(lambda st: st[0] in (sg.KVPoll.Success, sg.KVPoll.Failed), r.poll, timeout=15)
    assert st == [sg.KVPoll.Failed]
    assert time.monotonic() - t < 2, "the decode learnt of the abort only at its deadline"
    with pytest.raises(sg.KVTransferError, match="ABORTED"):
        r.failure_exception()
    stop.set()
    th.join(10)
    pm.close(); dm.close()


def test_unknown_prefill_rank_and_unpulled_room(boot, tmp_path):
    src, dst, pm, dm = managers(boot, tmp_path, timeout=0.5)
    r = sg.KVReceiver(dm, boot.addr, 9, prefill_engine_rank=5)
    assert r.poll() == sg.KVPoll.Failed
    with pytest.raises(sg.KVTransferError, match="bootstrap"):
        r.failure_exception()
    s = sg.KVSender(pm, boot.addr, 10)        # nobody ever asks for room 10
    st = until(lambda st: st[0] == sg.KVPoll.Failed, s.poll, timeout=5)
    with pytest.raises(sg.KVTransferError, match="no decode receiver"):
        s.failure_exception()
    pm.close(); dm.close()


def test_many_rooms_at_once(boot, tmp_path):
    src, dst, pm, dm = managers(boot, tmp_path)
    pairs = []
    for i in range(8):
        s = sg.KVSender(pm, boot.addr, 100 + i)
        r = sg.KVReceiver(dm, boot.addr, 100 + i)
        pairs.append((s, r, [i * 2, i * 2 + 1], [31 - i * 2, 30 - i * 2]))
    for s, r, sp, dp in pairs:
        until(lambda st: st[0] == sg.KVPoll.WaitingForInput, r.poll)
        r.init(dp, aux_index=None)
    for s, r, sp, dp in pairs:
        until(lambda st: st[0] == sg.KVPoll.WaitingForInput, s.poll)
        s.init(2)
        s.send(sp)
    polls = [p.poll for s, r, *_ in pairs for p in (s, r)]
    st = until(lambda st: all(x in (sg.KVPoll.Success, sg.KVPoll.Failed) for x in st), *polls)
    assert all(x == sg.KVPoll.Success for x in st), st
    for s, r, sp, dp in pairs:
        for b in range(2 * L):
            for a, c in zip(sp, dp):
                assert torch.equal(dst.page(b, c), src.page(b, a))
    pm.close(); dm.close()
