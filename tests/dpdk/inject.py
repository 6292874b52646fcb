#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Sends malformed kvwire/UDP frames on an interface (raw AF_PACKET socket):
garbage payloads, bad magic, lying lengths, truncated IPv4/UDP, bad checksums.
usage: inject.py IFACE DST_UDP_PORT COUNT"""
import os, random, socket, struct, sys

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return (~s) & 0xFFFF

def frame(payload, dport, ip_len_delta=0, cut=0, bad_ipsum=False):
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    tot = 20 + len(udp) + ip_len_delta
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, tot, 1, 0x4000, 64, 17, 0,
                     bytes([10, 0, 0, 0]), bytes([10, 0, 0, 1]))
    s = csum(ip) ^ (0x1234 if bad_ipsum else 0)
    ip = ip[:10] + struct.pack("!H", s) + ip[12:]
    eth = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x99" + b"\x08\x00"
    f = eth + ip + udp
    return f[:len(f) - cut] if cut else f

def main():
    ifc, dport, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rnd = random.Random(5)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifc, 0))
    kinds = 0
    for i in range(count):
        k = i % 6
        if k == 0:   # random bytes as the kvwire frame
            p = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 200)))
            f = frame(p, dport)
        elif k == 1:  # good magic, lying length
            p = struct.pack("<IBBBBIIII", 0x3157564B, 1, 0, 9, 0, 9999, 0, 5, 0) + b"x" * 30
            f = frame(p, dport)
        elif k == 2:  # IPv4 length longer than the frame (truncated)
            f = frame(b"y" * 100, dport, ip_len_delta=60)
        elif k == 3:  # cut inside the UDP header
            f = frame(b"z" * 10, dport, cut=14)
        elif k == 4:  # bad IPv4 checksum
            f = frame(b"w" * 64, dport, bad_ipsum=True)
        else:         # valid header, type out of range
            p = struct.pack("<IBBBBIIII", 0x3157564B, 1, 0, 200, 0, 0, 0, 5, 0)
            f = frame(p, dport)
        s.send(f)
        kinds += 1
    print("injected", kinds)

if __name__ == "__main__":
    main()
