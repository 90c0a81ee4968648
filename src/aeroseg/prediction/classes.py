"""The class list of ``aeroseg predict``: names, synonyms and the optional background class.

Id scheme of the class raster (written into every output's metadata):

- without ``--background-threshold``: the classes in the order given, ids 0 … N-1;
- with it: id 0 is ``background`` (pixels whose best class score is below the threshold) and the classes
  given are ids 1 … N;
- 255 is nodata (no class: the input pixel is nodata). At most 255 ids, 0 … 254, are therefore available.

A class is a name with one or more prompts (synonyms): ``tree|forest`` is the class ``tree`` whose score
is the maximum of the scores of the prompts ``tree`` and ``forest``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import Tensor

from aeroseg.errors import UserError

BACKGROUND = "background"
NODATA = 255


@dataclass(frozen=True)
class ClassList:
    """Classes to segment: ``names[i]`` is scored by the prompts ``synonyms[i]``."""

    names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...]
    background_threshold: float | None = None

    def __post_init__(self) -> None:
        if not self.names:
            raise UserError("the class list is empty; give e.g. --classes building,road,tree,water")
        for name, prompts in zip(self.names, self.synonyms, strict=True):
            if not name or not prompts or not all(prompts):
                raise UserError(f"class {name!r} has an empty name or synonym; remove the stray ',' or '|'")
        twice = _first_duplicate(self.names) or _first_duplicate(self.prompts)
        if twice is not None:
            raise UserError(f"{twice!r} is given twice in the class list; give each class and synonym once")
        if self.background_threshold is not None:
            if not 0 <= self.background_threshold <= 1:
                raise UserError(f"--background-threshold must be in [0, 1], got {self.background_threshold}")
            if any(name.casefold() == BACKGROUND for name in self.names):
                raise UserError(
                    "'background' is added by --background-threshold; remove it from the class list"
                )
        if len(self.ids_to_names) > NODATA:
            raise UserError(
                f"{len(self.names)} classes given; at most {NODATA} ids fit the uint8 class raster"
            )

    @property
    def prompts(self) -> list[str]:
        """Every synonym of every class, in order: the class list the model sees."""
        return [p for prompts in self.synonyms for p in prompts]

    @property
    def offset(self) -> int:
        """Id of the first class given: 1 when id 0 is background, else 0."""
        return 1 if self.background_threshold is not None else 0

    @property
    def ids_to_names(self) -> list[str]:
        """Name of every id of the class raster (without nodata)."""
        return ([BACKGROUND] if self.offset else []) + list(self.names)

    def reduce(self, probs: Tensor) -> Tensor:
        """Class scores B×N×h×w from prompt probabilities B×P×h×w: the maximum over each class's synonyms."""
        if all(len(s) == 1 for s in self.synonyms):
            return probs
        parts, start = [], 0
        for prompts in self.synonyms:
            parts.append(probs[:, start : start + len(prompts)].amax(dim=1))
            start += len(prompts)
        return torch.stack(parts, dim=1)

    def label(self, best: Tensor, confidence: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Class ids (uint8, h×w) and confidences (float32, h×w) of the pixels.

        ``best`` is the index of the best class (h×w) and ``confidence`` its score; pixels below the background
        threshold get id 0, nodata pixels (``valid`` False) id 255 and confidence NaN.
        """
        ids = best.to(torch.uint8) + self.offset
        if self.background_threshold is not None:
            ids = torch.where(confidence < self.background_threshold, 0, ids)
        ids = torch.where(valid, ids, NODATA).to(torch.uint8)
        return ids, torch.where(valid, confidence, torch.nan).float()


def _first_duplicate(items: list[str] | tuple[str, ...]) -> str | None:
    seen: set[str] = set()
    for item in items:
        if item.casefold() in seen:
            return item
        seen.add(item.casefold())
    return None


def parse_classes(
    text: str | None = None, file: str | Path | None = None, background_threshold: float | None = None
) -> ClassList:
    """A :class:`ClassList` from a comma list (``"building,tree|forest"``) or a file.

    A file is YAML (``.yaml``/``.yml``: a list of names, ``tree|forest`` strings or lists of synonyms, or a
    mapping from name to synonyms) or text (one class per line, ``|`` between synonyms; a ``#`` at the start
    of a line or after a space starts a comment, so ``lane#2`` is a name).
    """
    if (text is None) == (file is None):
        raise UserError("give the classes with either --classes or --classes-file")
    if text is not None:
        entries: list = text.split(",") if text.strip() else []
    else:
        entries = _read_class_file(Path(file))
    return make_class_list(entries, background_threshold)


def make_class_list(entries: list, background_threshold: float | None = None) -> ClassList:
    """A :class:`ClassList` from entries: ``"tree|forest"`` strings, lists of synonyms or (name, synonyms)."""
    names, synonyms = [], []
    for entry in entries:
        name, prompts = _parse_entry(entry)
        names.append(name)
        synonyms.append(prompts)
    return ClassList(tuple(names), tuple(synonyms), background_threshold)


def _parse_entry(entry: object) -> tuple[str, tuple[str, ...]]:
    if isinstance(entry, tuple):  # (name, synonyms) from a YAML mapping
        name, value = entry
        prompts = [name] if value is None else [value] if isinstance(value, str) else value
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise UserError(f"synonyms of class {name!r} must be a string or a list of strings")
        return str(name).strip(), tuple(p.strip() for p in prompts)
    if isinstance(entry, list):
        if not entry or not all(isinstance(p, str) for p in entry):
            raise UserError(f"a class given as a list must hold synonym strings, got {entry!r}")
        return entry[0].strip(), tuple(p.strip() for p in entry)
    if not isinstance(entry, str):
        raise UserError(f"a class must be a name or a list of synonyms, got {entry!r}")
    prompts = tuple(p.strip() for p in entry.split("|"))
    return prompts[0], prompts


def _read_class_file(path: Path) -> list:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot read the classes file {path}: {error.strerror or error}") from None
    if path.suffix.lower() not in (".yaml", ".yml"):
        lines = (re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip() for line in text.splitlines())
        return [line for line in lines if line]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if data is None:
        return []
    if isinstance(data, dict):
        return list(data.items())
    if isinstance(data, list):
        return data
    raise UserError(f"{path} must hold a YAML list of classes or a mapping from class to synonyms")
