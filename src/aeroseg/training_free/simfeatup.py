"""SimFeatUp: SegEarth-OV's learned joint bilateral upsampler of CLIP features (Li et al. 2024, arXiv
2410.01768, Sec. 3.2; FeatUp's JBU, Fu et al. 2024, arXiv 2403.10516, with one shared step).

Each step doubles the resolution: the features are resized (bicubic) to the guide's size, then every output
pixel is a weighted sum of the (2r+1)² features around it. The weights are a spatial Gaussian (learned
width) times a range kernel (softmax of learned embeddings of the guide, learned temperature), normalised,
plus 0.1 × a learned 1×1 correction of the kernel. The guide of each step is the image average-pooled to
the step's output size. After four steps (×16), a learned 1×1 convolution adds 0.1 × its output.

Checkpoint: the released PyTorch-Lightning ``.ckpt`` (SegEarth-OV ``simfeatup_dev/weights``), read with
``torch.load(weights_only=True)``; its ``state_dict`` maps to this module by

    upsampler.up.*            → steps.0.*      (``jbu_one``: one step applied four times, radius 5)
    upsampler.up{i}.*         → steps.{i-1}.*  (``jbu_stack``: four steps, radius 3)
    upsampler.fixup_proj.1.*  → fixup.*

The variant is recognised from the keys.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.errors import CheckpointError
from aeroseg.hub import download, hub_file
from aeroseg.weight_files import load_weights_only

GUIDE_DIM = 3  # RGB
KEY_DIM = 32  # width of the range embeddings
RADII = {"jbu_one": 5, "jbu_stack": 3}


class JointBilateralStep(nn.Module):
    """One ×2 step (FeatUp ``JBULearnedRange``); parameter names are the checkpoint's.

    Args:
        radius: the kernel covers (2·radius + 1)² pixels.
    """

    def __init__(self, radius: int) -> None:
        super().__init__()
        self.radius = radius
        taps = (2 * radius + 1) ** 2
        self.range_temp = nn.Parameter(torch.tensor(0.0))
        self.sigma_spatial = nn.Parameter(torch.tensor(1.0))
        # Dropout2d at index 2 keeps the checkpoint's indices (0, 3); it is inactive (the model is frozen)
        self.range_proj = nn.Sequential(
            nn.Conv2d(GUIDE_DIM, KEY_DIM, 1), nn.GELU(), nn.Dropout2d(0.1), nn.Conv2d(KEY_DIM, KEY_DIM, 1)
        )
        self.fixup_proj = nn.Sequential(
            nn.Conv2d(GUIDE_DIM + taps, taps, 1), nn.GELU(), nn.Dropout2d(0.1), nn.Conv2d(taps, taps, 1)
        )

    def kernel(self, guide: torch.Tensor) -> torch.Tensor:
        """guide: B×3×H×W → B×K×H×W weights of the K = (2r+1)² neighbours (row-major offsets)."""
        H, W = guide.shape[-2:]
        d = 2 * self.radius + 1
        keys = self.range_proj(guide)  # (B, E, H, W)
        padded = F.pad(keys, [self.radius] * 4, mode="reflect")
        similarity = torch.stack(
            [(padded[:, :, k // d : k // d + H, k % d : k % d + W] * keys).sum(1) for k in range(d * d)], 1
        )  # (B, K, H, W): one neighbour at a time, not an E×K×H×W unfold
        temperature = self.range_temp.exp().clamp(1e-4, 1e4)
        range_kernel = (temperature * similarity).softmax(1)
        offsets = torch.linspace(-1, 1, d, device=guide.device)
        distance = offsets[:, None] ** 2 + offsets[None, :] ** 2  # (d, d)
        spatial = torch.exp(-distance / (2 * self.sigma_spatial**2)).view(1, d * d, 1, 1)
        kernel = range_kernel * spatial
        kernel = kernel / kernel.sum(1, keepdim=True).clamp_min(1e-7)
        return kernel + 0.1 * self.fixup_proj(torch.cat([kernel, guide], 1))

    def forward(
        self, source: torch.Tensor, guide: torch.Tensor, kernel: torch.Tensor | None = None
    ) -> torch.Tensor:
        """source: B×C×h×w, guide: B×3×H×W (kernel: its :meth:`kernel`, if already computed) → B×C×H×W."""
        H, W = guide.shape[-2:]
        kernel = self.kernel(guide) if kernel is None else kernel  # (B, K, H, W)
        up = F.interpolate(source, size=(H, W), mode="bicubic", align_corners=False)
        padded = F.pad(up, [self.radius] * 4, mode="reflect")
        d = 2 * self.radius + 1
        out = torch.zeros_like(up)
        for k in range(d * d):  # one neighbour at a time: C×H×W memory, not K×C×H×W
            dy, dx = divmod(k, d)
            out += kernel[:, k : k + 1] * padded[:, :, dy : dy + H, dx : dx + W]
        return out


class SimFeatUp(nn.Module):
    """Four ×2 joint bilateral steps (×16: a ViT-B/16 grid to its crop's pixels) and a 1×1 correction.

    Args:
        dim: feature channels C. kind: ``"jbu_one"`` (SegEarth-OV: one step, radius 5, applied four times)
            or ``"jbu_stack"`` (four steps of radius 3).
    """

    def __init__(self, dim: int, kind: str = "jbu_one") -> None:
        super().__init__()
        if kind not in RADII:
            raise ValueError(f"SimFeatUp kind must be one of {sorted(RADII)}, got {kind!r}")
        self.kind = kind
        count = 1 if kind == "jbu_one" else 4
        self.steps = nn.ModuleList(JointBilateralStep(RADII[kind]) for _ in range(count))
        self.fixup = nn.Conv2d(dim, dim, 1)

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """features: B×C×h×w, image: B×3×H×W (the normalised crop) → B×C×16h×16w."""
        x = self.upsample(features, self.kernels(image, features.shape[-2:]))
        return x + 0.1 * self.fixup(x)

    def kernels(self, image: torch.Tensor, size: tuple[int, int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(guide, kernel) of the four steps from an h×w grid (``size``); they depend on the image only."""
        out = []
        h, w = size
        for i in range(4):
            h, w = 2 * h, 2 * w
            guide = F.adaptive_avg_pool2d(image, (h, w))
            out.append((guide, self.steps[i % len(self.steps)].kernel(guide)))
        return out

    def upsample(self, x: torch.Tensor, kernels: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The four steps (without the final 1×1 correction), applied to any channels: B×C×h×w → B×C×16h×16w."""
        for i, (guide, kernel) in enumerate(kernels):
            x = self.steps[i % len(self.steps)](x, guide, kernel)
        return x


def simfeatup_state(path: str | Path) -> tuple[str, dict[str, torch.Tensor]]:
    """The variant and our state dict of a released SimFeatUp ``.ckpt`` (mapping in the module docstring)."""
    checkpoint = load_weights_only(
        path, "a SimFeatUp checkpoint; pass the .ckpt file from SegEarth-OV's simfeatup_dev/weights"
    )
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
    ours: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix("upsampler.")
        if name.startswith("fixup_proj.1."):
            ours["fixup." + name.removeprefix("fixup_proj.1.")] = value
        elif name.startswith("up."):
            ours["steps.0." + name.removeprefix("up.")] = value
        elif name[:2] == "up" and name[2:3] in "1234" and name[3:4] == ".":
            ours[f"steps.{int(name[2]) - 1}." + name[4:]] = value
        else:
            raise CheckpointError(
                f"{path}: unexpected key {key!r}; expected a SimFeatUp jbu_one/jbu_stack .ckpt"
            )
    if "fixup.weight" not in ours:
        raise CheckpointError(f"{path}: no upsampler.fixup_proj.1.weight; expected a SimFeatUp .ckpt")
    kind = "jbu_stack" if any(k.startswith("steps.1.") for k in ours) else "jbu_one"
    return kind, ours


def load_simfeatup(source: str, dim: int) -> SimFeatUp:
    """SimFeatUp from a local ``.ckpt`` path, an ``http(s)://`` URL (cached) or an ``hf://OWNER/REPO/PATH``
    file on the hub."""
    if source.startswith(("http://", "https://")):
        path = download(source, what="SimFeatUp", hint="pass its path (--simfeatup FILE)")
    else:
        path = Path(hub_file(source, "SimFeatUp")).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"SimFeatUp checkpoint {source} does not exist; download xclip_jbu_one_million_aid.ckpt from "
            "github.com/likyoo/SegEarth-OV (simfeatup_dev/weights) and pass its path"
        )
    kind, state = simfeatup_state(path)
    model = SimFeatUp(dim, kind)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[1:2] or [type(error).__name__]
        raise CheckpointError(
            f"{path} does not fit SimFeatUp on {dim} channels: {first[0].strip()}"
        ) from None
    return model
