"""Processor replica slots: distinct ids for live replicas, the same id after a restart."""

from __future__ import annotations

import os
from pathlib import Path

from drops.settings import Settings
from processors.replica import claim


def test_live_replicas_get_distinct_slots_and_a_restart_keeps_its_id(tmp_path: Path) -> None:
    s = Settings(state_path=tmp_path / "state")
    a = claim(s)
    b = claim(s)  # a second replica while the first holds its slot
    assert a.state_dir != b.state_dir and a.instance != b.instance
    assert {a.state_dir.name, b.state_dir.name} == {"replica-0", "replica-1"}
    assert a.lock_fd is not None
    os.close(a.lock_fd)  # the first replica dies: the kernel drops its lock
    again = claim(s)
    assert (again.instance, again.state_dir) == (a.instance, a.state_dir)
    assert (s.state_dir / "replica-0" / "instance").read_text().strip() == a.instance


def test_a_hand_set_instance_keeps_todays_folder(tmp_path: Path) -> None:
    s = Settings(state_path=tmp_path / "state", processor_instance="p7")
    r = claim(s)
    assert (r.instance, r.state_dir, r.lock_fd) == ("p7", s.state_dir, None)


def test_a_wiped_state_folder_keeps_the_replica_id(tmp_path: Path) -> None:
    """Wiping the state folder (to rebuild it from the changelog) must not change the id: it
    is the transactional id that fences the crashed run's open transaction. A new id left it
    open, and read_committed readers of the drops topic waited for the broker's timeout
    (test_kill_9_and_restart_lose_and_repeat_nothing read too few drops)."""
    import shutil

    s = Settings(state_path=tmp_path / "state")
    a = claim(s)
    assert a.lock_fd is not None
    os.close(a.lock_fd)  # killed
    shutil.rmtree(s.state_dir)
    again = claim(s)
    assert (again.instance, again.state_dir) == (a.instance, a.state_dir)
    other = claim(Settings(state_path=tmp_path / "elsewhere"))
    assert other.instance != a.instance  # another folder, another replica
