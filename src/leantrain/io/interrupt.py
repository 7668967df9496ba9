"""Ctrl-C between steps: the first SIGINT only asks the training loop to stop at the next step
boundary, where it can write a consistent checkpoint; a second SIGINT interrupts at once."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class StopRequest:
    """``with StopRequest() as stop: ... if stop.requested: save(); raise KeyboardInterrupt``.

    Outside the main thread (where Python delivers signals) it installs nothing and never fires.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step (Ctrl-C again to stop now)", flush=True)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
