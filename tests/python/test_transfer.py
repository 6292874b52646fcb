# SPDX-License-Identifier: MIT
"""A Llama-3-8B 4,096-token KV cache (32 layers x 256 blocks x 64 KiB = 512 MiB)
moved between two Python processes and verified byte for byte, on shm, tcp
and dpdk (net_memif), from kvw_mem_alloc memory, numpy arrays and torch
tensors (kvwire.bench: the same transfer as `kvwire-bench kv`)."""
from __future__ import annotations

import pytest

from conftest import dpdk_reason

import kvwire
from kvwire import bench

pytest.importorskip("numpy", reason="python3-numpy missing (scripts/install-deps.sh)")

CASES = [
    # driver, send pool, recv pool
    ("shm", "alloc", "torch"),
    ("shm", "alloc", "numpy"),
    ("tcp", "numpy", "torch"),
    ("tcp", "torch", "alloc"),
]


def _run(driver, send_pool, recv_pool, n=2, pool_factor=1, extra=()):
    a = bench.options(["kv", "--driver", driver, "--model", "llama3-8b", "--tokens", "4096",
                       "-n", str(n), "--pool-factor", str(pool_factor), "--send-pool", send_pool,
                       "--recv-pool", recv_pool, "--python-only", *extra])
    return bench.run_python(a)


def test_the_verification_sees_one_flipped_bit():
    r = _run("shm", "alloc", "alloc", n=1, extra=["--inject-corruption"])
    assert r["verified"] is False
    assert r["receiver"]["bad_pages"] == 1 and r["receiver"]["stamp_bad"] == 0


@pytest.mark.parametrize("driver,send_pool,recv_pool", CASES)
def test_llama3_8b_4k_moved_and_verified(driver, send_pool, recv_pool):
    if send_pool == "torch" or recv_pool == "torch":
        pytest.importorskip("torch", reason="python3-torch missing")
    r = _run(driver, send_pool, recv_pool)
    rec = r["receiver"]
    assert "error" not in rec, rec
    assert rec["pages"] == 32 * 256
    assert rec["bad_pages"] == 0 and rec["stamp_bad"] == 0, rec
    assert r["verified"] is True
    assert rec["bytes_rx"] == 2 * 512 << 20
    assert r["bytes"] == 2 * 512 << 20 and r["gbit_per_s"] > 0


def test_llama3_8b_4k_over_dpdk_memif():
    why = dpdk_reason()
    if why:
        pytest.skip(why)
    try:
        r = _run("dpdk", "alloc", "alloc", n=1)
    except kvwire.KvwireError as e:
        if "rte_eal_init" in str(e):
            pytest.skip(f"DPDK's EAL cannot start in this environment: {e}")
        raise
    rec = r["receiver"]
    assert rec["bad_pages"] == 0 and rec["stamp_bad"] == 0, rec
    assert r["verified"] is True and rec["bytes_rx"] == 512 << 20
