"""Which exceptions mean the world failed (storage, memory), not the input: one place to ask."""
from __future__ import annotations

import errno

from datagen import UserError


class StorageFailed(UserError):
    """The output storage cannot take the run's writes: the run stops, nothing half-committed."""


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def is_storage_error(e: BaseException) -> bool:
    """An object store or disk that failed, timed out or dropped the connection."""
    if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return False  # the path is wrong: the user fixes it, retrying does not
    if type(e).__module__.startswith("av."):
        return False  # PyAV's errno errors come from decoding a local copy: the file, not the store
    if isinstance(e, (OSError, TimeoutError)):
        return True
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return False
    if isinstance(e, BotoCoreError):  # endpoint unreachable, read timeout, connection closed
        return True
    # the server answered with a 5xx ("InternalError", "SlowDown", "ServiceUnavailable")
    return isinstance(e, ClientError) and int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) >= 500


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA (torch.OutOfMemoryError, a RuntimeError) or host (MemoryError) out of memory."""
    if isinstance(e, MemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()
