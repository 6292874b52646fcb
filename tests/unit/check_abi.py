#!/usr/bin/env python3
"""ABI check: libkvwire.so exports exactly the functions that
include/kvwire/kvwire.h declares, the version script lists the same
names, and each is exported under the version node the script puts it in
(the first node is VERSION; later nodes add functions). Prints TAP. The
same for libkvwire-dir and include/kvwire/dir.h with VERSION KVWIRE_DIR_0.1.
usage: check_abi.py HEADER LIBRARY_SO VERSION_MAP [VERSION]"""
import re
import subprocess
import sys


def header_functions(path):
    text = re.sub(r"/\*.*?\*/", "", open(path).read(), flags=re.S)
    return set(re.findall(r"\b(kvw_[a-z0-9_]+)\s*\(", text))


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                         capture_output=True, text=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TtDdBbRrWwVvi":
            name, _, ver = parts[2].partition("@@")
            if name.startswith("KVWIRE_"):
                continue
            syms[name] = ver
    return syms


def map_nodes(path):
    """{name: version node} of every global: list in the script."""
    text = re.sub(r"/\*.*?\*/", "", open(path).read(), flags=re.S)
    names = {}
    for node, body in re.findall(r"([A-Z][A-Z0-9_.]*)\s*\{(.*?)\}", text, flags=re.S):
        glob = body.split("global:")[1].split("local:")[0] if "global:" in body else ""
        for n in glob.split(";"):
            if n.strip():
                names[n.strip()] = node
    return names


def main():
    hdr, lib, vmap = sys.argv[1:4]
    version = sys.argv[4] if len(sys.argv) > 4 else "KVWIRE_0.2"
    want, got, nodes = header_functions(hdr), exported(lib), map_nodes(vmap)
    listed = set(nodes)
    checks = [
        ("no symbol beyond the public header", sorted(set(got) - want)),
        ("every public function exported", sorted(want - set(got))),
        ("version script lists the header's functions", sorted(want ^ listed)),
        ("the first version node is " + version,
         [] if version in set(nodes.values()) else ["none is"]),
        ("each symbol under its node", sorted(n + "@" + v for n, v in got.items()
                                              if n in nodes and v != nodes[n])),
    ]
    print("1..%d" % len(checks))
    bad = 0
    for i, (name, diff) in enumerate(checks, 1):
        if diff:
            bad += 1
            print("not ok %d - %s: %s" % (i, name, " ".join(diff)))
        else:
            print("ok %d - %s" % (i, name))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
