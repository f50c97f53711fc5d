"""Claiming a unit of work with a lock file, so that concurrent evaluators never do the same work.

A claim is a file holding the owner's host, PID and a random token, written under a temporary name and
hard-linked to the lock's name (atomic, and exclusive, on local filesystems and NFS), so that it is
never seen half-written: an empty or unreadable lock is a crash's leftover and is broken at once.
(Where hard links are not supported, the lock is created with ``O_CREAT | O_EXCL`` and written in
place.) A claim is *stale* when its owner is gone: on the same host, when the PID no longer exists; from another host (where the PID cannot be
checked), when the file is older than ``timeout`` seconds. A stale claim is broken by renaming it
away (only one breaker's rename succeeds) and claiming afresh.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
import uuid
from pathlib import Path

from losslens.fsio import TMP_PREFIX, pid_alive

HOST = socket.gethostname()


def _read(path: Path) -> dict | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _time(owner: dict) -> float:
    t = owner.get("time")
    return float(t) if isinstance(t, (int, float)) else 0.0  # no time: as old as can be


def _pid(owner: dict) -> int:
    pid = owner.get("pid")
    return pid if isinstance(pid, int) and pid > 0 else -1  # kill(0 or -1, 0) would ask about a group


_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def _claim_error(e: OSError, path: Path) -> OSError:
    """Disk full, quota, permissions: an error that names the lock, not a bare errno."""
    return OSError(e.errno, f"cannot claim a unit of work ({e.strerror})", str(path))


class Claim:
    """A lock file at ``path``: :meth:`acquire` is True when this process now holds it; :meth:`release` gives it up."""

    def __init__(self, path: str | os.PathLike, timeout: float = 6 * 3600):
        self.path = Path(path)
        self.timeout = timeout
        self.token = uuid.uuid4().hex
        self.held = False

    def acquire(self) -> bool:
        for _ in range(2):  # a second try after breaking a stale claim
            if self._create():
                self.held = True
                return True
            if not self._break_if_stale():
                return False
        return False

    def _create(self) -> bool:
        """Write the owner record beside the lock, then link it to the lock's name: the lock appears
        complete or not at all (so an unreadable lock is garbage, never one being written), and
        only one link succeeds. False when the lock exists."""
        record = json.dumps({"host": HOST, "pid": os.getpid(), "token": self.token, "time": time.time()})
        tmp = self.path.with_name(f"{TMP_PREFIX}{self.path.name}.{self.token}")
        try:
            with open(tmp, "x") as f:
                f.write(record)
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno in _NO_HARD_LINKS:
                return self._create_in_place(record)
            raise _claim_error(e, self.path) from None
        finally:
            tmp.unlink(missing_ok=True)

    def _create_in_place(self, record: str) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as e:
            raise _claim_error(e, self.path) from None
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return True

    def _break_if_stale(self) -> bool:
        owner = _read(self.path)
        if owner is None:
            # Empty or unreadable: left by a crash (claims appear complete, see _create). Break it now.
            if not self.path.exists():
                return True  # released meanwhile
        elif owner.get("host") == HOST:
            if pid_alive(_pid(owner)):
                return False
        elif time.time() - _time(owner) < self.timeout:
            return False
        aside = self.path.with_name(f"{self.path.name}.stale-{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # someone else broke it first: try to claim
        moved = _read(aside)
        if moved is not None and (owner is None or moved.get("token") != owner.get("token")):
            # Between our read and rename another process broke the stale claim and made its own:
            # we moved a live claim. Put it back if the name is still free.
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True

    def release(self) -> None:
        if self.held:
            owner = _read(self.path)
            if owner is not None and owner.get("token") == self.token:
                self.path.unlink(missing_ok=True)
            self.held = False
