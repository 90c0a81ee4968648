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

from dataclasses import dataclass
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


TILE = 8  # outputs per side of a tile: one T²×(window) matrix of the batched product
BLOCK = 1 << 22  # elements of one block of gathered input windows (16 MiB in float32): a block stays in cache


def resize_matrix(size_in: int, size_out: int, device: torch.device | None = None) -> torch.Tensor:
    """size_out×size_in matrix of ``F.interpolate(mode="bicubic", align_corners=False)`` along one axis
    (bicubic is separable: resizing is Rᵧ·X·Rₓᵀ), read off by resizing the unit vectors."""
    eye = torch.eye(size_in, device=device)[None, :, :, None]  # (1, n, n, 1): channel j = unit vector j
    return F.interpolate(eye, size=(size_out, 1), mode="bicubic", align_corners=False)[0, :, :, 0].T


def _axis(
    size_in: int, size_out: int, radius: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Along one axis: the bicubic rows of every output's 2r+1 (reflected) taps, cut to the window of inputs
    its tile of TILE outputs reads.

    Returns:
        taps: (tiles·TILE)×(2r+1)×U (zero past the last output); window: tiles×U input indices.
    """
    rows = resize_matrix(size_in, size_out, device)  # (out, in)
    index = (
        torch.arange(size_out, device=device)[:, None] + torch.arange(-radius, radius + 1, device=device)
    ).abs()
    index = torch.where(index > size_out - 1, 2 * (size_out - 1) - index, index)  # reflect padding
    tiles = -(-size_out // TILE)
    taps = F.pad(rows[index], (0, 0, 0, 0, 0, tiles * TILE - size_out))  # (tiles*T, d, in)
    d = taps.shape[1]
    used = taps.ne(0).any(1).view(tiles, TILE, size_in).any(1)  # (tiles, in)
    first = used.int().argmax(1)
    last = size_in - 1 - used.flip(1).int().argmax(1)
    span = int((last - first).max()) + 1
    window = first.clamp(max=size_in - span)[:, None] + torch.arange(span, device=device)  # (tiles, U)
    index = window[:, None, None, :].expand(tiles, TILE, d, span)
    return taps.view(tiles, TILE, d, size_in).gather(3, index).view(tiles * TILE, d, span), window


def _pointwise(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The checkpoint's 1×1 conv → GELU → (inactive) dropout → 1×1 conv on channels-last x: …×Cin → …×Cout."""
    first, activation, _, last = layers
    x = activation(F.linear(x, first.weight[:, :, 0, 0], first.bias))
    return F.linear(x, last.weight[:, :, 0, 0], last.bias)


@dataclass
class StepOperator:
    """One step (bicubic resize, then the (2r+1)² kernel) as the linear map it is, per T×T tile of outputs:
    a T²×(Uᵧ·Uₓ) matrix over the Uᵧ×Uₓ window of inputs the tile reads (no neighbourhood is materialised).
    Its outputs are kept tile-major (B×(tilesᵧ·tilesₓ·T²)×N) so that the next step gathers from them directly.

    matrices: B×tilesᵧ×tilesₓ×T²×(Uᵧ·Uₓ); index: tilesᵧ×tilesₓ×(Uᵧ·Uₓ) rows of the input (B×P×N) each
    window reads; size: the output (H, W).
    """

    matrices: torch.Tensor
    index: torch.Tensor
    size: tuple[int, int]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×P×N input rows (channels last) → B×(tilesᵧ·tilesₓ·T²)×N tile-major outputs, in blocks of tile
        rows whose gathered windows fit in BLOCK elements."""
        B, N = x.shape[0], x.shape[-1]
        ty, tx, area, window = self.matrices.shape[1:]
        block = max(1, BLOCK // (B * tx * window * N))
        out = []
        for i in range(0, ty, block):
            gathered = x.index_select(1, self.index[i : i + block].flatten()).view(-1, window, N)
            matrices = self.matrices[:, i : i + block].reshape(-1, area, window)
            out.append(torch.bmm(matrices, gathered).view(B, -1, N))
        return out[0] if len(out) == 1 else torch.cat(out, 1)

    def positions(self) -> torch.Tensor:
        """H×W: the row of every output pixel in the tile-major output."""
        ty, tx = self.matrices.shape[1:3]
        y = torch.arange(self.size[0], device=self.index.device)[:, None]
        x = torch.arange(self.size[1], device=self.index.device)[None, :]
        return ((y // TILE) * tx + x // TILE) * TILE * TILE + (y % TILE) * TILE + x % TILE

    def untile(self, out: torch.Tensor) -> torch.Tensor:
        """Tile-major outputs B×(tiles·T²)×N → B×H×W×N (a view cut to the size)."""
        B, ty, tx, N = out.shape[0], *self.matrices.shape[1:3], out.shape[-1]
        out = out.view(B, ty, tx, TILE, TILE, N).permute(0, 1, 3, 2, 4, 5).reshape(B, ty * TILE, tx * TILE, N)
        return out[:, : self.size[0], : self.size[1]]


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
        """guide: B×3×H×W → B×H×W×K weights of the K = (2r+1)² neighbours (row-major offsets), channels last."""
        d = 2 * self.radius + 1
        guide = guide.permute(0, 2, 3, 1)  # (B, H, W, 3)
        similarity = self._similarity(_pointwise(self.range_proj, guide))  # (B, H, W, K)
        temperature = self.range_temp.exp().clamp(1e-4, 1e4)
        range_kernel = (temperature * similarity).softmax(-1)
        offsets = torch.linspace(-1, 1, d, device=guide.device)
        distance = offsets[:, None] ** 2 + offsets[None, :] ** 2  # (d, d)
        spatial = torch.exp(-distance / (2 * self.sigma_spatial**2)).view(d * d)
        kernel = range_kernel * spatial
        kernel = kernel / kernel.sum(-1, keepdim=True).clamp_min(1e-7)
        return kernel + 0.1 * _pointwise(self.fixup_proj, torch.cat([kernel, guide], -1))

    def _similarity(self, keys: torch.Tensor) -> torch.Tensor:
        """keys: B×H×W×E → B×H×W×K dot products of every pixel's key with its K neighbours' (reflected):
        per T×T tile, the T² keys times the (T+2r)² keys of its window (one batched product), then each pixel's
        K entries picked out."""
        r, (B, H, W, E) = self.radius, keys.shape
        d, side = 2 * r + 1, TILE + 2 * r
        ty, tx = -(-H // TILE), -(-W // TILE)
        padded = F.pad(keys.permute(0, 3, 1, 2), [r] * 4, mode="reflect")
        padded = F.pad(padded, (0, tx * TILE - W, 0, ty * TILE - H))  # zeros past the end: outputs dropped
        windows = padded.unfold(2, side, TILE).unfold(3, side, TILE)  # (B, E, ty, tx, side, side)
        windows = windows.permute(0, 2, 3, 4, 5, 1).reshape(-1, side * side, E)
        queries = F.pad(keys, (0, 0, 0, tx * TILE - W, 0, ty * TILE - H)).view(B, ty, TILE, tx, TILE, E)
        queries = queries.permute(0, 1, 3, 2, 4, 5).reshape(-1, TILE * TILE, E)
        products = torch.bmm(queries, windows.transpose(1, 2))  # (tiles, T², side²)
        i = torch.arange(TILE, device=keys.device)
        a = torch.arange(d, device=keys.device)
        rows = (i[:, None, None, None] + a[None, None, :, None]) * side  # (T, 1, d, 1)
        index = (rows + i[None, :, None, None] + a[None, None, None, :]).reshape(TILE * TILE, d * d)
        picked = products.gather(2, index.expand(products.shape[0], -1, -1))  # (tiles, T², K)
        picked = picked.view(B, ty, tx, TILE, TILE, d * d).permute(0, 1, 3, 2, 4, 5)
        return picked.reshape(B, ty * TILE, tx * TILE, d * d)[:, :H, :W]

    def operator(
        self, guide: torch.Tensor, size: tuple[int, int], layout: torch.Tensor | None = None
    ) -> StepOperator:
        """The step from an h×w grid (``size``) to the guide's H×W as a :class:`StepOperator`:
        out[Y, X] = Σ_{a,c} kernel[a, c, Y, X] · bicubic(x)[Y + a - r, X + c - r] (reflected), i.e. per output
        the (2r+1)×(2r+1) kernel between the bicubic rows Rᵧ[Y + a - r] and columns Rₓ[X + c - r].
        ``layout``: h×w rows of the input's pixels (the previous step's :meth:`StepOperator.positions`);
        None: row-major."""
        kernel = self.kernel(guide)  # (B, H, W, K)
        B, H, W, _ = kernel.shape
        d = 2 * self.radius + 1
        taps_y, rows = _axis(size[0], H, self.radius, guide.device)  # (Hp, d, Uy), (ty, Uy)
        taps_x, cols = _axis(size[1], W, self.radius, guide.device)  # (Wp, d, Ux), (tx, Ux)
        Hp, Wp = taps_y.shape[0], taps_x.shape[0]
        kernel = F.pad(kernel, (0, 0, 0, Wp - W, 0, Hp - H)).view(B, Hp, Wp, d, d)
        matrices = torch.einsum("yal,byxac->byxlc", taps_y, kernel)  # (B, Hp, Wp, Uy, d)
        matrices = torch.einsum("byxlc,xcm->byxlm", matrices, taps_x)  # (B, Hp, Wp, Uy, Ux)
        ty, tx, window = Hp // TILE, Wp // TILE, taps_y.shape[2] * taps_x.shape[2]
        matrices = matrices.reshape(B, ty, TILE, tx, TILE, window).permute(0, 1, 3, 2, 4, 5)
        if layout is None:
            layout = torch.arange(size[0] * size[1], device=guide.device).view(size)
        index = layout[rows[:, None, :, None], cols[None, :, None, :]].reshape(ty, tx, window)
        return StepOperator(matrices.reshape(B, ty, tx, TILE * TILE, window), index, (H, W))

    def forward(self, source: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """source: B×C×h×w, guide: B×3×H×W → B×C×H×W."""
        step = self.operator(guide, source.shape[-2:])
        return step.untile(step(source.flatten(2).transpose(1, 2))).permute(0, 3, 1, 2)


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

    def kernels(self, image: torch.Tensor, size: tuple[int, int]) -> list[StepOperator]:
        """The four steps from an h×w grid (``size``) as linear maps; they depend on the image only."""
        out: list[StepOperator] = []
        h, w = size
        for i in range(4):
            guide = F.adaptive_avg_pool2d(image, (2 * h, 2 * w))
            layout = out[-1].positions() if out else None
            out.append(self.steps[i % len(self.steps)].operator(guide, (h, w), layout))
            h, w = 2 * h, 2 * w
        return out

    def upsample(self, x: torch.Tensor, kernels: list[StepOperator]) -> torch.Tensor:
        """The four steps (without the final 1×1 correction), applied to any channels: B×C×h×w → B×C×16h×16w
        (a channels-last view)."""
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
        for step in kernels:
            x = step(x)  # tile-major: the next step reads it as it is
        return kernels[-1].untile(x).permute(0, 3, 1, 2)


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
