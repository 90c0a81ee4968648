"""The font of the overlay legends: the first installed font that draws every class name."""

from __future__ import annotations

import os
import warnings

from PIL import ImageFont

# Fonts tried for the legend, widest coverage first (Debian/Ubuntu, Fedora, macOS paths).
LEGEND_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)
LEGEND_FONT_SIZE = 12


def legend_font(names: list[str]) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The first font of :data:`LEGEND_FONTS` with a glyph for every character of ``names`` (else the one
    covering most names, with a warning naming those drawn as boxes)."""
    best, best_missing = None, None
    for candidate in LEGEND_FONTS:
        if not os.path.exists(candidate):
            continue
        try:
            font = ImageFont.truetype(candidate, LEGEND_FONT_SIZE)
        except OSError:
            continue
        missing = [name for name in names if not _covers(font, name)]
        if not missing:
            return font
        if best_missing is None or len(missing) < len(best_missing):
            best, best_missing = font, missing
    if best is None:
        best = ImageFont.load_default(LEGEND_FONT_SIZE)
        best_missing = [name for name in names if not name.isascii()]
    if best_missing:
        shown = ", ".join(repr(n) for n in best_missing[:3]) + (" ..." if len(best_missing) > 3 else "")
        warnings.warn(
            f"overlay legend: no installed font has the glyphs of {shown}; they show as boxes (install a font "
            "with wide coverage, e.g. fonts-noto-cjk)",
            stacklevel=3,
        )
    return best


def _covers(font: ImageFont.FreeTypeFont, text: str) -> bool:
    """Whether ``font`` draws every character of ``text`` with its own glyph, not the missing-glyph box."""
    missing = _glyph(font, "\U0010fffd")  # a private-use character no font draws
    return all(ch.isspace() or _glyph(font, ch) != missing for ch in set(text))


def _glyph(font: ImageFont.FreeTypeFont, ch: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(ch)
    return mask.size, bytes(mask)
