"""Checks of a prediction's options, made before any work: the overlap, the vector output and its CRS."""

from __future__ import annotations

import math
from pathlib import Path

from aeroseg.errors import UserError
from aeroseg.prediction.streaming import WindowOptions, count_windows
from aeroseg.prediction.vector import vector_driver


def check_overlap(
    overlap: float, window: int | None = None, image: tuple[str, int, int] | None = None
) -> None:
    """Raise :class:`UserError` for an overlap outside [0, :data:`MAX_OVERLAP`]; above it, the message says
    what it would cost at the user's ``window``: the windows of ``image`` (name, height, width) when given."""
    if not 0 <= overlap <= MAX_OVERLAP:
        cost = ""
        if MAX_OVERLAP < overlap < 1 and window:
            if image is not None:
                name, height, width = image
                count, usual = (
                    count_windows(height, width, WindowOptions(window=window, overlap=o))
                    for o in (overlap, 0.25)
                )
                cost = f" ({count:,} windows of {window}² for {name} ({width}×{height} px), against {usual:,} at 0.25)"
            else:
                step, usual = (max(1, math.floor(window * (1 - o))) for o in (overlap, 0.25))
                cost = f" (a window of {window}² every {step} px: {(usual / step) ** 2:,.0f}× the windows of 0.25)"
        raise UserError(f"--overlap is a fraction of the window in [0, {MAX_OVERLAP}], got {overlap:g}{cost}")


MAX_OVERLAP = 0.9  # 3000² at window 512: 0.25 → 49 windows, 0.9 → 2,116, 0.99 → 249,001


def check_vector_options(vector: str | Path, *, min_area: float, simplify: float) -> None:
    if min_area < 0 or simplify < 0:
        raise UserError(f"--min-area and --simplify must be >= 0, got {min_area:g} and {simplify:g}")
    vector_driver(vector)


def no_crs_message(source: str, how: str) -> str:
    return (
        f"{source} has no CRS, so its polygons could only be in pixel coordinates (column, row), which GIS "
        f"software reads as degrees; pass {how} to write them anyway, marked as pixel coordinates"
    )
