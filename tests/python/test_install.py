# SPDX-License-Identifier: MIT
"""The package installs offline with Debian's pip and setuptools and works from
the install, finding the library through KVWIRE_BUILD_DIR / KVWIRE_LIB."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BUILD, ROOT

import kvwire
from kvwire import _abi

PY = ROOT / "python"


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(extra)
    return env


def _copy_src(tmp_path):
    """pip builds in the source tree; build from a copy so the tree stays clean."""
    src = tmp_path / "src"
    shutil.copytree(PY, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    return src


def test_pyproject_version_is_the_bound_abi():
    text = (PY / "pyproject.toml").read_text()
    m = re.search(r'^version = "([^"]+)"', text, re.M)
    assert m and m.group(1) == _abi.ABI_VERSION_STRING == kvwire.__version__


def test_pip_install_offline_into_a_target(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("pip missing for this python3 (Debian: python3-pip)")
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-index",
                        "--no-deps", "--disable-pip-version-check", "--target", str(target),
                        str(_copy_src(tmp_path))], capture_output=True, text=True, env=_clean_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (target / "kvwire" / "py.typed").exists()
    assert (target / "kvwire" / "connectors" / "vllm.py").exists()
    code = ("import kvwire, kvwire.connectors.vllm, kvwire.connectors.sglang; "
            "print(kvwire.__file__); print(kvwire.library_version())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env=_clean_env(PYTHONPATH=str(target), KVWIRE_BUILD_DIR=str(BUILD)))
    assert r.returncode == 0, r.stderr
    file, ver = r.stdout.split()
    assert Path(file).resolve().is_relative_to(target.resolve()) and ver == _abi.ABI_VERSION_STRING
    # from an install, without KVWIRE_* and no source tree around: a clear sentence
    r = subprocess.run([sys.executable, "-c", "import kvwire"], capture_output=True, text=True,
                       cwd=tmp_path, env=_clean_env(PYTHONPATH=str(target),
                                                    LD_LIBRARY_PATH="/nonexistent"))
    if r.returncode != 0:
        assert "libkvwire.so not found" in r.stderr and "KVWIRE_BUILD_DIR" in r.stderr, r.stderr


def test_pip_install_offline_into_a_venv(tmp_path):
    venv = tmp_path / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"python3 -m venv does not work here (Debian: python3-venv): {r.stderr[-300:]}")
    pip = venv / "bin" / "pip"
    if not pip.exists():
        pytest.skip("the venv has no pip (Debian: python3-venv ships it via ensurepip)")
    r = subprocess.run([str(pip), "install", "--no-build-isolation", "--no-index",
                        "--disable-pip-version-check", str(_copy_src(tmp_path))],
                       capture_output=True, text=True, env=_clean_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import kvwire; print(kvwire.library_version(), kvwire.drivers_built())"],
                       capture_output=True, text=True, cwd=tmp_path,
                       env=_clean_env(KVWIRE_LIB=str(BUILD / "transport" / "libkvwire.so")))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(_abi.ABI_VERSION_STRING)
