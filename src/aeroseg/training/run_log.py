"""Training metrics: ``RUN/metrics.csv`` (every step), ``RUN/eval.csv`` (every evaluation), TensorBoard."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from aeroseg.atomic import atomic

EVAL_COLUMNS = ("s_miou", "u_miou", "h_miou", "miou")


class _Csv:
    """A CSV file with a ``step`` column, appended row by row; rows after ``start_step`` are dropped first."""

    def __init__(self, path: Path, columns: list[str], start_step: int) -> None:
        self.columns = ["step", *columns]
        kept: list[list[str]] = []
        if start_step and path.is_file():
            with open(path, newline="") as handle:
                reader = csv.reader(handle)
                if next(reader, None) == self.columns:  # else: another configuration, start afresh
                    kept = [row for row in reader if row and int(row[0]) <= start_step]
        with atomic(path) as tmp, open(tmp, "w", newline="") as handle:
            csv.writer(handle).writerows([self.columns, *kept])
        self._file = open(path, "a", newline="")
        self._writer = csv.writer(self._file)

    def write(self, step: int, values: list[Any]) -> None:
        self._writer.writerow([step, *values])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class RunLog:
    """The logs of the main process; on resume, drops what the interrupted run wrote after ``start_step``.

    ``metrics.csv`` columns: ``step`` (optimizer steps done), the losses, ``grad_norm`` (before clipping),
    ``lr_<group>`` for every optimizer group, and ``time`` (seconds of training, summed across resumes).
    ``eval.csv``: ``step`` and the validation s-, u-, h-mIoU and mIoU (percent).
    """

    def __init__(self, run_dir: Path, start_step: int) -> None:
        self.run_dir, self.start_step = run_dir, start_step
        self._metrics: _Csv | None = None  # opened at the first row, whose keys name the columns
        self._eval: _Csv | None = None
        self._tb = _tensorboard(run_dir, start_step)

    def write(self, step: int, values: dict[str, float], elapsed: float) -> None:
        if self._metrics is None:
            self._metrics = _Csv(self.run_dir / "metrics.csv", [*values, "time"], self.start_step)
        self._metrics.write(step, [*(f"{v:.6g}" for v in values.values()), f"{elapsed:.2f}"])
        for name, value in values.items() if self._tb is not None else ():
            self._tb.add_scalar(
                name.replace("lr_", "lr/", 1) if name.startswith("lr_") else name, value, step
            )

    def write_eval(self, step: int, scores: dict[str, float]) -> None:
        if self._eval is None:
            self._eval = _Csv(self.run_dir / "eval.csv", list(EVAL_COLUMNS), self.start_step)
        self._eval.write(step, [f"{scores[c]:.4f}" for c in EVAL_COLUMNS])
        for name in EVAL_COLUMNS if self._tb is not None else ():
            self._tb.add_scalar(f"val/{name}", scores[name], step)

    def close(self) -> None:
        for log in (self._metrics, self._eval):
            if log is not None:
                log.close()
        if self._tb is not None:
            self._tb.close()


def _tensorboard(run_dir: Path, start_step: int) -> Any:
    """A TensorBoard writer of ``RUN/tensorboard`` when the ``tensorboard`` package (the ``train`` extra) is
    installed, else None: the CSV logs hold the same values."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print('aeroseg train: no TensorBoard logs (pip install "aeroseg[train]"); metrics.csv has them all')
        return None
    # purge_step hides the events of steps after start_step left behind by an interrupted run
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
