"""aeroseg's plain progress lines, read back as a fraction of the work done.

When its stderr is not a terminal (a pipe, as here), every aeroseg command writes one plain line every 30 s
(``aeroseg.progress.LogProgress``) and one when the work ends::

    predict scene: 120/480 windows (25%), 0:01:10 elapsed, about 0:03:30 left
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(r"^(?P<desc>[^:]*): (?P<done>\d+(?:\.\d+)?)/(?P<total>\d+(?:\.\d+)?) (?P<unit>\w+?)s\b")


@dataclass(frozen=True)
class Progress:
    """One progress line: ``done`` of ``total`` ``unit``s of the work named ``desc``."""

    desc: str
    done: float
    total: float
    unit: str

    @property
    def percent(self) -> float:
        return 100.0 * min(self.done, self.total) / self.total if self.total else 0.0


def parse_progress(line: str) -> Progress | None:
    """The progress that ``line`` reports, or None for any other line (messages, warnings, the summary)."""
    match = _LINE.match(line.strip())
    if match is None or float(match["total"]) <= 0:
        return None
    return Progress(match["desc"], float(match["done"]), float(match["total"]), match["unit"])
