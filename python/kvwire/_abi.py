# SPDX-License-Identifier: MIT
"""The C ABI of libkvwire, mirrored for ctypes: every struct, constant and
function prototype the binding uses, and nothing else, in this one module.

Everything here follows include/kvwire/kvwire.h. When the header changes
(a struct gains a size or field-mask member, a function is added), this is
the only file to edit; tests/python/test_abi.py compiles the header with the
system C compiler and fails on any difference in sizes, offsets or the set
of declared functions.
"""
from __future__ import annotations

import ctypes as C

# The header version this module mirrors (KVW_VERSION_MAJOR/MINOR/STRING).
ABI_MAJOR = 0
ABI_MINOR = 2
ABI_VERSION_STRING = "0.2.0"

# ------------------------------------------------------------------ status
KVW_OK = 0
KVW_INPROGRESS = 1
KVW_ERR_INVALID = -1
KVW_ERR_NOMEM = -2
KVW_ERR_UNSUPPORTED = -3
KVW_ERR_TIMEDOUT = -4
KVW_ERR_PEER_DEAD = -5
KVW_ERR_ABORTED = -6
KVW_ERR_REJECTED = -7
KVW_ERR_PROTO = -8
KVW_ERR_VERSION = -9
KVW_ERR_AUTH = -10
KVW_ERR_BUSY = -11
KVW_ERR_MEMLOCK = -12
KVW_ERR_IO = -13
KVW_ERR_CONNREFUSED = -14
KVW_ERR_NOT_FOUND = -15
KVW_ERR_CLOSED = -16

STATUS_NAMES = {
    KVW_OK: "KVW_OK", KVW_INPROGRESS: "KVW_INPROGRESS",
    KVW_ERR_INVALID: "KVW_ERR_INVALID", KVW_ERR_NOMEM: "KVW_ERR_NOMEM",
    KVW_ERR_UNSUPPORTED: "KVW_ERR_UNSUPPORTED", KVW_ERR_TIMEDOUT: "KVW_ERR_TIMEDOUT",
    KVW_ERR_PEER_DEAD: "KVW_ERR_PEER_DEAD", KVW_ERR_ABORTED: "KVW_ERR_ABORTED",
    KVW_ERR_REJECTED: "KVW_ERR_REJECTED", KVW_ERR_PROTO: "KVW_ERR_PROTO",
    KVW_ERR_VERSION: "KVW_ERR_VERSION", KVW_ERR_AUTH: "KVW_ERR_AUTH",
    KVW_ERR_BUSY: "KVW_ERR_BUSY", KVW_ERR_MEMLOCK: "KVW_ERR_MEMLOCK",
    KVW_ERR_IO: "KVW_ERR_IO", KVW_ERR_CONNREFUSED: "KVW_ERR_CONNREFUSED",
    KVW_ERR_NOT_FOUND: "KVW_ERR_NOT_FOUND", KVW_ERR_CLOSED: "KVW_ERR_CLOSED",
}

# ------------------------------------------------------------- constants
KVW_MEM_NO_PIN = 0x1
KVW_MAX_LAYERS = 1024
KVW_MAX_BLOCKS_PER_SEQ = 262144
KVW_MAX_RAILS = 16
KVW_SEND_LAST = 0x1

KVW_CAP_ZERO_COPY_TX = 0x1
KVW_CAP_ONE_SIDED = 0x2
KVW_CAP_MULTI_RAIL = 0x4
KVW_CAP_RELIABLE_SW = 0x8
KVW_CAP_AUTH = 0x10
KVW_CAP_SAME_HOST = 0x20
CAP_NAMES = {
    KVW_CAP_ZERO_COPY_TX: "zero_copy_tx", KVW_CAP_ONE_SIDED: "one_sided",
    KVW_CAP_MULTI_RAIL: "multi_rail", KVW_CAP_RELIABLE_SW: "reliable_sw",
    KVW_CAP_AUTH: "auth", KVW_CAP_SAME_HOST: "same_host",
}

KVW_EV_LAYER = 1
KVW_EV_SEQ = 2

# ---------------------------------------------------------------- structs
# Opaque handles are plain void pointers.
kvw_status = C.c_int
handle = C.c_void_p


class kvw_config_entry(C.Structure):
    _fields_ = [("name", C.c_char_p), ("default_value", C.c_char_p), ("help", C.c_char_p)]


class kvw_layout_desc(C.Structure):
    _fields_ = [
        ("n_layers", C.c_uint32),
        ("n_blocks", C.c_uint32),
        ("block_bytes", C.c_uint64),
        ("block_stride", C.c_uint64),
        ("base_offset", C.c_uint64),
        ("layer_stride", C.c_uint64),
        ("layer_offsets", C.POINTER(C.c_uint64)),
    ]


# kvw_geom_kind
KVW_GEOM_NHD = 1
KVW_GEOM_HND = 2
KVW_GEOM_NHD_KV_BLOCK = 3
KVW_GEOM_HND_KV_BLOCK = 4
KVW_GEOM_MLA = 5


class kvw_geom(C.Structure):
    _fields_ = [
        ("size", C.c_uint32),          # sizeof(kvw_geom), set by the caller
        ("n_layers", C.c_uint32),
        ("n_kv", C.c_uint32),
        ("n_blocks", C.c_uint32),
        ("block_tokens", C.c_uint32),
        ("elem_bytes", C.c_uint32),
        ("head_dim", C.c_uint32),
        ("num_heads", C.c_uint32),
        ("h0", C.c_uint32),
        ("h1", C.c_uint32),
        ("token_stride", C.c_uint64),
        ("head_stride", C.c_uint64),
        ("kv_stride", C.c_uint64),
        ("block_stride", C.c_uint64),
        ("base_offset", C.c_uint64),
        ("layer_stride", C.c_uint64),
        ("kv_offsets", C.POINTER(C.c_uint64)),
    ]


class kvw_seq_range(C.Structure):
    _fields_ = [
        ("size", C.c_uint32),          # sizeof(kvw_seq_range), set by the caller
        ("h0", C.c_uint32),
        ("h1", C.c_uint32),
        ("rsvd", C.c_uint32),
        ("t0", C.c_uint64),
        ("t1", C.c_uint64),
    ]


class kvw_ep_info(C.Structure):
    _fields_ = [
        ("size", C.c_uint32),          # sizeof(kvw_ep_info), set by the caller
        ("driver", C.c_char * 16),
        ("peer_uri", C.c_char * 128),
        ("peer_version_major", C.c_uint16),
        ("peer_version_minor", C.c_uint16),
        ("caps", C.c_uint32),
        ("rails", C.c_uint32),
        ("id", C.c_uint64),
        ("authenticated", C.c_int),
        ("refs", C.c_uint32),          # holders (config ep_cache shares endpoints)
        ("peer_incarnation", C.c_uint64),  # the peer context's random id (0: wire < 1.4)
        ("res_fds", C.c_uint32),       # what the endpoint holds now: fds, QPs, bytes
        ("res_qps", C.c_uint32),
        ("res_bytes", C.c_uint64),
    ]


class kvw_rail_counters(C.Structure):
    _fields_ = [(n, C.c_uint64) for n in ("bytes_tx", "bytes_rx", "frags_tx", "frags_rx", "errors")]


COUNTER_FIELDS = ("bytes_tx", "bytes_rx", "frags_tx", "frags_rx", "frames_tx", "frames_rx",
                  "seqs_ok", "seqs_failed", "rejected", "bad_frames", "retransmits", "drops",
                  "dups", "out_of_order", "keepalives_tx", "keepalives_rx", "rtt_us")


class kvw_counters(C.Structure):
    _fields_ = [("size", C.c_uint32)] + [(n, C.c_uint64) for n in COUNTER_FIELDS] + [
        ("rails", C.c_uint32),
        ("rail", kvw_rail_counters * KVW_MAX_RAILS),
        ("remote_refused", C.c_uint64),
    ]


class kvw_req_info(C.Structure):
    _fields_ = [
        ("size", C.c_uint32),          # sizeof(kvw_req_info), set by the caller
        ("seq_id", C.c_uint64),
        ("is_send", C.c_int),
        ("status", C.c_int),
        ("bytes", C.c_uint64),
        ("bytes_total", C.c_uint64),
        ("n_layers", C.c_uint32),
        ("layers_done", C.c_uint32),
        ("t_posted", C.c_uint64),
        ("t_matched", C.c_uint64),
        ("t_first_byte", C.c_uint64),
        ("t_last_byte", C.c_uint64),
        ("t_completed", C.c_uint64),
    ]


class kvw_event(C.Structure):
    _fields_ = [
        ("type", C.c_int),
        ("status", C.c_int),
        ("req", C.c_void_p),
        ("ep", C.c_void_p),
        ("user_data", C.c_void_p),
        ("seq_id", C.c_uint64),
        ("layer", C.c_uint32),
        ("bytes", C.c_uint64),
    ]


# void (*kvw_log_fn)(void *user, unsigned level, const char *line)
kvw_log_fn = C.CFUNCTYPE(None, C.c_void_p, C.c_uint, C.c_char_p)

def sized(cls: type) -> C.Structure:
    """A caller-allocated struct with its leading `size` member set (kvwire.h:
    the library fills only what fits, so the struct can grow later)."""
    obj = cls()
    obj.size = C.sizeof(cls)
    return obj


# Structs whose size/offsets tests/python/test_abi.py checks against the C compiler.
STRUCTS = {
    "kvw_config_entry": kvw_config_entry,
    "kvw_layout_desc": kvw_layout_desc,
    "kvw_geom": kvw_geom,
    "kvw_seq_range": kvw_seq_range,
    "kvw_ep_info": kvw_ep_info,
    "kvw_rail_counters": kvw_rail_counters,
    "kvw_counters": kvw_counters,
    "kvw_req_info": kvw_req_info,
    "kvw_event": kvw_event,
}

_P = C.POINTER
_u32p = _P(C.c_uint32)

# name: (restype, argtypes). Exactly the functions declared in kvwire.h.
FUNCTIONS = {
    "kvw_version": (C.c_char_p, []),
    "kvw_strerror": (C.c_char_p, [kvw_status]),
    "kvw_config_table": (C.c_size_t, [_P(_P(kvw_config_entry))]),
    "kvw_config_create": (kvw_status, [_P(handle)]),
    "kvw_config_set": (kvw_status, [handle, C.c_char_p, C.c_char_p]),
    "kvw_config_get": (kvw_status, [handle, C.c_char_p, C.c_char_p, C.c_size_t]),
    "kvw_config_destroy": (None, [handle]),
    "kvw_ctx_create": (kvw_status, [handle, _P(handle)]),
    "kvw_ctx_destroy": (None, [handle]),
    "kvw_ctx_last_error": (C.c_char_p, [handle]),
    "kvw_ctx_set_log": (None, [handle, kvw_log_fn, C.c_void_p]),
    "kvw_ctx_fd": (C.c_int, [handle]),
    "kvw_progress": (kvw_status, [handle]),
    "kvw_ctx_wait": (kvw_status, [handle, C.c_int]),
    "kvw_drivers_built": (C.c_char_p, []),
    "kvw_mem_reg": (kvw_status, [handle, C.c_void_p, C.c_size_t, C.c_uint, _P(handle)]),
    "kvw_mem_alloc": (kvw_status, [handle, C.c_size_t, C.c_uint, _P(handle)]),
    "kvw_mem_dereg": (kvw_status, [handle]),
    "kvw_mem_addr": (C.c_void_p, [handle]),
    "kvw_mem_len": (C.c_size_t, [handle]),
    "kvw_mem_reg_ns": (C.c_uint64, [handle]),
    "kvw_layout_create": (kvw_status, [handle, _P(kvw_layout_desc), _P(handle)]),
    "kvw_layout_destroy": (None, [handle]),
    "kvw_layout_runs": (C.c_size_t, [handle, _u32p, C.c_size_t]),
    "kvw_layout_create_geom": (kvw_status, [handle, _P(kvw_geom), _P(handle)]),
    "kvw_geom_init": (kvw_status, [C.c_int, _P(kvw_geom)]),
    "kvw_geom_from_layout": (kvw_status, [_P(kvw_layout_desc), _P(kvw_geom)]),
    "kvw_listen": (kvw_status, [handle, C.c_char_p, _P(handle)]),
    "kvw_listener_uri": (C.c_char_p, [handle]),
    "kvw_accept": (kvw_status, [handle, C.c_int, _P(handle)]),
    "kvw_listener_close": (None, [handle]),
    "kvw_connect": (kvw_status, [handle, C.c_char_p, C.c_int, _P(handle)]),
    "kvw_connect_start": (kvw_status, [handle, C.c_char_p, _P(handle)]),
    "kvw_ep_close": (None, [handle]),
    "kvw_ep_status": (kvw_status, [handle]),
    "kvw_ep_query": (kvw_status, [handle, _P(kvw_ep_info)]),
    "kvw_ep_counters": (kvw_status, [handle, _P(kvw_counters)]),
    "kvw_ep_ping": (kvw_status, [handle, C.c_int, _P(C.c_uint64)]),
    "kvw_recv_seq": (kvw_status, [handle, C.c_uint64, handle, _u32p, C.c_size_t, C.c_uint64,
                                  _P(handle)]),
    "kvw_send_seq": (kvw_status, [handle, C.c_uint64, handle, _u32p, C.c_size_t, C.c_uint32,
                                  C.c_uint32, C.c_uint, _P(handle)]),
    "kvw_recv_seq_range": (kvw_status, [handle, C.c_uint64, handle, _u32p, C.c_size_t,
                                        _P(kvw_seq_range), C.c_uint64, _P(handle)]),
    "kvw_recv_seq_fanin": (kvw_status, [_P(handle), C.c_size_t, C.c_uint64, handle, _u32p,
                                        C.c_size_t, _P(kvw_seq_range), C.c_uint64, _P(handle)]),
    "kvw_send_seq_range": (kvw_status, [handle, C.c_uint64, handle, _u32p, C.c_size_t,
                                        _P(kvw_seq_range), C.c_uint32, C.c_uint32, C.c_uint,
                                        _P(handle)]),
    "kvw_req_abort": (kvw_status, [handle]),
    "kvw_req_status": (kvw_status, [handle]),
    "kvw_req_set_timeout": (kvw_status, [handle, C.c_uint64]),
    "kvw_req_set_user_data": (None, [handle, C.c_void_p]),
    "kvw_req_free": (kvw_status, [handle]),
    "kvw_req_query": (kvw_status, [handle, _P(kvw_req_info)]),
    "kvw_poll": (C.c_int, [handle, _P(kvw_event), C.c_int]),
    "kvw_poll_wait": (C.c_int, [handle, _P(kvw_event), C.c_int, C.c_int]),
}

# The function that reports the loaded library's own version (kvwire.h 0.2:
# kvw_version()). A library without it (0.1) is identified by its file name
# or SONAME instead, and refused as another ABI.
VERSION_FUNCTION = "kvw_version"


def bind(lib: C.CDLL) -> list[str]:
    """Sets restype/argtypes of every function; returns the names missing."""
    missing = []
    for name, (res, args) in FUNCTIONS.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = res
        fn.argtypes = args
    return missing
