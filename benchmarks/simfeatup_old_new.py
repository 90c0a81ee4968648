"""SimFeatUp's work in ``segearth-ov`` for one 224² crop (C = 512 on the 14×14 grid, 10 class maps), the code
of another commit and this one alternately in one process (shared machines drift too much between runs).

    git show 0c3a403:src/aeroseg/training_free/simfeatup.py > /tmp/old_simfeatup.py
    python benchmarks/simfeatup_old_new.py /tmp/old_simfeatup.py

Old: its kernels, the four steps on the 512 features, the final 1×1 on the pixels, the norms; its steps on
the 10 class maps. New (``segearth_ov.py``'s encode and segment): the kernels, the steps of the 196 unit grids
(the matrix A), the norms of A·(f + 0.1Wf) + 0.1b; A times the class maps. Prints JSON: best-of-``--repeats``
seconds of each, every run, and the largest differences relative to the old outputs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time

import torch

from aeroseg.training_free.simfeatup import SimFeatUp

C, GRID, CROP, CLASSES = 512, 14, 224, 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="the other commit's simfeatup.py")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("old_simfeatup", args.old)
    old_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old_module)
    torch.manual_seed(0)
    image, features = torch.randn(1, 3, CROP, CROP), torch.randn(1, C, GRID, GRID)
    classes = torch.randn(1, CLASSES, GRID, GRID)
    old, new = old_module.SimFeatUp(C).eval(), SimFeatUp(C).eval()
    new.load_state_dict(old.state_dict())
    weight, bias = new.fixup.weight[:, :, 0, 0], new.fixup.bias
    units = torch.eye(GRID * GRID).view(1, -1, GRID, GRID)

    def old_encode():
        kernels = old.kernels(image, (GRID, GRID))
        x = old.upsample(features, kernels)
        return kernels, (x + 0.1 * old.fixup(x)).norm(dim=1).flatten()

    def new_encode():
        basis = (
            new.upsample(units, new.kernels(image, (GRID, GRID))).permute(0, 2, 3, 1).reshape(1, -1, GRID**2)
        )
        f = features.flatten(2).transpose(1, 2)
        return basis, (basis @ (f + 0.1 * f @ weight.T) + 0.1 * bias).norm(dim=-1).flatten()

    runs: dict[str, list[float]] = {"old_encode": [], "new_encode": [], "old_segment": [], "new_segment": []}
    with torch.no_grad():
        for _ in range(args.repeats):
            start = time.perf_counter()
            kernels, old_norms = old_encode()
            runs["old_encode"].append(time.perf_counter() - start)
            start = time.perf_counter()
            basis, new_norms = new_encode()
            runs["new_encode"].append(time.perf_counter() - start)
            start = time.perf_counter()
            old_maps = old.upsample(classes, kernels)
            runs["old_segment"].append(time.perf_counter() - start)
            start = time.perf_counter()
            new_maps = (basis @ classes.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(old_maps.shape)
            runs["new_segment"].append(time.perf_counter() - start)
    result = {name: min(seconds) for name, seconds in runs.items()}
    result["norm_relative_difference"] = ((new_norms - old_norms).abs().max() / old_norms.abs().max()).item()
    result["class_map_relative_difference"] = (
        (new_maps - old_maps).abs().max() / old_maps.abs().max()
    ).item()
    print(json.dumps({**result, "threads": torch.get_num_threads(), "runs": runs}))


if __name__ == "__main__":
    main()
