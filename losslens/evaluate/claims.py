"""Claiming a unit of work with a lock file, so that concurrent evaluators never do the same work.

A claim is a file created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and NFSv3+),
holding the owner's host, PID and a random token. A claim is *stale* when its owner is gone:
on the same host, when the PID no longer exists; from another host (where the PID cannot be
checked), when the file is older than ``timeout`` seconds. A stale claim is broken by renaming it
away (only one breaker's rename succeeds) and claiming afresh.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

HOST = socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Claim:
    """A lock file at ``path``: :meth:`acquire` is True when this process now holds it; :meth:`release` gives it up."""

    def __init__(self, path: str | os.PathLike, timeout: float = 6 * 3600):
        self.path = Path(path)
        self.timeout = timeout
        self.token = uuid.uuid4().hex
        self.held = False

    def acquire(self) -> bool:
        for _ in range(2):  # a second try after breaking a stale claim
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_if_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": HOST, "pid": os.getpid(), "token": self.token, "time": time.time()}, f)
            self.held = True
            return True
        return False

    def _break_if_stale(self) -> bool:
        owner = _read(self.path)
        if owner is None:
            # Being written this very moment, or unreadable garbage: judge by age alone.
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return True  # released meanwhile
            if age < 60:
                return False
        elif owner.get("host") == HOST:
            if _pid_alive(int(owner.get("pid", -1))):
                return False
        elif time.time() - float(owner.get("time", 0)) < self.timeout:
            return False
        aside = self.path.with_name(f"{self.path.name}.stale-{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # someone else broke it first: try to claim
        moved = _read(aside)
        if owner is not None and moved is not None and moved.get("token") != owner.get("token"):
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
