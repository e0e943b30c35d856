"""Replica slots on one disk: the first folder of a series that no live process holds.

A replica of a stage that keeps local files (a processor's RocksDB, an API's embedded chDB)
needs a folder of its own. :func:`claim` takes the first slot ``k`` whose lock file no live
process holds with an exclusive ``flock``; the kernel drops the lock when its process dies
(kill -9 included), so a restarted replica takes a free slot again, the lowest first: with
replicas restarted one at a time, its own. Replicas on separate disks each take slot 0.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

MAX_SLOTS = 1024


def claim(lock_path: Callable[[int], Path]) -> tuple[int, int]:
    """The first free slot ``k`` (its lock file is ``lock_path(k)``) and the held lock's fd,
    kept open for the life of the process."""
    for k in range(MAX_SLOTS):
        path = lock_path(k)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live replica holds it
        return k, fd
    raise RuntimeError(f"no free replica slot like {lock_path(0)}")
