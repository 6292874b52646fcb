# SPDX-License-Identifier: MIT
"""A small Llama-architecture transformer in torch (CPU): RMSNorm, rotary
position embeddings, grouped-query attention, SwiGLU MLP, weights drawn from
a fixed seed, and a paged KV cache in vLLM's per-layer layout
[2, num_blocks, block_size, num_kv_heads, head_size] (K = [0], V = [1]) --
or, with kv_layout "HND", head-major [2, num_blocks, num_kv_heads,
block_size, head_size] as NIXL's engines lay it out. The block size and the
layout change where a K/V value lives, never the arithmetic: an engine of
any block size and layout computes the same logits bit for bit.

The model runs layer by layer (`layer()`), one request at a time inside a
layer, so an engine can interleave the connector's per-layer calls
(wait_for_layer_load / save_kv_layer) exactly where vLLM's model runner does,
and so that a request's arithmetic is the same whichever other requests share
its step (bitwise: the disaggregated run is compared with one process).
"""
from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402


def pin_threads() -> None:
    """One arithmetic thread for torch and for the BLAS under it (OpenBLAS splits
    some products differently with more threads, and the last bits of a result
    then differ between processes). Works whoever loaded the BLAS first."""
    torch.set_num_threads(1)
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line and ".so" in line}
    except OSError:
        libs = set()
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for fn in ("openblas_set_num_threads", "openblas_set_num_threads64_"):
            if hasattr(lib, fn):
                getattr(lib, fn)(1)


pin_threads()


@dataclass(frozen=True)
class ModelConfig:
    vocab: int = 512
    hidden: int = 256
    layers: int = 4
    heads: int = 8
    kv_heads: int = 2          # grouped-query attention: 4 query heads per KV head
    head_dim: int = 32
    intermediate: int = 688
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    block_size: int = 16
    kv_layout: str = "NHD"     # "NHD": [2, nb, bs, Hk, D] (vLLM FlashAttention); "HND": [2, nb, Hk, bs, D]
    seed: int = 1234
    dtype: str = "float32"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


PRESETS = {
    # the default: quick, and enough to show exact equality on every driver
    "tiny": ModelConfig(),
    # for the TTFT split: prefill takes long enough and the cache is large enough
    # (8 layers x 2 x 8 heads x 64 x 4 B = 32 KiB a token) that streaming shows
    "ttft": ModelConfig(vocab=1024, hidden=512, layers=8, heads=8, kv_heads=8, head_dim=64,
                        intermediate=1024),
}


class RMSNorm:
    def __init__(self, w: torch.Tensor, eps: float):
        self.w, self.eps = w, eps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + self.eps) * self.w


class TinyLlama:
    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        dt = cfg.torch_dtype

        def w(*shape: int, scale: float | None = None) -> torch.Tensor:
            s = scale if scale is not None else 1.0 / math.sqrt(shape[0])
            return (torch.randn(*shape, generator=g) * s).to(dt)

        H, Hk, D, E, F = cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.hidden, cfg.intermediate
        self.embed = w(cfg.vocab, E, scale=1.0)
        self.layers = []
        for _ in range(cfg.layers):
            self.layers.append({
                "attn_norm": RMSNorm(1.0 + 0.1 * w(E, scale=1.0), cfg.rms_eps),
                "wq": w(E, H * D), "wk": w(E, Hk * D), "wv": w(E, Hk * D), "wo": w(H * D, E),
                "mlp_norm": RMSNorm(1.0 + 0.1 * w(E, scale=1.0), cfg.rms_eps),
                "w_gate": w(E, F), "w_up": w(E, F), "w_down": w(F, E),
            })
        self.norm = RMSNorm(1.0 + 0.1 * w(E, scale=1.0), cfg.rms_eps)
        self.lm_head = w(E, cfg.vocab)
        inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
        self._inv_freq = inv

    # ---- pieces
    def rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x [T, heads, D] rotated by position (the half-split form Llama uses)."""
        ang = pos.to(torch.float64)[:, None] * self._inv_freq[None, :]
        cos = torch.cos(ang).to(x.dtype)[:, None, :]
        sin = torch.sin(ang).to(x.dtype)[:, None, :]
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def embed_tokens(self, tokens: list[int]) -> torch.Tensor:
        return self.embed[torch.tensor(tokens, dtype=torch.long)]

    def layer(self, li: int, h: torch.Tensor, start: int, kv_cache: torch.Tensor,
              block_table: list[int]) -> torch.Tensor:
        """One decoder layer for one request: h [T, E] holds positions
        [start, start+T); their K/V go into kv_cache (this layer's
        [2, nb, bs, Hk, D], or [2, nb, Hk, bs, D] for HND) through block_table;
        attention reads positions [0, start+T) back from the cache."""
        cfg, p = self.cfg, self.layers[li]
        T = h.shape[0]
        H, Hk, D, bs = cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.block_size
        pos = torch.arange(start, start + T)
        x = p["attn_norm"](h)
        q = self.rope((x @ p["wq"]).view(T, H, D), pos)
        k = self.rope((x @ p["wk"]).view(T, Hk, D), pos)
        v = (x @ p["wv"]).view(T, Hk, D)
        bt = torch.tensor(block_table, dtype=torch.long)
        blk, off = bt[pos // bs], pos % bs
        S = start + T
        nblk = (S + bs - 1) // bs
        if cfg.kv_layout == "HND":      # a block holds each head's bs tokens in a row
            kv_cache[0, blk, :, off] = k
            kv_cache[1, blk, :, off] = v
            K = kv_cache[0, bt[:nblk]].transpose(1, 2).reshape(nblk * bs, Hk, D)[:S]
            V = kv_cache[1, bt[:nblk]].transpose(1, 2).reshape(nblk * bs, Hk, D)[:S]
        else:
            kv_cache[0, blk, off] = k
            kv_cache[1, blk, off] = v
            K = kv_cache[0, bt[:nblk]].reshape(nblk * bs, Hk, D)[:S]
            V = kv_cache[1, bt[:nblk]].reshape(nblk * bs, Hk, D)[:S]
        rep = H // Hk
        K = K.repeat_interleave(rep, dim=1).transpose(0, 1)      # [H, S, D]
        V = V.repeat_interleave(rep, dim=1).transpose(0, 1)
        scores = torch.matmul(q.transpose(0, 1), K.transpose(1, 2)) / math.sqrt(D)  # [H, T, S]
        if T > 1:
            mask = torch.arange(S)[None, :] > pos[:, None]
            scores = scores.masked_fill(mask[None], float("-inf"))
        att = torch.softmax(scores, dim=-1)
        o = torch.matmul(att, V).transpose(0, 1).reshape(T, H * D)
        h = h + o @ p["wo"]
        x = p["mlp_norm"](h)
        m = torch.nn.functional.silu(x @ p["w_gate"]) * (x @ p["w_up"])
        return h + m @ p["w_down"]

    def cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        c = self.cfg
        return (2, num_blocks, c.block_size, c.kv_heads, c.head_dim) if c.kv_layout == "NHD" \
            else (2, num_blocks, c.kv_heads, c.block_size, c.head_dim)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h[-1:]) @ self.lm_head          # the last position only

    def kv_bytes_per_token(self) -> int:
        c = self.cfg
        return c.layers * 2 * c.kv_heads * c.head_dim * torch.empty((), dtype=c.torch_dtype).element_size()
