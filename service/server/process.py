"""Process helpers of the service's child processes (workers, `liandan dashboard`)."""

from __future__ import annotations

import ctypes
import signal

__all__ = ["die_with_parent"]


def die_with_parent() -> None:
    """Linux: SIGKILL this process when the process that started it dies (kill -9 of
    `liandan serve` must not leave a worker running a study that is about to be requeued)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere the heartbeat thread's parent check does it, a beat later
