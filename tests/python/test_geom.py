# SPDX-License-Identifier: MIT
"""Heterogeneous KV geometries from Python (kvwire.Geometry,
Layout.from_geometry, tokens=/heads= on recv and send): a vLLM-style NHD
cache of 16-token blocks into a head-major cache of 64-token blocks, a
tensor-parallel decode rank taking half the heads, a cached prefix, and a
foreign head size refused. Every element is checked against its logical
coordinate (layer, K/V, token, head), and what was not granted is untouched."""
from __future__ import annotations

import time

import pytest

from conftest import pair

import kvwire

np = pytest.importorskip("numpy", reason="python3-numpy missing (scripts/install-deps.sh)")

L, H, D = 4, 8, 32          # layers, KV heads, head_dim (fp16)


def _stamp(layer, kv, token, head):
    """The fp16 bit pattern element d of (layer, kv, token, head) carries."""
    base = ((layer * 2 + kv) * 4096 + token) * 64 + head
    return (base * 64 + np.arange(D, dtype=np.uint64)) % 65521


def _side(ctx, kind, n_blocks, block_tokens, heads=None):
    g = kvwire.Geometry(kind, n_layers=L, n_blocks=n_blocks, block_tokens=block_tokens,
                        head_dim=D, num_heads=H, elem_bytes=2, heads=heads)
    mem = ctx.alloc(g.nbytes)
    arr = mem.numpy("uint16")
    arr[:] = 0xBEEF
    return g, mem, kvwire.Layout.from_geometry(mem, g), arr


def _fill(g, arr, table, tokens):
    for t in range(tokens):
        b, slot = table[t // g.block_tokens], t % g.block_tokens
        for layer in range(L):
            for kv in range(2):
                for h in range(g.h0, g.h1):
                    o = g.offset(layer, kv, b, slot, h) // 2
                    arr[o:o + D] = _stamp(layer, kv, t, h)


def _check(g, arr, table, t0, t1, heads):
    """Tokens [t0, t1) and heads hold their stamps; every other element of the
    arena still holds the canary."""
    want = np.full_like(arr, 0xBEEF)
    for t in range(t0, t1):
        b, slot = table[t // g.block_tokens], t % g.block_tokens
        for layer in range(L):
            for kv in range(2):
                for h in range(heads[0], heads[1]):
                    o = g.offset(layer, kv, b, slot, h) // 2
                    want[o:o + D] = _stamp(layer, kv, t, h)
    bad = np.nonzero(arr != want)[0]
    assert bad.size == 0, f"{bad.size} elements differ, first at element {bad[0]}"


def _move(ctx, cl, sv, seq, sl, stable, ntok, dl, dtable, **grant):
    r = sv.recv(seq, dl, dtable, timeout=10, **grant)
    s = cl.send(seq, sl, stable, 0, L, tokens=(0, ntok))
    end = time.monotonic() + 15
    while not (r.done and s.done) and time.monotonic() < end:
        ctx.poll(0.05)
    return r, s


@pytest.mark.parametrize("driver", ["shm", "tcp"])
def test_nhd16_into_hnd64_ending_mid_block(ctx, driver, tmp_path):
    cl, sv, _l = pair(ctx, driver, tmp_path)
    ntok = 150                                    # 9.4 source blocks, 2.3 destination ones
    sg, _sm, sl, sa = _side(ctx, "nhd", 16, 16)
    dg, _dm, dl, da = _side(ctx, "hnd", 6, 64)
    stable = [15, 2, 9, 4, 11, 0, 7, 13, 5, 1]
    dtable = [4, 0, 5]
    _fill(sg, sa, stable, ntok)
    r, s = _move(ctx, cl, sv, 7, sl, stable, ntok, dl, dtable, tokens=(0, ntok))
    r.wait(0)
    s.wait(0)
    assert r.ok and s.ok
    _check(dg, da, dtable, 0, ntok, (0, H))
    assert r.info().bytes == ntok * L * 2 * H * D * 2


def test_tensor_parallel_rank_and_cached_prefix(ctx, tmp_path):
    """Decode rank 1 of TP=2 holds heads [4, 8) in 32-token FlashInfer blocks; it
    has tokens [0, 40) cached and asks for [40, 100) of its heads only."""
    cl, sv, _l = pair(ctx, "shm", tmp_path)
    sg, _sm, sl, sa = _side(ctx, "nhd", 8, 16)
    dg, _dm, dl, da = _side(ctx, "flashinfer", 5, 32, heads=(4, 8))
    stable = [7, 6, 5, 4, 3, 2, 1]
    dtable = [3, 1, 4, 0]
    _fill(sg, sa, stable, 100)
    r, s = _move(ctx, cl, sv, 8, sl, stable, 100, dl, dtable, tokens=(40, 100))
    r.wait(0)
    s.wait(0)
    _check(dg, da, dtable, 40, 100, (4, 8))


def test_foreign_head_dim_rejected_with_a_sentence(ctx, tmp_path):
    cl, sv, _l = pair(ctx, "shm", tmp_path)
    sg, _sm, sl, sa = _side(ctx, "nhd", 4, 16)
    g = kvwire.Geometry("hnd", n_layers=L, n_blocks=2, block_tokens=64, head_dim=2 * D,
                        num_heads=H)
    dm = ctx.alloc(g.nbytes)
    dl = kvwire.Layout.from_geometry(dm, g)
    r, s = _move(ctx, cl, sv, 9, sl, [0, 1, 2, 3], 64, dl, [1], tokens=(0, 64))
    with pytest.raises(kvwire.RejectedError) as ei:
        s.wait(0)
    assert "head" in str(ei.value)
    with pytest.raises(kvwire.KvwireError):
        r.wait(0)


def test_geometry_checks_and_reads_back():
    g = kvwire.Geometry("hnd", n_layers=2, n_blocks=3, block_tokens=64, head_dim=128,
                        num_heads=8, heads=(2, 6))
    assert g.heads == (2, 6) and g.n_kv == 2
    assert g.token_stride == 128 * 2 and g.head_stride == 64 * 128 * 2
    assert g.block_bytes == 2 * 64 * 4 * 128 * 2
    assert g.offset(1, 1, 2, 3, 5) == (g.kv_base(1, 1) + 2 * g.block_stride + 3 * g.token_stride
                                       + 3 * g.head_stride)
    with pytest.raises(kvwire.InvalidError):
        kvwire.Geometry("nhd", n_layers=2, n_blocks=3, block_tokens=16, head_dim=128,
                        num_heads=8, heads=(6, 2))
    with pytest.raises(kvwire.InvalidError):
        kvwire.Geometry("tiled", n_layers=2, n_blocks=3, block_tokens=16, head_dim=128)
    with pytest.raises(kvwire.InvalidError):
        kvwire.Geometry("nhd", n_layers=2, n_blocks=3, block_tokens=16, head_dim=128,
                        num_heads=8, kv_offsets=[0, 1])


@pytest.mark.parametrize("driver", ["shm", "tcp"])
def test_fanin_two_prefill_ranks_one_request(ctx, driver, tmp_path):
    """Endpoint.recv_fanin (kvw_recv_seq_fanin): two prefill ranks (TP 2, heads
    [0, 4) HND and [4, 8) NHD) fill one decode request; no layer event while only
    the first has sent, then one per layer, and every element in place."""
    cl0, sv0, _l0 = pair(ctx, driver, tmp_path)
    (tmp_path / "b").mkdir()
    cl1, sv1, _l1 = pair(ctx, driver, tmp_path / "b")
    ntok = 100
    g0, _m0, l0, a0 = _side(ctx, "hnd", 8, 16, heads=(0, 4))
    g1, _m1, l1, a1 = _side(ctx, "nhd", 8, 16, heads=(4, 8))
    dg, _dm, dl, da = _side(ctx, "hnd", 6, 32)
    t0, t1, dtable = [7, 0, 5, 2, 6, 1, 4], [1, 3, 5, 7, 0, 2, 4], [5, 1, 3, 0]
    _fill(g0, a0, t0, ntok)
    _fill(g1, a1, t1, ntok)
    r = sv0.recv_fanin([sv1], 41, dl, dtable, [dict(heads=(0, 4), tokens=(0, ntok)),
                                               dict(heads=(4, 8), tokens=(0, ntok))],
                       timeout=10)
    layers = []
    r.add_layer_callback(lambda _q, layer: layers.append(layer))
    s0 = cl0.send(41, l0, t0, 0, L, tokens=(0, ntok))
    end = time.monotonic() + 10
    while not s0.done and time.monotonic() < end:
        ctx.poll(0.05)
    ctx.poll(0.05)
    assert s0.ok and not r.done and layers == [], (s0.status, layers)
    s1 = cl1.send(41, l1, t1, 0, L, tokens=(0, ntok))
    r.wait(10)
    s1.wait(10)
    assert sorted(layers) == list(range(L))
    assert r.info().bytes == L * 2 * ntok * H * D * 2
    _check(dg, da, dtable, 0, ntok, (0, H))


def test_fanin_overlapping_heads_refused_with_a_sentence(ctx, tmp_path):
    cl0, sv0, _l0 = pair(ctx, "tcp", tmp_path)
    cl1, sv1, _l1 = pair(ctx, "tcp", tmp_path)
    dg, _dm, dl, _da = _side(ctx, "nhd", 4, 16)
    with pytest.raises(kvwire.InvalidError, match="overlap"):
        sv0.recv_fanin([sv1], 42, dl, [0, 1], [dict(heads=(0, 5)), dict(heads=(4, 8))])
