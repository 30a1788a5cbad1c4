"""The second Ctrl-C of ``ablate run``: stop at once, whatever the main thread waits for.

Python runs a signal handler in the main thread only, between two bytecodes, so a main
thread inside SQLite's busy wait (another runner holds the write lock) or joining a worker
that is deep in a step cannot act on Ctrl-C for as long as that lasts. The C-level handler
does write the signal's number to the wakeup fd at once, though: a thread watching it ends
the process on the second press. The first press stays the scheduler's (stop after the
current step). Ending the process is safe at any moment: every database write is one
transaction, every checkpoint is written beside its file and renamed over it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from ablate.store import Store, this_host

RELEASE_WAIT_S = 1.0  # how long the last word may wait for the write lock
# Only a command that owns its process may end it: ``ablate`` and ``python -m ablate`` set
# this (``ablate.cli.main``); the commands called in-process (tests, notebooks) leave the
# second Ctrl-C to the scheduler, which stops after the current step's writes.
OWN_PROCESS = False


@contextmanager
def second_interrupt_exits(store: Store, resume: str) -> Iterator[None]:
    """Within the block, a second SIGINT puts this process's running points back to pending
    (if the write lock comes within a second; else the next run finds them stale), prints
    the command ``resume`` that resumes them, and exits with code 130."""
    if not OWN_PROCESS or threading.current_thread() is not threading.main_thread():
        yield
        return
    read, write = os.pipe()
    os.set_blocking(write, False)
    try:
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except ValueError:  # not the main thread of the main interpreter
        os.close(read)
        os.close(write)
        yield
        return
    done = threading.Event()

    def watch() -> None:
        presses = 0
        while not done.is_set():
            try:
                data = os.read(read, 64)
            except OSError:
                return
            presses += data.count(signal.SIGINT)
            if presses >= 2 and not done.is_set():
                _stop_now(store, resume)

    watcher = threading.Thread(target=watch, daemon=True, name="ablate-second-ctrl-c")
    watcher.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(previous)
        os.write(write, b"\0")  # wakes the watcher, which sees `done`
        watcher.join(timeout=1)
        os.close(write)
        if not watcher.is_alive():
            os.close(read)


def _stop_now(store: Store, resume: str) -> None:
    released = store.release_process(this_host(), os.getpid(), RELEASE_WAIT_S)
    if released is None:
        what = (
            "the points in progress stay 'running' in a process that is gone (the database was locked); "
            "the next run re-queues them"
        )
    else:
        what = f"{released} unfinished point(s) back to pending"
    text = f"stopped at once: {what}; `{resume}` resumes them\n"
    if sys.stderr.isatty():
        text = "\x1b[?25h\n" + text  # the live display hid the cursor
    try:
        os.write(2, text.encode())
    finally:
        os._exit(130)  # no interpreter teardown: a worker thread inside torch would abort it
