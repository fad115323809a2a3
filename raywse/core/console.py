"""What a person running a batch job sees, and where everything else goes.

A job runs inside :func:`job_console`: its banners, progress bars and one-line summaries (:func:`say`,
:func:`progress`) go to the terminal; everything else the process and its children write to stdout or stderr —
library logs and warnings, Ray's driver-side Data logs, C++ core-worker messages, subprocess output — goes to one log
file, whose path is printed first. Ray's worker processes keep their own logs in the Ray session directory (``ray.init``
with ``log_to_driver=False``: see :func:`raywse.core.ray_session.ensure_ray`), also printed. ``verbose=True`` leaves
every stream where it is and lets Ray forward worker output, as before.

The redirection is of file descriptors 1 and 2, so it catches output that never passes through Python's ``sys``
streams; outside :func:`job_console` (tests, the library used from Python) nothing is redirected and :func:`say`
prints to stdout.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tqdm import tqdm

_screen: IO[str] | None = None


def quiet() -> bool:
    """Whether a :func:`job_console` is sending library output to a log file (Ray then keeps worker logs to itself)."""
    return _screen is not None


def screen() -> IO[str]:
    """The terminal: the saved stdout inside a :func:`job_console`, else ``sys.stdout``."""
    return _screen if _screen is not None else sys.stdout


def say(line: str) -> None:
    """One line for the person running the job (also in the log file inside a :func:`job_console`)."""
    print(line, file=screen(), flush=True)
    if _screen is not None:
        print(line, flush=True)


def progress(total: int, desc: str, unit: str = "it", enabled: bool = True) -> tqdm:
    """A progress bar on the terminal (never in the log file); none when the screen is not a terminal (a file or a
    pipe would keep every redrawn frame)."""
    out = screen()
    shown = enabled and out.isatty()
    return tqdm(total=total, desc=f"      {desc}", unit=unit, file=out, disable=not shown, leave=True)


@contextlib.contextmanager
def job_console(log_file: str | os.PathLike, verbose: bool = False) -> Iterator[Path]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, inherited by child processes) to ``log_file``
    while the block runs; :func:`say` and :func:`progress` still reach the terminal. A failure's traceback is also
    written to the log. ``verbose``: redirect nothing."""
    global _screen
    log_path = Path(log_file).resolve()
    if verbose or _screen is not None:
        yield log_path
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log_path, "a", buffering=1) as log:  # opened first: a bad path fails before anything is redirected
        saved_out, saved_err = os.dup(1), os.dup(2)
        try:
            _screen = os.fdopen(os.dup(saved_out), "w", buffering=1)
            print(f"log: {log_path} (--verbose prints it here)", file=_screen, flush=True)
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield log_path
        except BaseException:
            traceback.print_exc()  # into the log; the caller decides what the terminal sees
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            if _screen is not None:
                _screen.close()
            _screen = None
