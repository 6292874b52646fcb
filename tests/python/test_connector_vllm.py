# SPDX-License-Identifier: MIT
"""The vLLM-shaped connector driven through vLLM's call sequence (the engine in
examples/disagg/engine.py issues the calls vLLM's scheduler and model runner
do), two engines in one process: normal transfers, chunked prefill, staging,
the layer-wise load mode, and requests finished or aborted before their
transfer ends -- blocks freed only when nothing can land in them; a decode
engine with another block size and head order than the prefill (HND 32/64
from NHD 16, staged too, a locally cached prefix left alone), and engines
that cannot meet (page mode) failing with a sentence."""
from __future__ import annotations

import dataclasses
import sys
import time

import pytest

from conftest import ROOT

torch = pytest.importorskip("torch", reason="python3-torch missing (scripts/install-deps.sh)")
sys.path.insert(0, str(ROOT / "examples" / "disagg"))

import kvwire  # noqa: E402
from kvwire.connectors import vllm as kvv  # noqa: E402
from engine import Engine, Request, prompt_tokens  # noqa: E402
from model import PRESETS  # noqa: E402

CFG = PRESETS["tiny"]
BS = CFG.block_size


def engines(tmp_path, driver="shm", pre_kv=None, dec_kv=None, dec_cfg=None, **kw):
    listen = f"shm://{tmp_path}/p.sock" if driver == "shm" else "tcp://127.0.0.1:0"
    pre = Engine(CFG, "prefill", num_blocks=128, engine_id="P",
                 kv_config={"listen": listen, "transfer_timeout_s": 10, **(pre_kv or {})},
                 max_batched_tokens=kw.get("chunk"), layer_delay=kw.get("layer_delay", 0.0))
    dec = Engine(dec_cfg or CFG, "decode", num_blocks=128, engine_id="D", block_shuffle=5,
                 kv_config={"listen": "none", "transfer_timeout_s": 10, **(dec_kv or {})})
    return pre, dec


def pump(*engs, until=None, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        busy = False
        for e in engs:
            if e.has_work():
                e.step()
                busy = True
        if until is not None and until():
            return
        if until is None and not busy:
            return
        for e in engs:
            if e.work_conn is not None:
                e.work_conn.progress(0.0005)
    raise TimeoutError("engines did not get there in time")


class Background:
    """An engine stepped on a thread of its own (its own kvwire context), so the
    other engine, on the test's thread, sees its transfer mid-way."""

    def __init__(self, eng):
        import queue
        import threading
        self.e, self.q, self.stop = eng, queue.Queue(), False
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self.stop:
            while not self.q.empty():
                self.q.get()()
            if self.e.has_work():
                self.e.step()
            else:
                self.e.work_conn.progress(0.001)

    def call(self, fn):
        """Runs fn on the engine's thread and waits for it."""
        import threading
        done, out = threading.Event(), []
        self.q.put(lambda: (out.append(fn()), done.set()))
        assert done.wait(30)
        return out[0]

    def join(self):
        self.stop = True
        self.th.join(30)


def reference(prompt, max_tokens, chunk=None):
    e = Engine(CFG, "both", num_blocks=128, max_batched_tokens=chunk)
    return e.generate(prompt, max_tokens)


def pair_requests(prompt, max_tokens, tid, pre, layerwise=True):
    rp = Request(f"{tid}-p", prompt, 1, {"do_remote_decode": True, "transfer_id": tid,
                                          "layerwise": layerwise})
    rd = Request(f"{tid}-d", prompt, max_tokens, {
        "do_remote_prefill": True, "transfer_id": tid, "remote_engine_id": "P",
        "remote_uri": pre.work_conn.uri})
    return rp, rd


def test_vllm_base_and_shapes():
    assert issubclass(kvv.KVWireConnector, kvv.KVConnectorBase_V1)
    if not kvv.HAVE_VLLM:
        assert kvv.KVConnectorBase_V1.__module__ == "kvwire.connectors._vllm_base"
    for m in ("get_num_new_matched_tokens", "update_state_after_alloc", "build_connector_meta",
              "request_finished", "register_kv_caches", "start_load_kv", "wait_for_layer_load",
              "save_kv_layer", "wait_for_save", "get_finished", "bind_connector_metadata",
              "clear_connector_metadata", "get_block_ids_with_load_errors", "shutdown"):
        assert callable(getattr(kvv.KVWireConnector, m)), m
    assert isinstance(kvv.KVWireConnectorMetadata(), kvv.KVConnectorMetadata)


@pytest.mark.parametrize("driver", ["shm", "tcp"])
def test_several_requests_in_one_batch_both_ways(tmp_path, driver):
    pre, dec = engines(tmp_path, driver)
    reqs = []
    for i, n in enumerate([3, 17, 48, 130]):
        p = prompt_tokens(10 + i, n, CFG.vocab)
        rp, rd = pair_requests(p, 5, f"t{i}", pre)
        pre.add_request(rp)
        dec.add_request(rd)
        reqs.append((p, rp, rd))
    pump(pre, dec)
    for p, rp, rd in reqs:
        ref = reference(p, 5)
        assert rd.error is None, rd.error
        assert rd.output_token_ids == ref.output_token_ids
        assert torch.equal(rd.last_logits, ref.last_logits)
        assert rp.out_params["first_token_ids"] == ref.output_token_ids[:1]
    assert pre.pool.used == 0 and dec.pool.used == 0
    pre.close(); dec.close()


def test_prefill_finished_before_its_transfer_ends_keeps_its_blocks(tmp_path):
    """request_finished returns (True, params) at once; the blocks go only when
    get_finished reports the request in finished_sending."""
    pre, dec = engines(tmp_path)
    p = prompt_tokens(1, 100, CFG.vocab)
    rp, rd = pair_requests(p, 4, "late", pre)
    pre.add_request(rp)
    pump(pre, until=lambda: rp.out_params is not None)
    assert rp.status == pre.RS.FINISHED_LENGTH_CAPPED
    held = (100 + BS - 1) // BS
    assert pre.pool.used == held and "late-p" in pre.delayed_free
    for _ in range(20):                 # nobody pulls: the blocks stay
        pre.step()
    assert pre.pool.used == held
    dec.add_request(rd)                 # the decode comes late (sequential proxy shape)
    pump(pre, dec)
    assert rd.error is None and pre.pool.used == 0 and dec.pool.used == 0
    assert rd.output_token_ids == reference(p, 4).output_token_ids
    pre.close(); dec.close()


def test_decode_aborted_while_loading_frees_blocks_only_behind_the_fence(tmp_path):
    pre, dec = engines(tmp_path, layer_delay=0.3)
    p = prompt_tokens(2, 200, CFG.vocab)
    rp, rd = pair_requests(p, 4, "ab", pre)
    dec.add_request(rd)
    bg = Background(pre)
    bg.call(lambda: pre.add_request(rp))
    wc = dec.work_conn._work()

    def landed():
        r = wc.recvs.get("ab-d")
        return r is not None and r.posted and any(q.layers_done for q in r.t.reqs.values())
    pump(dec, until=landed)
    blocks = list(rd.block_ids)
    dec.abort_request("ab-d")           # the client went away mid-transfer
    assert dec.pool.used == len(blocks) # not freed yet: the fence runs in the worker first
    pump(dec, until=lambda: dec.pool.used == 0, timeout=10)
    # the blocks are free: mark them; the prefill goes on computing and sending layers
    for c in dec.caches:
        c[:, blocks] = 7.0
    end = time.monotonic() + 20
    while bg.call(lambda: pre.pool.used) and time.monotonic() < end:
        dec.work_conn.progress(0.01)
    bg.join()
    assert pre.pool.used == 0, "the prefill never freed its blocks"
    for c in dec.caches:
        assert bool((c[:, blocks] == 7.0).all()), "bytes landed in blocks freed after the abort"
    st = pre.work_conn._work().stats["ab-p"]["status"]
    assert st == "aborted", st      # the decode's cancel reached the prefill
    pre.close(); dec.close()


def test_prefill_aborted_mid_prompt_fails_the_decode_at_once(tmp_path):
    """The prefill's client goes away between two chunks of a chunked prefill:
    nothing was pushed yet, request_finished frees its blocks at once, and the
    decode that granted blocks for it is told (ABORTED), long before its
    deadline."""
    pre, dec = engines(tmp_path, chunk=32, layer_delay=0.05,
                       dec_kv={"transfer_timeout_s": 8})
    p = prompt_tokens(3, 120, CFG.vocab)
    rp, rd = pair_requests(p, 4, "pa", pre)
    dec.add_request(rd)
    pump(dec, until=lambda: "pa-d" in dec.work_conn._work().recvs)
    bg = Background(pre)   # its own thread: a sender's abort waits for the receiver's ack
    bg.call(lambda: pre.add_request(rp))
    pump(dec, until=lambda: bg.call(lambda: rp.num_computed_tokens) >= 32)
    bg.call(lambda: pre.abort_request("pa-p"))
    assert rp.num_computed_tokens < 120
    assert bg.call(lambda: pre.pool.used) == 0, "an aborted prefill that sent nothing frees at once"
    t = time.monotonic()
    pump(dec, until=lambda: rd.error is not None, timeout=10)
    took = time.monotonic() - t
    pump(dec, until=lambda: not bg.call(lambda: pre.has_work()), timeout=10)  # acks its aborts
    bg.join()
    assert rd.error["status"] == "KVW_ERR_ABORTED", rd.error
    assert took < 1.5, f"the decode learnt of the abort after {took:.2f} s"
    assert pre.work_conn._work().agent.peers["D"].ep.ready, "the endpoint must survive the abort"
    assert rd.error["kv_layers_landed"] == 0
    assert dec.pool.used == 0
    pre.close(); dec.close()


def test_unpulled_transfer_is_freed_after_the_timeout(tmp_path):
    pre, dec = engines(tmp_path, pre_kv={"transfer_timeout_s": 0.5})
    p = prompt_tokens(4, 40, CFG.vocab)
    rp, _ = pair_requests(p, 4, "lonely", pre)
    pre.add_request(rp)
    pump(pre, until=lambda: rp.out_params is not None)
    assert pre.pool.used > 0
    t = time.monotonic()
    pump(pre, until=lambda: pre.pool.used == 0, timeout=10)
    assert 0.4 < time.monotonic() - t < 5
    assert pre.work_conn._work().stats["lonely-p"]["status"] == "not pulled"
    pre.close(); dec.close()


def test_decode_with_a_dead_prefill_uri_fails_and_frees(tmp_path):
    _pre, dec = engines(tmp_path, dec_kv={"kvwire": {"connect_timeout_ms": 500}})
    _pre.close()
    p = prompt_tokens(5, 20, CFG.vocab)
    rd = Request("dead-d", p, 4, {"do_remote_prefill": True, "transfer_id": "dead",
                                  "remote_uri": f"shm://{tmp_path}/nobody.sock"})
    granted = set()
    orig = dec.sched_conn.update_state_after_alloc
    dec.sched_conn.update_state_after_alloc = \
        lambda req, blocks, n: (granted.update(blocks.get_block_ids()[0]), orig(req, blocks, n))
    dec.add_request(rd)
    pump(dec, until=lambda: rd.error is not None, timeout=15)
    assert rd.error["status"] == "KVW_ERR_CONNREFUSED", rd.error
    assert "nobody.sock" in rd.error["message"]
    assert dec.pool.used == 0
    assert len(granted) == 2 and dec.work_conn.get_block_ids_with_load_errors() == granted
    assert dec.work_conn.get_block_ids_with_load_errors() == set()   # reported once
    dec.close()


def test_chunked_prefill_pushes_the_whole_prompt_at_its_last_chunk(tmp_path):
    pre, dec = engines(tmp_path, chunk=48)
    p = prompt_tokens(6, 150, CFG.vocab)
    rp, rd = pair_requests(p, 4, "chunk", pre)
    pre.add_request(rp)
    dec.add_request(rd)
    pump(pre, dec)
    ref = reference(p, 4, chunk=48)      # the same chunks in one process
    assert rd.error is None and rd.output_token_ids == ref.output_token_ids
    assert torch.equal(rd.last_logits, ref.last_logits)
    pre.close(); dec.close()


@pytest.mark.parametrize("driver", ["shm", "tcp"])
def test_staging_path_on_cpu_tensors(tmp_path, driver):
    """staging='always': the path CUDA caches take (host copy per layer, then
    send; landed pages copied back), run with CPU tensors."""
    pre, dec = engines(tmp_path, driver, pre_kv={"staging": "always"},
                       dec_kv={"staging": "always"})
    assert pre.work_conn._work().kv.staged and dec.work_conn._work().kv.staged
    p = prompt_tokens(7, 77, CFG.vocab)
    rp, rd = pair_requests(p, 5, "stg", pre)
    pre.add_request(rp)
    dec.add_request(rd)
    pump(pre, dec)
    ref = reference(p, 5)
    assert rd.error is None and rd.output_token_ids == ref.output_token_ids
    assert torch.equal(rd.last_logits, ref.last_logits)
    assert pre.work_conn._work().kv.stager._free == [(0, 128)]   # staging pages returned
    pre.close(); dec.close()


# prefill NHD blocks of 16 (vLLM FlashAttention); the decode head-major (NIXL's
# HND) with blocks of 32 or 64. Prompt lengths: inside one decode block,
# mid-block on both sides, and 40 decode blocks (> a 32-block table page).
MIXED = [("HND", 32, [3, 77, 1250]), ("HND", 64, [50, 130])]


@pytest.mark.parametrize("driver", ["shm", "tcp"])
@pytest.mark.parametrize("layout,bs,lengths", MIXED, ids=lambda x: str(x))
def test_decode_with_another_block_size_and_head_order(tmp_path, driver, layout, bs, lengths):
    """Each side's cache is a kvwire Geometry; a request moves as tokens [0, n):
    the decode's tokens and final logits equal one process's, bit for bit."""
    dcfg = dataclasses.replace(CFG, block_size=bs, kv_layout=layout)
    pre, dec = engines(tmp_path, driver, dec_cfg=dcfg)
    assert tuple(dec.kv_caches[dec.layer_names[0]].shape[2:4]) == (CFG.kv_heads, bs)
    reqs = []
    for i, n in enumerate(lengths):
        p = prompt_tokens(40 + i, n, CFG.vocab)
        rp, rd = pair_requests(p, 4, f"m{i}", pre)
        pre.add_request(rp)
        dec.add_request(rd)
        reqs.append((p, rp, rd))
    pump(pre, dec)
    for p, rp, rd in reqs:
        ref = reference(p, 4)
        assert rd.error is None, rd.error
        assert rd.output_token_ids == ref.output_token_ids, len(p)
        assert torch.equal(rd.last_logits, ref.last_logits), len(p)
        params = rp.out_params
        assert (params["remote_block_size"], params["remote_kv_layout"]) == (16, "NHD")
    assert pre.pool.used == 0 and dec.pool.used == 0
    pre.close(); dec.close()


def test_a_locally_cached_prefix_is_not_granted(tmp_path):
    """A decode with tokens [0, 32) in its prefix cache (vLLM passes them as
    num_computed_tokens to get_num_new_matched_tokens) grants tokens [32, n)
    only: its first block keeps what it held, the rest is the prefill's KV
    (another block size and head order: NHD 16 -> HND 32)."""
    dcfg = dataclasses.replace(CFG, block_size=32, kv_layout="HND")
    pre, dec = engines(tmp_path, "shm", dec_cfg=dcfg)
    n, hit = 77, 32
    p = prompt_tokens(12, n, CFG.vocab)
    rp, rd = pair_requests(p, 2, "pfx", pre)
    rd.num_computed_tokens = hit              # as if the engine's prefix cache had them
    tables = {}
    for e in (pre, dec):
        orig = e.sched_conn.update_state_after_alloc

        def spy(req, blocks, ext, orig=orig):
            tables[req.request_id] = list(blocks.get_block_ids()[0])
            orig(req, blocks, ext)
        e.sched_conn.update_state_after_alloc = spy
    pre.add_request(rp)
    dec.add_request(rd)
    pump(pre, dec)
    assert rd.error is None, rd.error
    pt, dt = tables["pfx-p"], tables["pfx-d"]
    for name in dec.layer_names:
        src, dst = pre.kv_caches[name], dec.kv_caches[name]
        for kv in (0, 1):
            for t in range(n):
                got = dst[kv, dt[t // 32], :, t % 32]         # HND: [heads, tokens, dim]
                if t < hit:
                    assert float(got.abs().sum()) == 0.0, (name, kv, t)
                else:
                    assert torch.equal(got, src[kv, pt[t // 16], t % 16]), (name, kv, t)
    pre.close(); dec.close()


def test_mixed_geometry_through_staging(tmp_path):
    """staging='always' on both sides (the CUDA path, on CPU tensors): the staging
    pages keep each side's own block size and head order."""
    dcfg = dataclasses.replace(CFG, block_size=32, kv_layout="HND")
    pre, dec = engines(tmp_path, "tcp", pre_kv={"staging": "always"},
                       dec_kv={"staging": "always"}, dec_cfg=dcfg)
    p = prompt_tokens(9, 77, CFG.vocab)
    rp, rd = pair_requests(p, 4, "mstg", pre)
    pre.add_request(rp)
    dec.add_request(rd)
    pump(pre, dec)
    ref = reference(p, 4)
    assert rd.error is None and rd.output_token_ids == ref.output_token_ids
    assert torch.equal(rd.last_logits, ref.last_logits)
    pre.close(); dec.close()


def test_page_mode_with_another_block_size_fails_with_a_sentence(tmp_path):
    """geometry false (whole pages, as before) cannot meet another block size: the
    decode fails the request before granting anything, saying what to set."""
    dcfg = dataclasses.replace(CFG, block_size=32, kv_layout="HND")
    pre, dec = engines(tmp_path, "shm", dec_cfg=dcfg, dec_kv={"geometry": False})
    p = prompt_tokens(3, 40, CFG.vocab)
    rp, rd = pair_requests(p, 4, "pg", pre)
    rd.kv_transfer_params.update(remote_block_size=16, remote_kv_layout="NHD")
    dec.add_request(rd)
    pump(dec, until=lambda: rd.error is not None, timeout=10)
    assert "geometry" in rd.error["message"] and "block" in rd.error["message"]
    assert dec.pool.used == 0
    pre.close(); dec.close()


@pytest.mark.parametrize("told", [True, False])
def test_page_mode_against_a_geometry_fails_with_a_sentence(tmp_path, told):
    """Same block size, but the decode moves pages (geometry false) and the prefill
    a geometry: told (the prefill's kv_transfer_params say so), the decode fails
    before granting; not told (a proxy that sends both at once), the prefill
    refuses the pull and the decode's grant ends at once, not at its deadline.
    Neither side keeps blocks."""
    pre, dec = engines(tmp_path, "shm", dec_kv={"geometry": False})
    p = prompt_tokens(4, 40, CFG.vocab)
    rp, rd = pair_requests(p, 4, "gm", pre)
    if told:
        rd.kv_transfer_params.update(remote_kv_geometry=True)
    t0 = time.monotonic()
    pre.add_request(rp)
    dec.add_request(rd)
    pump(pre, dec, until=lambda: rd.error is not None and pre.pool.used == 0, timeout=15)
    assert time.monotonic() - t0 < 5, "failed at the deadline, not at once"
    if told:
        assert "geometry" in rd.error["message"], rd.error
    assert dec.pool.used == 0
    pre.close(); dec.close()


def test_shm_sending_from_foreign_tensors_stages(tmp_path):
    """The shm driver sends only kvw_mem_alloc memory: torch-allocated caches are
    staged automatically (and say so), tcp would send them directly."""
    ktc = kvv.KVTransferConfig(kv_role="kv_producer", engine_id="X",
                               kv_connector_extra_config={"listen": f"shm://{tmp_path}/x.sock"})
    c = kvv.KVWireConnector(kvv.VllmConfig(ktc, kvv.CacheConfig(16)), kvv.KVConnectorRole.WORKER)
    caches = {f"l{i}": torch.zeros(2, 8, 16, 2, 32) for i in range(2)}
    c.register_kv_caches(caches)
    assert c._work().kv.staged
    c.shutdown()
    ktc.kv_connector_extra_config["listen"] = "tcp://127.0.0.1:0"
    c = kvv.KVWireConnector(kvv.VllmConfig(ktc, kvv.CacheConfig(16)), kvv.KVConnectorRole.WORKER)
    c.register_kv_caches(caches)
    kv = c._work().kv
    assert not kv.staged and len(kv.groups) == 2      # a unit per layer: its K and V
    # one geometry layer per unit: its K and V regions (kvw_layout_create_geom)
    assert all(g.layout.n_layers == 1 and g.layers == [g.buffers] and g.layout.geometry is not None
               for g in kv.groups)
    assert len({g.mem.addr for g in kv.groups}) == 2  # one registered torch storage each
    c.shutdown()
    with pytest.raises(kvwire.InvalidError, match="per-layer"):
        c2 = kvv.KVWireConnector(kvv.VllmConfig(ktc, kvv.CacheConfig(16)),
                                 kvv.KVConnectorRole.WORKER)
        try:
            c2.register_kv_caches({"bad": torch.zeros(8, 16, 2, 32)})
        finally:
            c2.shutdown()


def test_layerwise_load_waits_per_layer(tmp_path):
    """load='layerwise': the decode step that loads runs with the request in the
    batch; wait_for_layer_load(layer) returns once that layer landed."""
    pre, dec = engines(tmp_path, layer_delay=0.05, dec_kv={"load": "layerwise"})
    p = prompt_tokens(8, 90, CFG.vocab)
    rp, rd = pair_requests(p, 3, "lw", pre)
    calls = []
    wc = dec.work_conn
    orig = wc.wait_for_layer_load

    def spy(name):
        orig(name)
        w = wc._work()
        li = dec.layer_names.index(name)
        for r in w.recvs.values():
            q = r.t.reqs[li]         # unit li: its K and V (one geometry layer)
            calls.append((li, q.layers_done == set(range(q.n_layers))))
    wc.wait_for_layer_load = spy
    dec.add_request(rd)
    bg = Background(pre)
    bg.call(lambda: pre.add_request(rp))
    pump(dec)
    bg.join()
    assert rd.error is None, rd.error
    assert calls and all(ok for _, ok in calls), calls
    ref = reference(p, 3)
    # the decode computed the last prompt token itself (vLLM's recompute): the
    # tokens match; the logits are the same computation up to rounding
    assert rd.output_token_ids[1:] == ref.output_token_ids[1:] or \
        rd.output_token_ids == ref.output_token_ids
    pre.close(); dec.close()


def test_call_order_is_vllms(tmp_path):
    """Record the connector calls of one request on each engine."""
    pre, dec = engines(tmp_path)
    log = []
    for tag, e in (("P", pre), ("D", dec)):
        for role, conn in (("sched", e.sched_conn), ("work", e.work_conn)):
            for m in ("get_num_new_matched_tokens", "update_state_after_alloc",
                      "build_connector_meta", "request_finished", "update_connector_output",
                      "bind_connector_metadata", "start_load_kv", "wait_for_layer_load",
                      "save_kv_layer", "wait_for_save", "get_finished",
                      "clear_connector_metadata"):
                f = getattr(conn, m)

                def wrap(*a, _f=f, _m=m, _t=tag, **k):
                    log.append((_t, _m))
                    return _f(*a, **k)
                setattr(conn, m, wrap)
    p = prompt_tokens(9, 20, CFG.vocab)
    rp, rd = pair_requests(p, 2, "ord", pre)
    pre.add_request(rp)
    dec.add_request(rd)
    pre.step()
    L = CFG.layers
    first = [m for t, m in log if t == "P"]
    assert first[:2] == ["get_num_new_matched_tokens", "update_state_after_alloc"]
    assert first[2] == "build_connector_meta"
    fwd = first[3:]
    assert fwd[:2] == ["bind_connector_metadata", "start_load_kv"]
    assert fwd[2:2 + 2 * L] == ["wait_for_layer_load", "save_kv_layer"] * L
    assert fwd[2 + 2 * L:2 + 2 * L + 3] == ["wait_for_save", "get_finished",
                                            "clear_connector_metadata"]
    assert "request_finished" in fwd     # max_tokens 1: finished in this step's update
    log.clear()
    dec.step()
    d = [m for t, m in log if t == "D"]
    assert d[:3] == ["get_num_new_matched_tokens", "update_state_after_alloc",
                     "build_connector_meta"]
    assert "save_kv_layer" not in d      # waiting for remote KV: nothing computed
    pump(pre, dec)
    assert rd.error is None
    pre.close(); dec.close()
