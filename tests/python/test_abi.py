# SPDX-License-Identifier: MIT
"""The ctypes mirror (python/kvwire/_abi.py) against the public header, and
the library lookup / version check."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BUILD, ROOT, run_py

import kvwire
from kvwire import _abi, _lib

HEADER = ROOT / "include" / "kvwire" / "kvwire.h"


def header_functions() -> set[str]:
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    names = set()
    # a declaration: return type, name, '(' ... ');' at file scope
    for m in re.finditer(r"^[A-Za-z_][\w \t\*]*?\b(kvw_\w+)\s*\(([^;{]*?)\)\s*;", text, re.M | re.S):
        names.add(m.group(1))
    return names


def test_every_declared_function_is_bound_and_nothing_else():
    declared = header_functions()
    assert len(declared) > 30, f"header parse found only {sorted(declared)}"
    bound = set(_abi.FUNCTIONS)
    assert declared - bound == set(), f"declared in kvwire.h but not bound: {sorted(declared - bound)}"
    assert bound - declared == set(), f"bound but not in kvwire.h: {sorted(bound - declared)}"


def _cc():
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def test_struct_layouts_match_the_c_compiler(tmp_path):
    cc = _cc()
    if not cc:
        pytest.skip("no C compiler to compare struct layouts with")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <kvwire/kvwire.h>',
             'int main(void) {']
    for name, st in _abi.STRUCTS.items():
        lines.append(f'printf("{name} size %zu\\n", sizeof({name}));')
        for fname, *_ in st._fields_:
            lines.append(f'printf("{name}.{fname} %zu\\n", offsetof({name}, {fname}));')
    consts = {k: v for k, v in vars(_abi).items()
              if re.fullmatch(r"KVW_[A-Z0-9_]+", k) and isinstance(v, int)}
    for k in consts:
        lines.append(f'printf("{k} %lld\\n", (long long)({k}));')
    lines.append('printf("KVW_VERSION_MAJOR %d\\nKVW_VERSION_MINOR %d\\n", KVW_VERSION_MAJOR, '
                 'KVW_VERSION_MINOR); printf("KVW_VERSION_STRING %s\\n", KVW_VERSION_STRING);')
    lines.append("return 0; }")
    src = tmp_path / "abi.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "abi"
    r = subprocess.run([cc, "-I", str(ROOT / "include"), str(src), "-o", str(exe)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    c_vals = dict(line.rsplit(" ", 1) for line in
                  subprocess.run([str(exe)], capture_output=True, text=True,
                                 check=True).stdout.splitlines())
    bad = []
    for name, st in _abi.STRUCTS.items():
        import ctypes
        if int(c_vals[f"{name} size"]) != ctypes.sizeof(st):
            bad.append(f"sizeof({name}): C {c_vals[name + ' size']}, ctypes {ctypes.sizeof(st)}")
        for fname, *_ in st._fields_:
            off = getattr(st, fname).offset
            if int(c_vals[f"{name}.{fname}"]) != off:
                bad.append(f"offsetof({name}, {fname}): C {c_vals[name + '.' + fname]}, ctypes {off}")
    for k, v in consts.items():
        if int(c_vals[k]) != v:
            bad.append(f"{k}: C {c_vals[k]}, _abi {v}")
    assert int(c_vals["KVW_VERSION_MAJOR"]) == _abi.ABI_MAJOR
    assert int(c_vals["KVW_VERSION_MINOR"]) == _abi.ABI_MINOR
    assert c_vals["KVW_VERSION_STRING"] == _abi.ABI_VERSION_STRING
    assert not bad, "python/kvwire/_abi.py differs from kvwire.h:\n" + "\n".join(bad)


def test_every_status_has_a_name_and_an_exception_class():
    for st, name in _abi.STATUS_NAMES.items():
        assert kvwire.strerror(st).startswith(name + ":"), (st, kvwire.strerror(st))
        if st < 0:
            cls = kvwire.error_class(st)
            assert cls is not kvwire.KvwireError and cls.status == st, name


def test_library_found_through_build_dir_and_version_read():
    assert Path(kvwire.library_path()).resolve().parent == (BUILD / "transport").resolve()
    assert kvwire.library_version() == _abi.ABI_VERSION_STRING


def _stub_lib(tmp_path, name: str, body: str, soname: str | None = None) -> Path:
    """A shared object standing in for another libkvwire release."""
    cc = _cc()
    if not cc:
        pytest.skip("no C compiler to build a stand-in library")
    src = tmp_path / (name + ".c")
    src.write_text(body)
    out = tmp_path / name
    cmd = [cc, "-shared", "-fPIC", str(src), "-o", str(out)]
    if soname:
        cmd.append(f"-Wl,-soname,{soname}")
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def test_version_mismatch_is_refused_with_a_sentence(tmp_path):
    fake = _stub_lib(tmp_path, "libkvwire.so.9.4.0",
                     'const char *kvw_version(void) { return "9.4.0"; }\n')
    r = run_py(["-c", "import kvwire"], env={**os.environ, "KVWIRE_LIB": str(fake)})
    assert r.returncode != 0
    assert "LibraryError" in r.stderr
    want = f"binds the C ABI {_abi.ABI_MAJOR}.{_abi.ABI_MINOR}"
    assert "libkvwire 9.4.0" in r.stderr and want in r.stderr, r.stderr
    with pytest.raises(_lib.LibraryError, match="binds the C ABI"):
        _lib.check_version(f"{_abi.ABI_MAJOR}.{_abi.ABI_MINOR + 1}.0", "x")
    with pytest.raises(_lib.LibraryError, match="cannot tell which version"):
        _lib.check_version(None, "x")
    _lib.check_version(f"{_abi.ABI_MAJOR}.{_abi.ABI_MINOR}.7", "x")  # a patch release: fine


def test_a_library_without_kvw_version_is_told_by_its_file_name(tmp_path):
    old = _stub_lib(tmp_path, "libkvwire.so.0.1.0", "int kvw_ctx_fd(void *c) { return -1; }\n")
    r = run_py(["-c", "import kvwire"], env={**os.environ, "KVWIRE_LIB": str(old)})
    assert r.returncode != 0
    assert "is libkvwire 0.1.0" in r.stderr, r.stderr


def test_version_from_soname_then_missing_symbols_named(tmp_path):
    plain = _stub_lib(tmp_path, "libkvwire-copy.so", "int kvw_ctx_fd(void *c) { return -1; }\n",
                      soname=f"libkvwire.so.{_abi.ABI_MAJOR}")
    assert _lib._elf_soname(str(plain)) == f"libkvwire.so.{_abi.ABI_MAJOR}"
    r = run_py(["-c", "import kvwire"], env={**os.environ, "KVWIRE_LIB": str(plain)})
    assert r.returncode != 0
    assert "lacks" in r.stderr and "kvw_ctx_create" in r.stderr, r.stderr


def test_the_real_library_copied_anywhere_still_reports_its_version(tmp_path):
    copy = tmp_path / "renamed.so"
    shutil.copy(kvwire.library_path(), copy)
    r = run_py(["-c", "import kvwire; print(kvwire.library_version())"],
               env={**os.environ, "KVWIRE_LIB": str(copy)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == _abi.ABI_VERSION_STRING


def test_missing_library_says_where_it_looked(tmp_path):
    r = run_py(["-c", "import kvwire"],
               env={**os.environ, "KVWIRE_BUILD_DIR": str(tmp_path / "nobuild")})
    assert r.returncode != 0
    assert "libkvwire.so not found" in r.stderr and "nobuild" in r.stderr, r.stderr
    assert "KVWIRE_BUILD_DIR" in r.stderr


def test_missing_symbol_is_named(tmp_path, monkeypatch):
    import ctypes
    lib = ctypes.CDLL(kvwire.library_path())
    monkeypatch.setitem(_abi.FUNCTIONS, "kvw_no_such_call", (None, []))
    assert _abi.bind(lib) == ["kvw_no_such_call"]
