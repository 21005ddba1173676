"""Progress a person can follow on stderr: what is measured now, how far, and the time left (tqdm)."""
from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    """`steps` units of work (warm-ups, repetitions, per-layer passes); `stage` names what runs now. Updated only
    between timed repetitions, never inside one."""

    def __init__(self, steps: int, title: str):
        self.title = title
        self.bar = tqdm(total=steps, file=sys.stderr, dynamic_ncols=True, mininterval=0.5, leave=True,
                        bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} steps [{elapsed} elapsed, {remaining} left]")
        self.what = ""
        self.bar.set_description_str(title)

    def start(self, what: str) -> None:
        self.what = what
        self.bar.set_description_str(f"{self.title}: {what}")

    def done(self, stage: str) -> None:
        self.bar.set_description_str(f"{self.title}: {self.what}, {stage}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
