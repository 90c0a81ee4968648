"""What a dataset's masks mean: class names in id order, which classes are unseen, the ignore id.

A prepared dataset carries this in ``DIR/dataset.yaml``::

    name: isaid
    classes: [ship, storage tank, ...]   # mask id i is classes[i]
    unseen: [tennis court, bridge, ...]  # held out of training (open-vocabulary split)
    ignore_index: 255                    # mask value of unlabelled pixels

The class lists and seen/unseen splits of the three benchmarks live only in the data files
``aeroseg/data/splits/{isaid,dlrsd,openearthmap}.yaml`` (paper Table 1), read by :func:`builtin_split`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aeroseg.errors import DatasetNotFoundError, UserError

BUILTIN = ("isaid", "dlrsd", "openearthmap")  # datasets `aeroseg prepare` knows
_KEYS = ("name", "classes", "unseen", "ignore_index")


@dataclass(frozen=True)
class DatasetInfo:
    """Class names of a segmentation dataset and its seen/unseen split.

    ``classes[i]`` is the name of mask id ``i``; ``unseen`` names the classes kept out of training;
    ``ignore_index`` is the mask value of pixels that are not scored (255).
    """

    name: str  # short dataset name, e.g. "isaid"
    classes: list[str]  # class names in id order
    unseen: list[str] = field(default_factory=list)  # names of the unseen classes (subset of classes)
    ignore_index: int = 255  # mask value of unlabelled pixels

    def __post_init__(self) -> None:
        where = f"dataset {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise UserError("dataset name must be a non-empty string")
        if not isinstance(self.classes, list) or not self.classes:
            raise UserError(f"{where}: 'classes' must be a non-empty list of class names")
        if not isinstance(self.unseen, list):
            raise UserError(f"{where}: 'unseen' must be a list of class names")
        for label in self.classes + self.unseen:
            if not isinstance(label, str) or not label.strip():
                raise UserError(f"{where}: class names must be non-empty strings, got {label!r}")
        for key, names in (("classes", self.classes), ("unseen", self.unseen)):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise UserError(f"{where}: duplicate names in '{key}': {', '.join(duplicates)}")
        unknown = [n for n in self.unseen if n not in self.classes]
        if unknown:
            raise UserError(f"{where}: unseen classes not in 'classes': {', '.join(unknown)}")
        if not isinstance(self.ignore_index, int) or not len(self.classes) <= self.ignore_index <= 255:
            raise UserError(
                f"{where}: ignore_index must be an integer in [{len(self.classes)}, 255], "
                f"got {self.ignore_index!r}"
            )

    @property
    def seen(self) -> list[str]:
        """Names of the seen (training) classes, in id order."""
        unseen = set(self.unseen)
        return [name for name in self.classes if name not in unseen]

    @property
    def seen_ids(self) -> list[int]:
        """Mask ids of the seen classes, ascending."""
        unseen = set(self.unseen)
        return [i for i, name in enumerate(self.classes) if name not in unseen]

    @property
    def unseen_ids(self) -> list[int]:
        """Mask ids of the unseen classes, ascending."""
        unseen = set(self.unseen)
        return [i for i, name in enumerate(self.classes) if name in unseen]

    @classmethod
    def from_dict(cls, data: Any, source: str) -> DatasetInfo:
        """Build from a parsed ``dataset.yaml``; ``source`` names the file in error messages."""
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a mapping with keys {', '.join(_KEYS)}")
        extra = sorted(set(data) - set(_KEYS))
        if extra:
            raise UserError(
                f"{source}: unknown keys {', '.join(map(str, extra))}; allowed: {', '.join(_KEYS)}"
            )
        missing = [key for key in ("name", "classes") if key not in data]
        if missing:
            raise UserError(f"{source}: missing key(s) {', '.join(missing)}")
        return cls(
            name=data["name"],
            classes=data["classes"],
            unseen=data.get("unseen") or [],
            ignore_index=data.get("ignore_index", 255),
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> DatasetInfo:
        """Read ``dataset.yaml``; raises :class:`DatasetNotFoundError` if it does not exist."""
        path = Path(path)
        if not path.is_file():
            raise DatasetNotFoundError(
                f"missing {path}: a dataset folder needs dataset.yaml (name, classes, unseen, ignore_index) "
                "beside train/ and val/; `aeroseg prepare` writes it"
            )
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise UserError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
        return cls.from_dict(data, str(path))

    def to_yaml(self) -> str:
        """The ``dataset.yaml`` text for this dataset."""
        data = {
            "name": self.name,
            "classes": list(self.classes),
            "unseen": list(self.unseen),
            "ignore_index": self.ignore_index,
        }
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def builtin_split(name: str) -> tuple[DatasetInfo, dict[str, Any]]:
    """The packaged split file of a benchmark: its :class:`DatasetInfo` and the raw-label codes.

    The second value holds the keys of ``splits/<name>.yaml`` beyond ``dataset.yaml``'s (``colors``,
    ``raw_values``, ...), which the converter of that dataset reads.
    """
    if name not in BUILTIN:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(BUILTIN)}")
    text = (Path(__file__).parent / "splits" / f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    codes = {key: value for key, value in data.items() if key not in _KEYS}
    info = DatasetInfo.from_dict({key: data[key] for key in _KEYS if key in data}, f"splits/{name}.yaml")
    return info, codes
