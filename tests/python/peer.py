# SPDX-License-Identifier: MIT
"""A second process for the lifecycle tests: connects to URI and sends one
sequence layer by layer, slowly, so that the test can kill or stop it midway.

usage: peer.py URI SEQ N_LAYERS N_BLOCKS BLOCK_BYTES INTERVAL_S
Prints "connected", then "layer L" after each send call, then "done STATUS".
"""
import sys
import time

import kvwire


def main() -> int:
    uri, seq, n_layers, n_blocks, bb, interval = sys.argv[1:7]
    n_layers, n_blocks, bb, interval = int(n_layers), int(n_blocks), int(bb), float(interval)
    with kvwire.Context() as ctx:
        mem = ctx.alloc(n_layers * n_blocks * bb)
        lay = kvwire.Layout(mem, n_layers, n_blocks, bb)
        ep = ctx.connect(uri, timeout=10)
        print("connected", flush=True)
        blocks = list(range(n_blocks))
        req = None
        for layer in range(n_layers):
            req = ep.send(int(seq), lay, blocks, layer, layer + 1)
            print(f"layer {layer}", flush=True)
            end = time.monotonic() + interval
            while time.monotonic() < end:
                ctx.poll(0.01)
        try:
            req.wait(30)
            print("done 0", flush=True)
        except kvwire.KvwireError as e:
            print(f"done {e.status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
