"""Atomic file and directory writes: write to a temporary name, fsync, rename; plain JSON values; and reading
a text file with one-line errors (:func:`read_text_file`).

A reader (or a process that was killed mid-write) sees either the old content or the new,
never a partial file. Temporary names start with ``.tmp-`` so that listings can skip them.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

TMP_PREFIX = ".tmp-"
_UMASK = os.umask(0)
os.umask(_UMASK)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry (the rename itself) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file ordinary permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is None:  # a failed write (disk full, quota) names no file: name the one being written
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays to Python, tuples to lists, NaN and infinities to None
    (strict JSON has neither), and any other object (a path, a library's enum) to its string."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "item"):  # a 0-d tensor of another library
        return jsonable(obj.item())
    return str(obj)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and directory below ``root`` (before renaming it into place)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


@contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on success fsync it and rename it to ``final``.

    If the body raises (or the process dies), ``final`` is untouched and the temporary
    directory is removed (or left behind with a ``.tmp-`` name that every listing ignores).
    An existing ``final`` is replaced only after the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + final.name + ".", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        publish_directory(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_directory(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """fsync a fully written directory ``tmp`` and rename it to ``final`` (replacing an old one)."""
    tmp, final = Path(tmp), Path(final)
    fsync_tree(tmp)
    if final.exists():
        old = final.parent / f"{TMP_PREFIX}old-{final.name}.{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


def apply_umask(root: str | os.PathLike) -> None:
    """Give every file and folder below ``root`` the ordinary permissions (0666/0777 less the umask).

    Some writers (safetensors) create 0600 files, which other users of a shared cluster cannot read.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o777 & ~_UMASK)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o666 & ~_UMASK)


_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_UNIT_NEW, _UNIT_OLD = f"{TMP_PREFIX}unit-new.", f"{TMP_PREFIX}unit-old."  # + the writer's PID


@contextmanager
def files_together(final: str | os.PathLike, names: tuple[str, ...]) -> Iterator[Path]:
    """Yield a temporary folder inside ``final``; on success the entries ``names`` written there
    replace those of ``final`` as one unit: every old one goes (also one the new set lacks), every new
    one comes. A failure or interruption before that leaves ``final`` as it was.

    The swap is a few renames, done with SIGINT/SIGTERM/SIGHUP held back, so that only a power cut or
    ``kill -9`` in that moment can leave old and new entries side by side. An entry of ``final`` that is
    of another type than it would be written as (a folder where a file goes) is refused, not removed.
    """
    final = Path(final)
    final.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(final)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_UNIT_NEW}{os.getpid()}.", dir=final))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        try:
            yield tmp
        except OSError as e:  # name the file where it was going, not the temporary folder
            if e.filename and str(e.filename).startswith(str(tmp)):
                raise OSError(e.errno, e.strerror, str(final) + str(e.filename)[len(str(tmp)):]) from None
            raise
        _check_types(tmp, final, names)
        fsync_tree(tmp)
        old = final / f"{_UNIT_OLD}{os.getpid()}"
        old.mkdir(exist_ok=True)
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
        try:
            for name in names:
                if os.path.lexists(final / name):
                    os.replace(final / name, old / name)
                if os.path.lexists(tmp / name):
                    os.replace(tmp / name, final / name)
            fsync_dir(final)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_types(new: Path, final: Path, names: tuple[str, ...]) -> None:
    for name in names:
        now, later = final / name, new / name
        if now.exists() and later.exists() and now.is_dir() != later.is_dir():
            kind = "a folder" if now.is_dir() else "a file"
            raise OSError(errno.EISDIR if now.is_dir() else errno.ENOTDIR, f"is {kind}, not what is written there", str(now))


def _remove_abandoned(final: Path) -> None:
    """Temporary folders of an earlier :func:`files_together` whose process is gone (killed mid-write)."""
    for prefix in (_UNIT_NEW, _UNIT_OLD):
        for path in final.glob(prefix + "*"):
            pid = path.name[len(prefix):].split(".")[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with ``pid`` exists (0 and negative PIDs name none)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_text_file(path: str | Path, error: type[Exception]) -> str:
    """The UTF-8 text of ``path``, line endings as written (for ``csv``); a file that cannot be read, or is not
    UTF-8 text, raises ``error`` with one line naming it."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file") from None
