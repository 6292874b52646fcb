# SPDX-License-Identifier: MIT
"""Every public call of the binding, on the real libkvwire (shm and tcp in one
process), errors as exceptions with sentences, numpy/torch/bytearray/mmap pools."""
from __future__ import annotations

import mmap
import pickle
import select
import time

import pytest

from conftest import pair

import kvwire
from kvwire import _abi

np = pytest.importorskip("numpy", reason="python3-numpy missing (scripts/install-deps.sh)")

DRIVERS = ["shm", "tcp"]


# ------------------------------------------------------------------ module level
def test_strerror_drivers_and_version():
    assert kvwire.strerror(-4).startswith("KVW_ERR_TIMEDOUT")
    assert "shm" in kvwire.drivers_built() and "tcp" in kvwire.drivers_built()
    assert kvwire.library_version() == _abi.ABI_VERSION_STRING == kvwire.__version__


def test_config_table_and_values():
    tab = kvwire.config_table()
    names = {e.name for e in tab}
    assert {"timeout_ms", "keepalive_ms", "rails", "spin_us"} <= names
    assert all(e.help for e in tab)
    with kvwire.Config(timeout_ms=1234) as cfg:
        assert cfg.get("timeout_ms") == "1234"
        cfg["rails"] = 2
        assert cfg["rails"] == "2"
        assert cfg.as_dict()["timeout_ms"] == "1234"
        with pytest.raises(kvwire.KvwireError) as ei:
            cfg.set("no_such_option", 1)
        assert ei.value.status < 0 and ei.value.sentence, "a config error must carry a sentence"
        assert "no_such_option" in str(ei.value)
        with pytest.raises(kvwire.InvalidError) as ei:
            cfg.set("rails", "many")
        assert ei.value.sentence
    with pytest.raises(kvwire.ClosedError):
        cfg.get("rails")


def test_context_from_config_mapping_and_kwargs():
    with kvwire.Context({"timeout_ms": 777}, keepalive_ms=100) as c:
        assert c.timeout_s == pytest.approx(0.777)
        assert c.keepalive_s == pytest.approx(0.1)
        assert c.last_error == ""
        assert c.fd >= 0 and c.fileno() == c.fd
        c.progress()
        c.wait(0)
        assert c.poll() == []
        t = time.monotonic()
        assert c.poll(0.05) == []
        assert time.monotonic() - t >= 0.04
    assert c.closed
    with pytest.raises(kvwire.ClosedError):
        c.progress()
    with pytest.raises(kvwire.InvalidError) as ei:
        kvwire.Context(rails=0)
    assert "rails" in str(ei.value)


def test_log_callback_receives_library_lines(tmp_path):
    lines = []
    with kvwire.Context(log_level=4) as c:
        c.set_log(lambda lvl, line: lines.append((lvl, line)))
        with pytest.raises(kvwire.KvwireError):
            c.connect(f"shm://{tmp_path}/nobody.sock", timeout=0.5)
        c.set_log(None)
    assert lines, "log_level=4 with a callback: no line came"
    assert all(1 <= lvl <= 4 and isinstance(s, str) for lvl, s in lines)


# ------------------------------------------------------------------ memory
def test_memory_alloc_views_and_close(ctx):
    m = ctx.alloc(1 << 16)
    assert len(m) == m.nbytes == 1 << 16 and m.addr and m.allocated and m.reg_ns > 0
    a = m.numpy("uint32")
    a[:] = np.arange(a.size, dtype=np.uint32)
    assert m.view()[4] == 1
    with pytest.raises(kvwire.BusyError) as ei:
        m.close()
    assert "view" in str(ei.value)
    del a
    m.close()
    with pytest.raises(kvwire.ClosedError):
        m.numpy()


def test_memory_torch_view_of_alloc(ctx):
    torch = pytest.importorskip("torch", reason="python3-torch missing")
    m = ctx.alloc(4096)
    t = m.torch(torch.float32, (32, 32))
    t.fill_(2.5)
    assert m.numpy("float32")[1023] == 2.5
    with pytest.raises(kvwire.BusyError):
        m.close()
    del t
    m.close()


def test_register_numpy_torch_bytearray_mmap_address(ctx):
    torch = pytest.importorskip("torch", reason="python3-torch missing")
    arr = np.zeros((4, 1024), dtype=np.float16)
    m1 = ctx.register(arr)
    assert m1.addr == arr.ctypes.data and m1.nbytes == arr.nbytes and m1.owner is arr
    t = torch.zeros(3, 5, dtype=torch.bfloat16)
    m2 = ctx.register(t)
    assert m2.addr == t.data_ptr() and m2.nbytes == 30
    ba = bytearray(8192)
    m3 = ctx.register(ba)
    with pytest.raises(BufferError):
        ba.extend(b"x")   # the registration pins the buffer: no resize under kvwire
    mm = mmap.mmap(-1, 1 << 20)
    m4 = ctx.register(mm)
    assert m4.nbytes == 1 << 20
    m5 = ctx.register(arr.ctypes.data, nbytes=1024)
    for m in (m1, m2, m3, m4, m5):
        m.close()
    ba.extend(b"x")       # released
    mm.close()


def test_register_refuses_what_it_cannot_use(ctx):
    torch = pytest.importorskip("torch", reason="python3-torch missing")
    with pytest.raises(kvwire.InvalidError, match="read-only"):
        ctx.register(b"abc")
    ro = np.zeros(16)
    ro.flags.writeable = False
    with pytest.raises(kvwire.InvalidError, match="read-only"):
        ctx.register(ro)
    with pytest.raises(kvwire.InvalidError, match="contiguous"):
        ctx.register(np.zeros((8, 8))[:, ::2])
    with pytest.raises(kvwire.InvalidError, match="contiguous"):
        ctx.register(torch.zeros(8, 8).t())
    with pytest.raises(kvwire.InvalidError, match="neither a buffer"):
        ctx.register(object())
    with pytest.raises(kvwire.InvalidError, match="nbytes"):
        ctx.register(12345)
    with pytest.raises(kvwire.KvwireError) as ei:
        ctx.alloc(0)
    assert ei.value.status < 0


# ------------------------------------------------------------------ layout
def test_layout_offsets_runs_and_bounds(ctx):
    m = ctx.alloc(4 * 8 * 4096)
    lay = kvwire.Layout(m, n_layers=4, n_blocks=8, block_bytes=4096)
    assert lay.layer_stride == 8 * 4096 and lay.block_stride == 4096
    assert lay.offset(2, 3) == 2 * 8 * 4096 + 3 * 4096
    assert lay.runs([0, 1, 2, 3]) == 1
    assert lay.runs([0, 2, 4]) == 3
    assert lay.runs(np.array([5, 6, 7, 1], dtype=np.int64)) == 2
    assert lay.seq_bytes(3) == 3 * 4 * 4096
    pg = lay.page(1, 2)
    pg[:] = 7
    assert m.numpy()[lay.offset(1, 2)] == 7
    del pg
    lay2 = kvwire.Layout(m, n_layers=2, n_blocks=8, block_bytes=2048, block_stride=4096,
                         layer_offsets=[4096 * 8 * 3, 2048])
    assert lay2.offset(0, 1) == 4096 * 8 * 3 + 4096 and lay2.layer_offset(1) == 2048
    with pytest.raises(kvwire.RejectedError) as ei:
        kvwire.Layout(m, n_layers=5, n_blocks=8, block_bytes=4096)
    assert "beyond the registered memory" in ei.value.sentence
    with pytest.raises(kvwire.InvalidError):
        kvwire.Layout(m, n_layers=2, n_blocks=8, block_bytes=4096, layer_offsets=[0])
    lay.close()
    lay2.close()
    with pytest.raises(kvwire.ClosedError):
        lay.runs([0])
    m.close()


# ------------------------------------------------------------------ endpoints
@pytest.mark.parametrize("driver", DRIVERS)
def test_listen_connect_accept_info_counters_ping(ctx, driver, tmp_path):
    cl, sv, lsn = pair(ctx, driver, tmp_path)
    assert lsn.uri.startswith(driver + "://")
    if driver == "tcp":
        assert not lsn.uri.endswith(":0")
    assert cl.ready and sv.ready and cl.status == 0
    cl.check()
    info = cl.info()
    assert info.driver == driver and info.rails >= 1 and info.id > 0
    assert isinstance(info.caps, frozenset)
    if driver == "shm":
        assert "same_host" in info.caps
    assert cl.driver == driver
    # one holder, the peer's random incarnation, what the endpoint holds
    assert info.refs == 1 and info.peer_incarnation != 0
    assert info.fds >= info.rails and info.qps == 0 and info.resource_bytes > 8192
    rtt = cl.ping(2.0)
    assert 0 < rtt < 2.0
    c = cl.counters()
    assert c.frames_tx > 0 and c.rails == len(c.rail) >= 1
    assert lsn.accept(0) is None
    t = time.monotonic()
    assert lsn.accept(0.1) is None
    assert time.monotonic() - t >= 0.09
    lsn.close()
    cl.close()
    assert cl.closed and cl.status == _abi.KVW_ERR_CLOSED
    with pytest.raises(kvwire.ClosedError):
        cl.ping()


def test_connect_start_and_wait_connected(tmp_path):
    with kvwire.Context() as srv, kvwire.Context() as cli:
        lsn = srv.listen(f"shm://{tmp_path}/cs.sock")
        ep = cli.connect(lsn.uri, wait=False)
        got = None
        end = time.monotonic() + 5
        while (ep.status == kvwire.INPROGRESS or got is None) and time.monotonic() < end:
            cli.poll(0)
            got = got or lsn.accept(0)
        assert got is not None and ep.ready
        ep.wait_connected(1)


def test_connect_errors_are_exceptions_with_sentences(ctx, tmp_path):
    with pytest.raises(kvwire.KvwireError) as ei:
        ctx.connect(f"shm://{tmp_path}/nobody.sock", timeout=1)
    e = ei.value
    assert isinstance(e, (kvwire.ConnRefusedError, kvwire.NotFoundError, kvwire.IOFailedError))
    assert e.sentence and e.sentence in str(e) and "kvw_connect" in str(e)
    port = __import__("conftest").free_port()
    with pytest.raises(kvwire.ConnRefusedError) as ei:
        ctx.connect(f"tcp://127.0.0.1:{port}", timeout=1)
    assert isinstance(ei.value, ConnectionRefusedError)
    assert ei.value.sentence
    with pytest.raises(kvwire.NotFoundError) as ei:
        ctx.connect("nosuch://x:1", timeout=1)
    assert "nosuch" in ei.value.sentence
    assert ctx.last_error  # the context keeps the last sentence
    with pytest.raises(kvwire.KvwireError):
        ctx.listen("tcp://256.1.1.1:1")


# ------------------------------------------------------------------ sequences
def _pools(ctx, n_layers=4, n_blocks=16, bb=8192):
    src = ctx.alloc(n_layers * n_blocks * bb)
    dst = np.zeros(n_layers * n_blocks * bb, dtype=np.uint8)
    dmem = ctx.register(dst)
    a = src.numpy("uint8")
    a[:] = np.random.default_rng(1).integers(0, 256, a.size, dtype=np.uint8)
    return (src, kvwire.Layout(src, n_layers, n_blocks, bb), a,
            dmem, kvwire.Layout(dmem, n_layers, n_blocks, bb), dst)


@pytest.mark.parametrize("driver", DRIVERS)
def test_layer_by_layer_transfer_events_and_info(ctx, driver, tmp_path):
    cl, sv, _l = pair(ctx, driver, tmp_path)
    src, ls, a, dmem, ld, dst = _pools(ctx)
    sblocks, dblocks = [0, 1, 2, 3, 9], np.array([15, 3, 4, 5, 0], dtype=np.uint32)
    layers_cb = []
    r = sv.recv(11, ld, dblocks, timeout=5)
    r.add_layer_callback(lambda req, layer: layers_cb.append(layer))
    done_cb = []
    r.add_done_callback(lambda req: done_cb.append(req.status))
    assert not r.done and r.status == kvwire.INPROGRESS
    s = None
    seen = []
    for layer in range(4):
        s2 = cl.send(11, ls, sblocks, layer, layer + 1)
        assert s is None or s2 is s, "later kvw_send_seq calls return the same Request"
        s = s2
        seen += ctx.poll(0.01)
    end = time.monotonic() + 5
    while not (r.done and s.done) and time.monotonic() < end:
        seen += ctx.poll(0.2)
    r.wait(0)
    s.wait(0)
    assert r.ok and s.ok and r.exception() is None
    assert sorted(layers_cb) == [0, 1, 2, 3] and done_cb == [0]
    assert r.layers_done == frozenset(range(4)) == s.layers_done
    types = {(e.type, e.request is r) for e in seen}
    assert ("seq", True) in types and ("layer", True) in types
    for e in seen:
        assert e.request in (r, s) and e.seq_id == 11
    ri, si = r.info(), s.info()
    assert ri.bytes == ri.bytes_total == 5 * 4 * 8192 and not ri.is_send and si.is_send
    assert ri.t_completed >= ri.t_first_byte > 0 and ri.layers_done == 4
    got = dst.reshape(4, 16, 8192)[:, dblocks]
    want = a.reshape(4, 16, 8192)[:, sblocks]
    assert np.array_equal(got, want)
    del a
    r.free()
    s.free()
    with pytest.raises(kvwire.ClosedError):
        r.info()


@pytest.mark.parametrize("driver", DRIVERS)
def test_send_first_then_grant(ctx, driver, tmp_path):
    cl, sv, _l = pair(ctx, driver, tmp_path)
    src, ls, a, dmem, ld, dst = _pools(ctx, 2, 4, 4096)
    s = cl.send(5, ls, [0, 1], 0, 2)
    ctx.poll(0.05)
    assert not s.done
    r = sv.recv(5, ld, [2, 3])
    r.wait(5)
    s.wait(5)
    assert np.array_equal(dst.reshape(2, 4, 4096)[:, 2:4], a.reshape(2, 4, 4096)[:, 0:2])
    del a


def test_wait_layer_and_wait_timeout(ctx, tmp_path):
    cl, sv, _l = pair(ctx, "tcp", tmp_path)
    src, ls, a, dmem, ld, dst = _pools(ctx)
    del a
    r = sv.recv(3, ld, [0, 1], timeout=5)
    with pytest.raises(kvwire.WaitTimeout):
        r.wait(0.05)
    with pytest.raises(kvwire.WaitTimeout):
        r.wait_layer(0, 0.05)
    assert not isinstance(kvwire.WaitTimeout("x"), kvwire.KvwireError)
    s = cl.send(3, ls, [4, 5], 0, 1)
    r.wait_layer(0, 5)
    assert 0 in r.layers_done and not r.done
    cl.send(3, ls, [4, 5], 1, 4)
    r.wait(5)
    s.wait(5)


def test_grant_refused_outside_the_layout(ctx, tmp_path):
    cl, sv, _l = pair(ctx, "shm", tmp_path)
    src, ls, a, dmem, ld, dst = _pools(ctx)
    del a
    with pytest.raises(kvwire.RejectedError) as ei:
        sv.recv(1, ld, [0, 99])
    assert "outside the layout" in ei.value.sentence and isinstance(ei.value, PermissionError)
    with pytest.raises(kvwire.InvalidError):
        sv.recv(1, ld, [])
    with pytest.raises(kvwire.InvalidError):
        sv.recv(1, ld, [-1])
    r = sv.recv(2, ld, [0])
    with pytest.raises(kvwire.BusyError) as ei:
        sv.recv(2, ld, [1])
    assert "already has a live grant" in ei.value.sentence
    with pytest.raises(kvwire.BusyError):
        r.free()
    r.abort()
    assert r.status == _abi.KVW_ERR_ABORTED
    r.free()


def test_shape_mismatch_rejected_on_both_sides(ctx, tmp_path):
    cl, sv, _l = pair(ctx, "tcp", tmp_path)
    src, ls, a, dmem, ld, dst = _pools(ctx)
    del a
    r = sv.recv(8, ld, [0, 1, 2])
    s = cl.send(8, ls, [0, 1], 0, 4)
    with pytest.raises(kvwire.RejectedError) as ei:
        s.wait(5)
    assert ei.value.where.startswith("send of sequence 8")
    with pytest.raises(kvwire.KvwireError):
        r.wait(5)


def test_deadline_from_python_times_out_with_sentence(ctx, tmp_path):
    cl, sv, _l = pair(ctx, "shm", tmp_path)
    src, ls, a, dmem, ld, dst = _pools(ctx)
    del a
    t = time.monotonic()
    r = sv.recv(21, ld, [0, 1], timeout=0.2)
    with pytest.raises(kvwire.TimedOutError) as ei:
        r.wait(5)
    took = time.monotonic() - t
    assert 0.18 <= took < 1.5, took
    e = ei.value
    assert isinstance(e, TimeoutError) and e.status == _abi.KVW_ERR_TIMEDOUT
    assert "deadline" in e.sentence and "21" in e.sentence, e.sentence
    # set_timeout on a running request moves its deadline
    r2 = sv.recv(22, ld, [2], timeout=30)
    r2.set_timeout(0.1)
    with pytest.raises(kvwire.TimedOutError):
        r2.wait(5)
    with pytest.raises(kvwire.InvalidError):
        r2.set_timeout(1)   # finished: no deadline to move


def test_abort_is_a_fence_from_python(ctx, tmp_path):
    cl, sv, _l = pair(ctx, "tcp", tmp_path)
    n_layers, n_blocks, bb = 8, 64, 64 << 10
    src = ctx.alloc(n_layers * n_blocks * bb)
    ls = kvwire.Layout(src, n_layers, n_blocks, bb)
    dst = np.zeros(n_layers * n_blocks * bb, dtype=np.uint8)
    ld = kvwire.Layout(ctx.register(dst), n_layers, n_blocks, bb)
    a = src.numpy()
    a[:] = 0xAB
    del a
    blocks = list(range(n_blocks))
    r = sv.recv(30, ld, blocks, timeout=10)
    s = cl.send(30, ls, blocks, 0, 1)   # one layer; the rest never comes
    r.wait_layer(0, 5)
    r.abort()
    assert r.status == _abi.KVW_ERR_ABORTED
    snapshot = dst.copy()
    cl.send(30, ls, blocks, 1, n_layers)   # the sender goes on as if nothing happened
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        ctx.poll(0.01)
    assert np.array_equal(snapshot, dst), "bytes landed after kvw_req_abort returned"
    with pytest.raises(kvwire.AbortedError) as ei:
        r.wait(1)
    assert ei.value.status == _abi.KVW_ERR_ABORTED
    with pytest.raises(kvwire.KvwireError):
        s.wait(5)
    assert not snapshot.reshape(n_layers, -1)[1:].any()


def test_request_context_manager_aborts_and_frees(ctx, tmp_path):
    cl, sv, _l = pair(ctx, "shm", tmp_path)
    src, ls, a, dmem, ld, dst = _pools(ctx)
    del a
    with sv.recv(40, ld, [0]) as r:
        assert not r.done
    assert r.status == _abi.KVW_ERR_ABORTED
    with pytest.raises(kvwire.ClosedError):
        r.info()


def test_fd_becomes_readable_when_work_arrives(ctx, tmp_path):
    cl, sv, _l = pair(ctx, "tcp", tmp_path)
    src, ls, a, dmem, ld, dst = _pools(ctx, 1, 2, 4096)
    del a
    ctx.poll(0.05)
    r = sv.recv(50, ld, [0])
    ctx.poll(0)
    cl.send(50, ls, [1], 0, 1)
    ctx.progress()          # the pass that writes the frames; nobody reads them yet
    rd, _, _ = select.select([ctx.fd], [], [], 2.0)
    assert rd == [ctx.fd]
    r.wait(5)


# ------------------------------------------------------------------ errors
def test_every_status_maps_to_its_exception_and_builtin():
    pairs = {
        _abi.KVW_ERR_INVALID: ValueError, _abi.KVW_ERR_NOMEM: MemoryError,
        _abi.KVW_ERR_TIMEDOUT: TimeoutError, _abi.KVW_ERR_PEER_DEAD: ConnectionError,
        _abi.KVW_ERR_CONNREFUSED: ConnectionRefusedError, _abi.KVW_ERR_NOT_FOUND: LookupError,
        _abi.KVW_ERR_REJECTED: PermissionError, _abi.KVW_ERR_AUTH: PermissionError,
        _abi.KVW_ERR_IO: OSError, _abi.KVW_ERR_UNSUPPORTED: NotImplementedError,
    }
    for st in _abi.STATUS_NAMES:
        if st >= 0:
            continue
        cls = kvwire.error_class(st)
        e = kvwire.errors.make_error(st, "somewhere", "do this", kvwire.strerror(st))
        assert type(e) is cls and e.status == st and e.status_name == _abi.STATUS_NAMES[st]
        assert str(e) == f"somewhere: {kvwire.strerror(st)} -- do this"
        if st in pairs:
            assert isinstance(e, pairs[st])
        e2 = pickle.loads(pickle.dumps(e))
        assert type(e2) is cls and str(e2) == str(e) and e2.sentence == "do this"
