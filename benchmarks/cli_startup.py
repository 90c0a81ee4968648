"""Start-up time of the command line: ``aeroseg --help`` and ``aeroseg --version`` against a bare
``python -c pass``, run alternately in fresh processes (the median of each), and which heavy modules each
loads.

    python benchmarks/cli_startup.py [--repeats 5]       # → benchmarks/results/cli_startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "cli_startup.json"
HEAVY = ("torch", "transformers", "rasterio")
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "aeroseg --help": ["-m", "aeroseg", "--help"],
    "aeroseg --version": ["-m", "aeroseg", "--version"],
}
PROBE = (
    "import sys\nfrom aeroseg.cli import main\ntry:\n    main([{arg!r}])\nexcept SystemExit:\n    pass\n"
    f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):  # alternate, so that the machine's load falls on every command alike
        for name, argv in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, *argv], capture_output=True, check=True)
            times[name].append(time.perf_counter() - start)
    loaded = {}
    for arg in ("--help", "--version"):
        done = subprocess.run([sys.executable, "-c", PROBE.format(arg=arg)], capture_output=True, text=True)
        loaded[f"aeroseg {arg}"] = json.loads(done.stderr.strip().splitlines()[-1].replace("'", '"'))
    report = {
        "median_seconds": {name: statistics.median(t) for name, t in times.items()},
        "runs": times,
        "heavy_modules_loaded": loaded,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    for name, seconds in report["median_seconds"].items():
        print(f"{name:<20} {seconds:.2f} s (median of {args.repeats})")
    print(f"heavy modules loaded: {loaded}")


if __name__ == "__main__":
    main()
