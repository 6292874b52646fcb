# SPDX-License-Identifier: MIT
"""Finding, loading and checking libkvwire.so.

Search order (the first that exists wins):
  1. $KVWIRE_LIB            path of the shared library itself
  2. $KVWIRE_BUILD_DIR      a meson build dir: <dir>/transport/libkvwire.so
  3. the source tree's own build dir, when this package is imported from
     python/ of a kvwire checkout: <checkout>/build/transport/libkvwire.so
  4. the system's loader: libkvwire.so.<major> (after `meson install`,
     /usr/local/lib/<triplet>), then ctypes.util.find_library("kvwire")
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import struct
from pathlib import Path

from . import _abi


class LibraryError(ImportError):
    """libkvwire could not be found, loaded, or is not the version bound here."""


_lib: ctypes.CDLL | None = None
_lib_path: str | None = None
_lib_version: str | None = None


def _candidates() -> list[tuple[str, str]]:
    out = []
    env = os.environ.get("KVWIRE_LIB")
    if env:
        out.append((env, "KVWIRE_LIB"))
        return out  # an explicit choice: no fallback that could hide a mistake
    bdir = os.environ.get("KVWIRE_BUILD_DIR")
    if bdir:
        out.append((os.path.join(bdir, "transport", "libkvwire.so"), "KVWIRE_BUILD_DIR"))
        return out
    here = Path(__file__).resolve().parent
    checkout = here.parent.parent
    if (checkout / "include" / "kvwire" / "kvwire.h").is_file():
        out.append((str(checkout / "build" / "transport" / "libkvwire.so"), "source tree build/"))
    out.append((f"libkvwire.so.{_abi.ABI_MAJOR}", "system loader"))
    found = ctypes.util.find_library("kvwire")
    if found:
        out.append((found, "ctypes.util.find_library"))
    return out


def _elf_soname(path: str) -> str | None:
    """DT_SONAME of an ELF64 little-endian shared object, or None."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    secs = []
    for i in range(shnum):
        off = shoff + i * shentsize
        _n, typ, _fl, _addr, offset, size, link = struct.unpack_from("<IIQQQQI", data, off)
        secs.append((typ, offset, size, link))
    for typ, offset, size, link in secs:
        if typ != 6:  # SHT_DYNAMIC
            continue
        stroff = secs[link][1]
        for j in range(0, size, 16):
            tag, val = struct.unpack_from("<qQ", data, offset + j)
            if tag == 0:
                break
            if tag == 14:  # DT_SONAME
                end = data.index(b"\0", stroff + val)
                return data[stroff + val:end].decode()
    return None


def _loaded_path(name: str) -> str:
    """The file the loader mapped for `name` (a bare soname resolves through /proc/self/maps)."""
    if os.sep in name:
        return os.path.realpath(name)
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split(None, 5)[-1].strip()
                if "/libkvwire.so" in p:
                    return os.path.realpath(p)
    except OSError:
        pass
    return name


def _version_of(path: str, lib: ctypes.CDLL) -> str | None:
    if _abi.VERSION_FUNCTION:
        fn = getattr(lib, _abi.VERSION_FUNCTION, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            fn.argtypes = []
            v = fn()
            if v:
                return v.decode()
    real = os.path.realpath(path)
    m = re.search(r"\.so\.(\d+\.\d+\.\d+)$", real)
    if m:
        return m.group(1)
    so = _elf_soname(real)
    if so:
        m = re.search(r"\.so\.(\d+(?:\.\d+)*)$", so)
        if m:
            return m.group(1)
    return None


def check_version(version: str | None, path: str) -> None:
    """Raises LibraryError when `version` is not the ABI this package binds."""
    want = f"{_abi.ABI_MAJOR}.{_abi.ABI_MINOR}"
    if version is None:
        raise LibraryError(
            f"cannot tell which version {path} is (neither its file name nor its SONAME carries "
            f"one); this kvwire package binds the C ABI {want} (kvwire.h {_abi.ABI_VERSION_STRING}). "
            f"Point KVWIRE_LIB at the versioned file of a kvwire {want} build "
            f"(e.g. build/transport/libkvwire.so).")
    parts = [int(p) for p in version.split(".")]
    major = parts[0]
    minor = parts[1] if len(parts) > 1 else None
    # 0.x: every minor release may change the ABI; from 1.0 on, newer minors only add
    ok = major == _abi.ABI_MAJOR and (
        minor is None or (minor == _abi.ABI_MINOR if major == 0 else minor >= _abi.ABI_MINOR))
    if not ok:
        raise LibraryError(
            f"{path} is libkvwire {version}, but this kvwire Python package binds the C ABI {want} "
            f"(kvwire.h {_abi.ABI_VERSION_STRING}): install the Python package from the same kvwire "
            f"release as the library (pip install ./python in that checkout), or point KVWIRE_LIB / "
            f"KVWIRE_BUILD_DIR at a {want} build.")


def load() -> ctypes.CDLL:
    global _lib, _lib_path, _lib_version
    if _lib is not None:
        return _lib
    tried = []
    for path, how in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(f"{path} ({how}: no such file)")
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path} ({how}: {e})")
            continue
        real = _loaded_path(path)
        version = _version_of(real, lib)
        check_version(version, path)
        missing = _abi.bind(lib)
        if missing:
            raise LibraryError(
                f"{path} (libkvwire {version}) lacks {', '.join(missing)}, which kvwire.h "
                f"{_abi.ABI_VERSION_STRING} declares: the library and this package come from "
                f"different kvwire trees; rebuild the library or reinstall the package.")
        _lib, _lib_path, _lib_version = lib, os.path.realpath(real), version
        return lib
    raise LibraryError(
        "libkvwire.so not found; tried: " + "; ".join(tried) +
        ". Build it (meson setup build && ninja -C build) and set KVWIRE_BUILD_DIR=<build dir> "
        "or KVWIRE_LIB=<path>/libkvwire.so, or `meson install` it.")


def path() -> str:
    load()
    return _lib_path  # type: ignore[return-value]


def version() -> str:
    load()
    return _lib_version  # type: ignore[return-value]
