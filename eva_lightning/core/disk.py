"""A full disk while a run writes: one line naming the file, the space it needed and how to go on (no stack trace).

Free of torch imports: ``eva`` installs :func:`quiet_disk_full_in_threads` before it imports Lightning.
"""

from __future__ import annotations

import errno
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from eva_lightning.core.errors import EvaError

#: errno values that mean "no room left" (a full disk, a used-up quota)
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
#: what to do after freeing space, by what was being written
RESUME_FIT = "free some space, then continue the run with the same eva fit command plus --ckpt_path last"
KEEPS_LAST = "the previous checkpoint is kept intact; " + RESUME_FIT


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def disk_full_message(path: str | Path, needed: int | None = None, then: str = RESUME_FIT) -> str:
    """``the disk is full: could not write PATH (needs about N MB; M MB free there); THEN``."""
    folder = Path(path).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"{_size(shutil.disk_usage(folder).free)} free there"
    except OSError:
        free = "free space unknown"
    need = f"needs about {_size(needed)}; " if needed else ""
    return f"the disk is full: could not write {path} ({need}{free}); {then}"


@contextmanager
def writing(path: str | Path, needed: int | None = None, then: str = RESUME_FIT) -> Iterator[None]:
    """Turn a full disk while writing ``path`` into an :class:`EvaError` naming it; other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise EvaError(disk_full_message(path, needed, then)) from None


def quiet_disk_full_in_threads() -> None:
    """A background writer (TensorBoard's event writer) that hits a full disk keeps the error for the main thread,
    which reports it in one line; Python would also print the thread's stack trace. All else prints as before."""
    if getattr(threading.excepthook, "eva_quiet", False):
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and is_disk_full(args.exc_value):
            return
        previous(args)

    hook.eva_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook
