"""Progress lines for the slow parts of bringing the stack up: a newcomer never stares at a silent terminal.

Every line carries the time since the command started (`[  42s] ...`). Work that runs for minutes without
output of its own (a pip install into a runtime virtualenv) gets a heartbeat line every `every_s` seconds
from a background thread, naming the step and the log to follow. Lines from several threads (the vLLM and
Caikit environments build at the same time) are printed whole, one at a time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

Reporter = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def format_elapsed(seconds: float) -> str:
    """`42s`, `3m05s`: short enough for a line prefix, exact enough to compare two runs."""
    whole = max(0, round(seconds))
    return f"{whole}s" if whole < 60 else f"{whole // 60}m{whole % 60:02d}s"


class Progress:
    """A reporter that stamps each line with the elapsed time; safe to call from several threads."""

    def __init__(self, report: Reporter | None = None, *, started: float | None = None) -> None:
        self._report = report or _quiet
        self.started = time.monotonic() if started is None else started
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        stamp = format_elapsed(time.monotonic() - self.started)
        with self._lock:
            self._report(f"[{stamp:>6}] {line}")

    @contextlib.contextmanager
    def heartbeat(self, what: Callable[[], str], *, every_s: float = 30.0) -> Iterator[None]:
        """While the block runs, print `what()` (e.g. "still building X: step 2/3") every `every_s` seconds."""
        done = threading.Event()
        t0 = time.monotonic()

        def beat() -> None:
            while not done.wait(every_s):
                self(f"{what()} ({format_elapsed(time.monotonic() - t0)} so far)")

        thread = threading.Thread(target=beat, name="progress-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def as_progress(report: Reporter | Progress | None) -> Progress:
    """A Progress for `report` (reused as is when it already is one, so nested steps share one clock)."""
    return report if isinstance(report, Progress) else Progress(report)
