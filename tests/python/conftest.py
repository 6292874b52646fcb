# SPDX-License-Identifier: MIT
"""Shared fixtures of the Python suites, and a TAP reporter (--tap).

meson runs these suites with protocol 'tap' (tests/python/meson.build):
with --tap, pytest's own terminal output is replaced by TAP on stdout --
the plan `1..N` once collection is done, then `ok N - test` / `not ok N -
test` / `ok N - test # SKIP reason` per case, failure details as `# ` lines
-- so meson and tests/summarize.py count every pytest case. A run that dies
midway leaves fewer lines than the plan; summarize.py counts the rest failed.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PYDIR = ROOT / "python"

# the package under test and its library, for this process and every child
if str(PYDIR) not in sys.path:
    sys.path.insert(0, str(PYDIR))
_pp = os.environ.get("PYTHONPATH", "")
if str(PYDIR) not in _pp.split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PYDIR), str(HERE), _pp) if p)
if not os.environ.get("KVWIRE_LIB") and not os.environ.get("KVWIRE_BUILD_DIR"):
    os.environ["KVWIRE_BUILD_DIR"] = str(ROOT / "build")
BUILD = Path(os.environ.get("KVWIRE_BUILD_DIR") or Path(os.environ["KVWIRE_LIB"]).parent.parent)


def pytest_addoption(parser):
    parser.addoption("--tap", action="store_true", help="print TAP (for meson's tap protocol)")


class TapReporter:
    def __init__(self, config):
        self.config = config
        self.n = 0
        self.out = sys.__stdout__
        self.failed_setup: set[str] = set()

    def _w(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def pytest_collection_finish(self, session):
        self._w(f"1..{len(session.items)}")
        for rep in getattr(session, "_kvw_collect_errors", []):
            self._w(f"# collection error: {rep}")

    def pytest_collectreport(self, report):
        if report.failed:
            self._w(f"not ok 0 - collecting {report.nodeid}")
            for line in str(report.longrepr).splitlines():
                self._w("# " + line)

    def pytest_runtest_logreport(self, report):
        name = report.nodeid.split("::", 1)[-1] if "::" in report.nodeid else report.nodeid
        name = f"{Path(report.fspath).stem}::{name}".replace("#", "-")
        if report.when == "setup":
            if report.skipped:
                self.n += 1
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else "skipped"
                self._w(f"ok {self.n} - {name} # SKIP {reason}")
            elif report.failed:
                self.n += 1
                self.failed_setup.add(report.nodeid)
                self._w(f"not ok {self.n} - {name} (setup)")
                self._diag(report)
            return
        if report.when == "call":
            self.n += 1
            if report.passed:
                self._w(f"ok {self.n} - {name} ({report.duration:.1f} s)")
            elif report.skipped:
                if hasattr(report, "wasxfail"):
                    self._w(f"not ok {self.n} - {name} # TODO xfail: {report.wasxfail}")
                else:
                    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else "skip"
                    self._w(f"ok {self.n} - {name} # SKIP {reason}")
            else:
                self._w(f"not ok {self.n} - {name} ({report.duration:.1f} s)")
                self._diag(report)
            return
        if report.when == "teardown" and report.failed and report.nodeid not in self.failed_setup:
            # counted as an extra failure: the case itself already has its line
            self._w(f"# teardown of {name} failed:")
            self._diag(report)
            self._w(f"not ok {self.n} - {name} (teardown)")

    def _diag(self, report):
        text = str(report.longrepr) if report.longrepr is not None else ""
        for sec_name, content in getattr(report, "sections", []):
            if content.strip():
                text += f"\n--- {sec_name}\n{content}"
        lines = text.splitlines()
        if len(lines) > 200:
            lines = lines[:60] + ["... (cut) ..."] + lines[-140:]
        for line in lines:
            self._w("# " + line)


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    if config.getoption("--tap"):
        term = config.pluginmanager.getplugin("terminalreporter")
        if term is not None:
            config.pluginmanager.unregister(term)
        config.pluginmanager.register(TapReporter(config), "kvw-tap")


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def ctx():
    import kvwire
    c = kvwire.Context()
    yield c
    c.close(force=True)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def tmp_sock(tmp_path):
    return f"shm://{tmp_path}/kvw.sock"


def pair(ctx, driver: str, tmp_path) -> tuple:
    """(client endpoint, server endpoint) in one context."""
    uri = f"shm://{tmp_path}/pair.sock" if driver == "shm" else "tcp://127.0.0.1:0"
    lsn = ctx.listen(uri)
    cl = ctx.connect(lsn.uri, timeout=5)
    sv = lsn.accept(5)
    assert sv is not None, "accept: no endpoint within 5 s"
    return cl, sv, lsn


def bench_path() -> Path:
    return BUILD / "bench" / "kvwire-bench"


def rss_kib(pid: int | None = None) -> int:
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def dpdk_reason() -> str | None:
    """None when the dpdk driver can run here (root, built), else why not."""
    import kvwire
    if "dpdk" not in kvwire.drivers_built():
        return "this libkvwire has no dpdk driver (libdpdk-dev missing at configure time)"
    if os.geteuid() != 0:
        return "the dpdk driver needs root here (EAL --no-huge, memif sockets under /run)"
    try:
        os.makedirs("/run/kvwire", exist_ok=True)
    except OSError as e:
        return f"cannot create /run/kvwire for the memif socket: {e}"
    return None


def dpdk_uris(tag: str) -> tuple[str, str]:
    """(listen URI carrying the server's EAL, client EAL args) over net_memif."""
    sock = f"/run/kvwire/py-{tag}-{os.getpid()}.sock"
    base = "--no-huge --no-pci -m 512 --log-level=lib.eal:warning"
    ncpu = os.cpu_count() or 1
    srv = (f"{base} -l 0 --file-prefix=kvwpyS{tag}{os.getpid()} "
           f"--vdev=net_memif0,role=server,socket={sock}")
    cli = (f"{base} -l {1 if ncpu > 1 else 0} --file-prefix=kvwpyC{tag}{os.getpid()} "
           f"--vdev=net_memif0,role=client,socket={sock}")
    return "dpdk://127.0.0.1:7000?eal=" + srv.replace(" ", "+"), cli


def run_py(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, **kw)
