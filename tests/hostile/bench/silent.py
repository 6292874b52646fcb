# SPDX-License-Identifier: MIT
# Opens N TCP connections to HOST:PORT without waiting for any of them
# (non-blocking connect: a server that accepts slowly cannot stall this),
# optionally writes SEND bytes of 'x' (no newline) on each, prints
# "opened N" and then waits up to HOLD seconds for the server to close each
# one. Prints "closed C of N, last after MS ms" (MS -1 when C < N) and exits.
# Usage: python3 silent.py HOST PORT N HOLD [SEND]
import errno
import select
import socket
import sys
import time

host, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
send = int(sys.argv[5]) if len(sys.argv) > 5 else 0
t0 = time.monotonic()
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    rc = s.connect_ex((host, port))
    if rc not in (0, errno.EINPROGRESS):
        print(f"connect: {errno.errorcode.get(rc, rc)}", flush=True)
        sys.exit(1)
    socks.append(s)
pending = {s: send for s in socks}
print(f"opened {n}", flush=True)
open_ = set(socks)
last = 0.0
end = t0 + hold
while open_ and time.monotonic() < end:
    wr = [s for s in open_ if pending[s] > 0]
    r, w, _ = select.select(list(open_), wr, [], max(0.0, end - time.monotonic()))
    for s in w:
        try:
            pending[s] -= s.send(b"x" * min(pending[s], 65536))
        except OSError:
            pending[s] = 0
    for s in r:
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:  # EOF or reset: the server closed it
            open_.discard(s)
            last = time.monotonic() - t0
closed = n - len(open_)
ms = int(last * 1000) if not open_ else -1
print(f"closed {closed} of {n}, last after {ms} ms", flush=True)
