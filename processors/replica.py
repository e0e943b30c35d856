"""Which processor replica this process is: its stable id and its own state folder.

Each replica needs an id that is unique among the live replicas and stable across its
restarts (it is the Kafka ``transactional.id`` that fences a crashed run's open transaction,
and the static ``group.instance.id``), and a RocksDB folder of its own. Without a hand-set
``DROPS_PROCESSOR__INSTANCE`` a replica claims the first free *slot* under the state folder,
``<state_dir>/replica-<k>``: a slot is free when no live process holds the exclusive
``flock`` on its ``lock`` file (the kernel drops the lock when its process dies, kill -9
included). The slot's id is derived from the host's name and the slot's folder (and kept in
its ``instance`` file, for operators), so a replica restarted on the same folder takes the
same slot back, and with it its id and its state; and one whose folder was wiped (to rebuild
its state from the changelog) still has its id, which fences the crashed run's transaction
at once (a new id would leave it open, holding back every read_committed reader of the drops
topic until the broker's transaction timeout).
Replicas on one machine (or containers sharing one state volume) each claim a slot of their
own; replicas on separate machines each take slot 0 of their own disk, with distinct ids.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from drops import slots
from drops.stages import ProcessorSettings


@dataclass(frozen=True, slots=True)
class Replica:
    instance: str  # unique among the live replicas, stable across restarts
    state_dir: Path  # this replica's own RocksDB folder
    lock_fd: int | None  # the held lock (None: a hand-set instance, no slot claimed)


def claim(settings: ProcessorSettings) -> Replica:
    """This process's replica: the hand-set ``DROPS_PROCESSOR__INSTANCE`` with the state
    folder as it is, or the first free slot under it (held until the process ends)."""
    if settings.processor.instance:
        return Replica(settings.processor.instance, settings.state_dir, None)
    root = settings.state_dir
    k, fd = slots.claim(lambda k: root / f"replica-{k}" / "lock")
    folder = root / f"replica-{k}"
    return Replica(_instance_id(folder), folder, fd)


def _instance_id(folder: Path) -> str:
    path = folder / "instance"
    try:
        got = path.read_text().strip()
    except FileNotFoundError:
        got = ""
    if got:
        return got
    # the same host and folder give the same id; another host or folder, another one
    seed = f"{socket.gethostname()}\0{folder.resolve()}".encode()
    new = hashlib.blake2b(seed, digest_size=6).hexdigest()
    tmp = folder / "instance.tmp"
    tmp.write_text(new + "\n")
    os.replace(tmp, path)  # a crash leaves the old file or the whole new one
    return new
