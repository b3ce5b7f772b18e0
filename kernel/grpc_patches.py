"""A fix for grpc.aio's client, applied once per process (kernel/tls.py installs it).

The bug (grpc/grpc#36066, open; the upstream fix is grpc/grpc#43486, not released in the pinned
grpcio 1.85.1): when a server ends a client-streaming or bidi call before the client has
half-closed -- a refusal such as PERMISSION_DENIED or INVALID_ARGUMENT, sent as soon as the call's
headers arrive -- a request message the client writes just after fails in Core. grpc.aio's
`_StreamRequestMixin._write` then calls `set_internal_error` unconditionally, which overwrites the
status the server had already delivered: the caller sees `INTERNAL: Internal error from Core`
(`Failed "execute_batch": (SendMessageOperation,)`) instead of the server's code and message.
Found as a flaky test here (an unauthorized reflection call read INTERNAL 2 times in 300 on 2
loaded cores); any client stream that a service refuses before reading it is exposed the same way.

The fix mirrors the upstream one: after a failed write, the call's own status wins. If Core has
delivered it, it is raised as it is; if not yet, the write waits up to `STATUS_GRACE_S` for it
(the server's trailers are normally already in flight when the write fails); only when none comes
is the write's failure reported as INTERNAL, as before (Core does not always deliver a status
when it rejects a batch synchronously, and waiting for one then would hang: grpc/grpc#34148).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc._cython import cygrpc
from grpc.aio import _call

# The longest a failed write waits for the call's status before reporting INTERNAL.
STATUS_GRACE_S = 1.0
# The grpcio versions whose `_write` this replaces (checked: a newer grpcio may carry the fix).
PATCHED_VERSIONS = ("1.85.",)

_installed = False


async def _write(self: Any, request: Any) -> None:
    """`_StreamRequestMixin._write` of grpcio 1.85.1, except after a failed send (see above)."""
    if self.done():
        raise asyncio.InvalidStateError(_call._RPC_ALREADY_FINISHED_DETAILS)
    if self._done_writing_flag:
        raise asyncio.InvalidStateError(_call._RPC_HALF_CLOSED_DETAILS)
    if not self._metadata_sent.is_set():
        await self._metadata_sent.wait()
        if self.done():
            await self._raise_for_status()

    serialized_request = _call._common.serialize(request, self._request_serializer)
    try:
        await self._cython_call.send_serialized_message(serialized_request)
    except cygrpc.InternalError as err:
        if not self._cython_call.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._cython_call.status()), STATUS_GRACE_S)
            except TimeoutError:
                self._cython_call.set_internal_error(str(err))
        await self._raise_for_status()
    except asyncio.CancelledError:
        if not self.cancelled():
            self.cancel()
        raise


def install() -> bool:
    """Replaces grpc.aio's `_write` once; False (and nothing changed) on an unchecked grpcio."""
    global _installed
    if _installed:
        return True
    if not grpc.__version__.startswith(PATCHED_VERSIONS) or not hasattr(_call._StreamRequestMixin, "_write"):
        return False
    _call._StreamRequestMixin._write = _write  # type: ignore[method-assign]
    _installed = True
    return True
