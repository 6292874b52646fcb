# SPDX-License-Identifier: MIT
"""One exception class per kvw_status, each carrying the library's sentence.

    try:
        req.wait()
    except kvwire.PeerDeadError as e:
        print(e.status_name, e.sentence)

Every class derives from KvwireError and, where one fits, from the built-in
exception a Python caller would expect (TimedOutError is a TimeoutError,
ConnRefusedError a ConnectionRefusedError, InvalidError a ValueError, ...).
"""
from __future__ import annotations

from . import _abi


class KvwireError(Exception):
    """A kvwire call or request failed.

    Attributes: status (the negative kvw_status), status_name ("KVW_ERR_..."),
    sentence (what the library said to do: kvw_ctx_last_error at the failure,
    "" when it said nothing), where (the call or request that failed).
    """
    status: int = 0

    def __init__(self, message: str, *, status: int | None = None, sentence: str = "",
                 where: str = ""):
        super().__init__(message)
        if status is not None:
            self.status = status
        self.status_name = _abi.STATUS_NAMES.get(self.status, f"KVW_ERR_{self.status}")
        self.sentence = sentence
        self.where = where
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable across processes (multiprocessing, asyncio executors)
        return (_rebuild, (type(self), self.message, self.status, self.sentence, self.where))


def _rebuild(cls, message, status, sentence, where):
    return cls(message, status=status, sentence=sentence, where=where)


class InvalidError(KvwireError, ValueError):
    status = _abi.KVW_ERR_INVALID


class NoMemError(KvwireError, MemoryError):
    status = _abi.KVW_ERR_NOMEM


class UnsupportedError(KvwireError, NotImplementedError):
    status = _abi.KVW_ERR_UNSUPPORTED


class TimedOutError(KvwireError, TimeoutError):
    """The request's deadline passed while the peer was alive."""
    status = _abi.KVW_ERR_TIMEDOUT


class PeerDeadError(KvwireError, ConnectionError):
    """The connection was lost or the peer's keepalive expired."""
    status = _abi.KVW_ERR_PEER_DEAD


class AbortedError(KvwireError):
    """kvw_req_abort() by this side or the peer (or the endpoint was closed)."""
    status = _abi.KVW_ERR_ABORTED


class RejectedError(KvwireError, PermissionError):
    """A descriptor outside the grant or the registered memory was refused."""
    status = _abi.KVW_ERR_REJECTED


class ProtoError(KvwireError):
    status = _abi.KVW_ERR_PROTO


class VersionError(KvwireError):
    status = _abi.KVW_ERR_VERSION


class AuthError(KvwireError, PermissionError):
    status = _abi.KVW_ERR_AUTH


class BusyError(KvwireError):
    status = _abi.KVW_ERR_BUSY


class MemlockError(KvwireError, MemoryError):
    status = _abi.KVW_ERR_MEMLOCK


class IOFailedError(KvwireError, OSError):
    status = _abi.KVW_ERR_IO


class ConnRefusedError(KvwireError, ConnectionRefusedError):
    status = _abi.KVW_ERR_CONNREFUSED


class NotFoundError(KvwireError, LookupError):
    status = _abi.KVW_ERR_NOT_FOUND


class ClosedError(KvwireError):
    """The endpoint, listener or context was already closed."""
    status = _abi.KVW_ERR_CLOSED


class WaitTimeout(TimeoutError):
    """wait(timeout=...) returned before the request finished (the request goes on).

    Not a KvwireError: the request did not fail; its own deadline is separate.
    """


BY_STATUS: dict[int, type[KvwireError]] = {
    cls.status: cls for cls in (
        InvalidError, NoMemError, UnsupportedError, TimedOutError, PeerDeadError, AbortedError,
        RejectedError, ProtoError, VersionError, AuthError, BusyError, MemlockError,
        IOFailedError, ConnRefusedError, NotFoundError, ClosedError)
}


def error_class(status: int) -> type[KvwireError]:
    return BY_STATUS.get(status, KvwireError)


def make_error(status: int, where: str, sentence: str, strerror: str) -> KvwireError:
    """The exception for `status` raised by `where`, message = where + status + sentence."""
    msg = f"{where}: {strerror}"
    if sentence:
        msg += f" -- {sentence}"
    return error_class(status)(msg, status=status, sentence=sentence, where=where)
