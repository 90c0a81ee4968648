"""Writing a dataset in the canonical layout, resumably.

Each raw image (a :class:`Source`) becomes one or more tiles ``<split>/images/<stem>.png`` and
``<split>/masks/<stem>.png``. Every file is written under a temporary name and renamed into place, so a
file with its final name is complete. When all tiles of a source are written, a marker
``.prepare/<split>/<source>.done`` lists them; a later run skips sources whose marker and tiles exist
and redoes the rest (stale temporary files are overwritten). ``dataset.yaml`` is written last: its
presence means the whole dataset is complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from aeroseg.atomic import atomic, remove_stale, write_text
from aeroseg.data.info import DatasetInfo
from aeroseg.errors import UserError
from aeroseg.progress import progress as tqdm
from aeroseg.windows import stride_starts

SPLITS = ("train", "val")
MARKERS = ".prepare"  # folder of per-source completion markers inside the output


@dataclass(frozen=True)
class Source:
    """One raw image of a split and how to load it as (H×W×3 uint8 image, H×W uint8 class ids)."""

    split: str  # "train" or "val"
    name: str  # raw image stem; tiles are <name>_<y0>_<y1>_<x0>_<x1>, untiled outputs <name>
    load: Callable[[], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Tiling:
    """``size``×``size`` windows every ``stride`` px, the last one flush with the border (as mmsegmentation's
    iSAID converter); images smaller than ``size`` are padded (image 0, mask ignore)."""

    size: int
    stride: int


def _per_split() -> dict[str, int]:
    return dict.fromkeys(SPLITS, 0)


@dataclass
class Summary:
    """What a run did, per split: tiles written now, tiles kept from an earlier run, all-ignore tiles
    dropped; and the number of raw images an earlier run had finished."""

    written: dict[str, int] = field(default_factory=_per_split)
    present: dict[str, int] = field(default_factory=_per_split)
    empty: dict[str, int] = field(default_factory=_per_split)
    skipped_sources: int = 0

    def tiles(self, split: str) -> int:
        return self.written[split] + self.present[split]


def tile(
    image: np.ndarray, mask: np.ndarray, tiling: Tiling, ignore_index: int
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (``_<y0>_<y1>_<x0>_<x1>`` suffix, image tile, mask tile) covering the (padded) image."""
    height, width = mask.shape
    pad_h, pad_w = max(0, tiling.size - height), max(0, tiling.size - width)
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
        mask = np.pad(mask, ((0, pad_h), (0, pad_w)), constant_values=ignore_index)
    height, width = mask.shape
    for y in stride_starts(height, tiling.size, tiling.stride):
        for x in stride_starts(width, tiling.size, tiling.stride):
            window = (slice(y, y + tiling.size), slice(x, x + tiling.size))
            yield f"_{y}_{y + tiling.size}_{x}_{x + tiling.size}", image[window], mask[window]


def save_png(array: np.ndarray, path: Path) -> None:
    """Write ``array`` (H×W×3 or H×W uint8) as PNG via a temporary file renamed over ``path``."""
    with atomic(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=3)


class Writer:
    """Writes sources into ``out`` in the canonical layout (see the module docstring)."""

    def __init__(
        self,
        out: Path,
        info: DatasetInfo,
        tiling: Tiling | None,
        *,
        keep_empty: bool = False,
        options: dict[str, str] | None = None,
        hint: str = "check --raw",
    ):
        self.out = Path(out)
        self.info = info
        self.tiling = tiling
        self.keep_empty = keep_empty  # keep tiles whose mask is all ignore (they add no labelled pixel)
        self.options = options or {}  # further settings a resumed run must share (aeroseg prepare labels)
        self.hint = hint  # what to check when a split gets no labelled tile
        self._check_target()
        for split in SPLITS:
            for folder in ("images", "masks"):
                (self.out / split / folder).mkdir(parents=True, exist_ok=True)
            (self.out / MARKERS / split).mkdir(parents=True, exist_ok=True)
        self._check_options()

    def _check_target(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"-o/--output {self.out} is a file; give a folder")
        existing = self.out / "dataset.yaml"
        if existing.is_file():
            previous = DatasetInfo.from_yaml(existing)
            if previous.name != self.info.name:
                raise UserError(
                    f"{self.out} already holds dataset {previous.name!r}; "
                    f"give another -o/--output for {self.info.name}"
                )

    def _check_options(self) -> None:
        """Refuse to resume a run made with other options (its finished tiles would be kept)."""
        size, stride = (self.tiling.size, self.tiling.stride) if self.tiling else (None, None)
        options = (
            f"dataset: {self.info.name}\ntile: {size}\nstride: {stride}\nkeep_empty: {self.keep_empty}\n"
        ) + "".join(f"{key}: {value}\n" for key, value in self.options.items())
        path = self.out / MARKERS / "options.yaml"
        if path.is_file() and path.read_text(encoding="utf-8") != options:
            previous = " ".join(path.read_text(encoding="utf-8").split())
            raise UserError(
                f"{self.out} was prepared with other options ({previous}); "
                "use the same options or another -o/--output"
            )
        write_text(path, options)

    def _paths(self, split: str, stem: str) -> tuple[Path, Path]:
        return self.out / split / "images" / f"{stem}.png", self.out / split / "masks" / f"{stem}.png"

    def _marker(self, source: Source) -> Path:
        return self.out / MARKERS / source.split / f"{source.name}.done"

    def _finished_stems(self, source: Source) -> list[str] | None:
        """The tiles of ``source`` if an earlier run finished it (marker and tiles exist), else None."""
        marker = self._marker(source)
        if not marker.is_file():
            return None
        stems = marker.read_text(encoding="utf-8").split()
        if all(path.is_file() for stem in stems for path in self._paths(source.split, stem)):
            return stems
        return None

    def _write_source(self, source: Source, summary: Summary) -> None:
        image, mask = source.load()
        if image.shape[:2] != mask.shape:
            raise UserError(
                f"{source.split} image {source.name} is {image.shape[1]}×{image.shape[0]} px "
                f"but its label is {mask.shape[1]}×{mask.shape[0]} px"
            )
        ignore = self.info.ignore_index
        pieces = (
            ((source.name + suffix, im, ma) for suffix, im, ma in tile(image, mask, self.tiling, ignore))
            if self.tiling is not None
            else [(source.name, image, mask)]
        )
        stems = []
        for stem, image_tile, mask_tile in pieces:
            if not self.keep_empty and bool((mask_tile == ignore).all()):
                summary.empty[source.split] += 1
                continue
            stems.append(stem)
            image_path, mask_path = self._paths(source.split, stem)
            if image_path.is_file() and mask_path.is_file():
                summary.present[source.split] += 1
                continue
            save_png(np.ascontiguousarray(image_tile), image_path)
            save_png(np.ascontiguousarray(mask_tile), mask_path)
            summary.written[source.split] += 1
        write_text(self._marker(source), "".join(f"{stem}\n" for stem in stems))

    def run(self, sources: Sequence[Source], *, quiet: bool = False) -> Summary:
        """Write every source not already complete, then ``dataset.yaml``."""
        summary = Summary()
        for split in SPLITS:  # what an interrupted run was writing
            for kind in ("images", "masks"):
                if (self.out / split / kind).is_dir():
                    remove_stale(self.out / split / kind)
        for source in tqdm(sources, desc=f"prepare {self.info.name}", unit="img", disable=quiet):
            finished = self._finished_stems(source)
            if finished is not None:
                summary.skipped_sources += 1
                summary.present[source.split] += len(finished)
                continue
            self._write_source(source, summary)
        for split in SPLITS:
            if summary.tiles(split) == 0:
                raise UserError(f"no labelled {split} tiles were produced from the raw data; {self.hint}")
        write_text(self.out / "dataset.yaml", self.info.to_yaml())
        return summary
