"""``aeroseg report``: the paper's result tables in Markdown, from ``aeroseg evaluate --json`` files.

Each argument is an evaluation JSON or a training run directory. From a run directory every
``RUN/eval*.json`` is read. What each result is called:

- dataset: the JSON's ``dataset`` key (the ``name`` of the dataset's ``dataset.yaml``);
- method: for a run directory, the ``preset`` of the checkpoint's config in ``RUN/final/config.json``;
  otherwise, or when that file is missing, the JSON's ``method`` key, else its ``preset`` key.

Known names are printed as the paper spells them (``catseg`` -> CAT-Seg, ``openearthmap`` -> OEM,
``config-c`` -> AerOSeg; the presets of the other released models, ``sed-large`` -> SED (L), ...). Tables:
2 = the methods with their venue, s-/u-/h-mIoU per dataset and their mean over the datasets (Average), the
paper's rows in its order (SAN, SCAN, SED, CAT-Seg, OVRS, AerOSeg last);
3 = h-mIoU of the ablation rows Baseline, Config-A, Config-B, Config-C (the ``aeroseg`` preset), as the
paper prints it; 8 = mIoU over all classes. Numbers have 2 decimals; a missing value is "–".
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aeroseg.atomic import write_text
from aeroseg.cli import options
from aeroseg.errors import UserError
from aeroseg.metrics import SegmentationScores

MISSING = "–"

# normalised name (lower case, letters and digits only) -> the paper's spelling
METHOD_NAMES = {
    "segearthov": "SegEarth-OV",
    "segearthov3": "SegEarth-OV3",
    "trainingfree": "Training-free",
    "san": "SAN",
    "scan": "SCAN",
    "sed": "SED",
    "catseg": "CAT-Seg",
    "ovrs": "OVRS",
    "sanlarge": "SAN (ViT-L)",
    "scanlarge": "SCAN (ViT-L)",
    "sedlarge": "SED (L)",
    "catseglarge": "CAT-Seg (ViT-L)",
    "baseline": "Baseline",
    "configa": "Config-A",
    "configb": "Config-B",
    "configc": "AerOSeg",
    "aeroseg": "AerOSeg",
}
DATASET_NAMES = {"isaid": "iSAID", "dlrsd": "DLRSD", "openearthmap": "OEM", "oem": "OEM"}
DATASET_ORDER = ("iSAID", "DLRSD", "OEM")
METHOD_ORDER = (
    "SegEarth-OV",
    "SegEarth-OV3",
    "Training-free",
    "SAN",
    "SCAN",
    "SED",
    "CAT-Seg",
    "OVRS",
    "SAN (ViT-L)",
    "SCAN (ViT-L)",
    "SED (L)",
    "CAT-Seg (ViT-L)",
    "Baseline",
    "Config-A",
    "Config-B",
)
OURS = "AerOSeg"  # the last row, as in the paper
VENUES = {
    "SAN": "CVPR'23",
    "SCAN": "CVPR'24",
    "SED": "CVPR'24",
    "CAT-Seg": "CVPR'24",
    "OVRS": "arXiv'24",
    OURS: "-",
}
"""Table 2's Venue column (the venue of each method's paper); other rows leave it empty."""

# Table 3 rows: label, method, then Guidance Encoder / Semantic Back-projection loss / Remote-Sensing Prompts
ABLATION_ROWS = (
    ("Baseline", "Baseline", "✗", "-", "✗"),
    ("Config-A", "Config-A", "✓", "✗", "✗"),
    ("Config-B", "Config-B", "✓", "✓", "✗"),
    ("Config-C", OURS, "✓", "✓", "✓"),
)


@dataclass
class Result:
    method: str  # the paper's spelling where known
    dataset: str
    scores: SegmentationScores
    source: Path


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def display_method(name: str) -> str:
    return METHOD_NAMES.get(_normalise(name), name)


def display_dataset(name: str) -> str:
    return DATASET_NAMES.get(_normalise(name), name)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path} as JSON ({error})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object")
    return data


def _run_preset(run: Path) -> str | None:
    """The preset of the checkpoint ``RUN/final``: its ``config.json`` holds it under ``config``."""
    path = run / "final" / "config.json"
    if not path.is_file():
        return None
    data = _read_json(path)
    config = data.get("config")
    return (config.get("preset") if isinstance(config, dict) else None) or data.get("preset")


def _result(path: Path, method: str | None) -> Result:
    data = _read_json(path)
    method = method or data.get("method") or data.get("preset")
    if "per_class_iou" not in data or not data.get("dataset"):
        raise UserError(f"{path} is not an `aeroseg evaluate --json` file (needs per_class_iou and dataset)")
    if not method:
        raise UserError(f"{path} names no method; re-run `aeroseg evaluate` with --method NAME")
    scores = SegmentationScores.from_dict(data)
    return Result(display_method(str(method)), display_dataset(str(data["dataset"])), scores, path)


def collect(paths: list[Path]) -> list[Result]:
    """The results named by ``paths`` (JSON files or run directories); one per method and dataset."""
    results: list[Result] = []
    for path in paths:
        if path.is_dir():
            files = sorted(path.glob("eval*.json"))
            if not files:
                raise UserError(
                    f"run directory {path} has no eval*.json; write one with `aeroseg evaluate --json`"
                )
            preset = _run_preset(path)
            results += [_result(file, preset) for file in files]
        elif path.is_file():
            results.append(_result(path, None))
        else:
            raise UserError(f"{path} does not exist (give evaluation JSON files or run directories)")
    seen: dict[tuple[str, str], Path] = {}
    for r in results:
        key = (r.method, r.dataset)
        if key in seen:
            raise UserError(
                f"two results for {r.method} on {r.dataset}: {seen[key]} and {r.source}; keep one"
            )
        seen[key] = r.source
    return results


def _datasets(results: list[Result]) -> list[str]:
    names = list(dict.fromkeys(r.dataset for r in results))
    return [d for d in DATASET_ORDER if d in names] + [d for d in names if d not in DATASET_ORDER]


def _methods(results: list[Result]) -> list[str]:
    names = list(dict.fromkeys(r.method for r in results))
    known = [m for m in METHOD_ORDER if m in names]
    return known + [m for m in names if m not in METHOD_ORDER and m != OURS] + [m for m in names if m == OURS]


def _cell(value: float | None) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.2f}"


def _mean(values: list[float | None]) -> float | None:
    """Mean over the datasets, only when every dataset has a value."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept and len(kept) == len(values) else None


def _markdown(header: list[str], rows: list[list[str]], align_left: int) -> str:
    rule = ["---"] * align_left + ["---:"] * (len(header) - align_left)
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, rule, *rows])


def table_2(results: list[Result]) -> str:
    """Methods as rows with their venue; s-, u-, h-mIoU per dataset, then their Average over the datasets."""
    datasets, index = _datasets(results), {(r.method, r.dataset): r.scores for r in results}
    metrics = ("s_miou", "u_miou", "h_miou")
    groups = datasets + (["Average"] if len(datasets) > 1 else [])
    header = ["Method", "Venue"] + [f"{g} {m[0]}-mIoU" for g in groups for m in metrics]
    rows = []
    for method in _methods(results):
        values = [
            [getattr(index[method, d], m) if (method, d) in index else None for m in metrics]
            for d in datasets
        ]
        if len(datasets) > 1:
            values.append([_mean([v[i] for v in values]) for i in range(len(metrics))])
        rows.append([method, VENUES.get(method, "")] + [_cell(v) for group in values for v in group])
    caption = "Table 2. s-mIoU / u-mIoU / h-mIoU (%) per dataset; Average = mean over the datasets."
    return caption + "\n\n" + _markdown(header, rows, 2)


def table_3(results: list[Result]) -> str:
    """The paper's ablation: h-mIoU of Baseline and Config-A/B/C per dataset, and their Average."""
    rows_methods = {method for _, method, *_ in ABLATION_ROWS}
    others = sorted({r.method for r in results} - rows_methods)
    if others:
        print(f"aeroseg report: table 3 has no row for {', '.join(others)}; left out", file=sys.stderr)
    results = [r for r in results if r.method in rows_methods]
    if not results:
        raise UserError("table 3 needs results of the Baseline, Config-A, Config-B or aeroseg presets")
    datasets, index = _datasets(results), {(r.method, r.dataset): r.scores.h_miou for r in results}
    header = ["Configuration", "Guidance Encoder", "Semantic Back-projection loss", "Remote-Sensing Prompts"]
    header += datasets + (["Average"] if len(datasets) > 1 else [])
    rows = []
    for label, method, *marks in ABLATION_ROWS:
        values = [index.get((method, d)) for d in datasets]
        if len(datasets) > 1:
            values.append(_mean(values))
        rows.append([label, *marks] + [_cell(v) for v in values])
    caption = "Table 3. h-mIoU (%) of the main components ablation; Average = mean over the datasets."
    return caption + "\n\n" + _markdown(header, rows, 4)


def table_8(results: list[Result]) -> str:
    """mIoU over all classes (seen and unseen), methods as rows, datasets as columns."""
    datasets, index = _datasets(results), {(r.method, r.dataset): r.scores.miou for r in results}
    rows = [[m] + [_cell(index.get((m, d))) for d in datasets] for m in _methods(results)]
    caption = (
        "Table 8. mIoU (%) over all classes. Training-free rows (aeroseg evaluate --preset segearth-ov, "
        "segearth-ov3, training-free) first."
    )
    return caption + "\n\n" + _markdown(["Methods", *datasets], rows, 1)


TABLES = {2: table_2, 3: table_3, 8: table_8}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="RUN_OR_JSON",
        help="evaluation JSON files or training run dirs",
    )
    parser.add_argument(
        "--table", type=int, choices=sorted(TABLES), default=2, help="2: s/u/h-mIoU, 3: ablation, 8: mIoU"
    )
    parser.add_argument(
        "-o",
        "--output",
        dest="out",
        type=Path,
        metavar="FILE.md",
        help="also write the table to this Markdown file",
    )
    options.add_alias(parser, "--out", dest="out", type=Path)
    options.add_quiet(parser)  # accepted as in every verb; the table itself is the output


def run(args: argparse.Namespace) -> int:
    text = TABLES[args.table](collect(args.inputs)) + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, text)
    return 0
