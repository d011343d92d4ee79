"""Progress of a long evaluation: the stage running, stages done, time elapsed and an estimate of the time left."""
from __future__ import annotations

import sys
from typing import TextIO


class StageProgress:
    """A ``progress`` callback for :func:`lrprec.evaluate.faithfulness.faithfulness`, drawn as a tqdm bar on stderr.

    The evaluation calls ``start(total)`` once it knows its stages, then the object with each
    stage's name as the stage begins; the estimate of the time left is tqdm's (stages left × mean
    time per stage so far). Before ``start`` (and after ``close``) messages are printed as lines.
    """

    def __init__(self, file: TextIO | None = None):
        self.file = file or sys.stderr
        self.bar = None
        self._running = False

    def start(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, file=self.file, unit="stage", mininterval=0, dynamic_ncols=True,
                        bar_format="{desc}: {n_fmt}/{total_fmt} stages done [{elapsed} elapsed, ~{remaining} left]")

    def __call__(self, message: str) -> None:
        if self.bar is None:
            print(message, file=self.file, flush=True)
            return
        if self._running:
            self.bar.update(1)
        self._running = True
        self.bar.set_description_str(message)

    def close(self, complete: bool = True) -> None:
        """End the display; ``complete``: the last stage finished (False after an error)."""
        if self.bar is not None:
            if complete:
                self.bar.update(max(0, self.bar.total - self.bar.n))
            self.bar.close()
            self.bar = None
