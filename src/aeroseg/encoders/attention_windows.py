"""Window partition of B×h×w×C token grids by one gather, for the SAM ViT and SAM2 Hiera image encoders.

segment-anything and SAM2 zero-pad the normalised tokens up to whole windows, so a padded token's query/key/
value projection is the projection's bias alone. The encoders therefore project the image tokens plus one
zero row (:func:`padded_rows`) and build the padded windows with one ``index_select`` of the projection
(:func:`window_index`), and bring the attention output back the same way: no padding copy, no permuted copies.
"""

from __future__ import annotations

import functools

import torch


def padded_rows(x: torch.Tensor) -> torch.Tensor:
    """x: B×h×w×C -> (B·h·w + 1)×C, the tokens and one zero row standing for every padded position."""
    return torch.cat([x.reshape(-1, x.shape[-1]), x.new_zeros(1, x.shape[-1])])


@functools.cache
def window_index(b: int, h: int, w: int, ws: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices for ws×ws windows over a B×h×w grid padded to whole windows (window-major, row-major inside).

    gather: (B·nW·ws²,) the token row of every window position, B·h·w (the zero row) on the padding;
    scatter: (B·h·w,) the window position of every token, in B×h×w order.
    Made outside inference mode: the cached indices also serve later calls that record autograd.
    """
    with torch.inference_mode(False):
        return _window_index(b, h, w, ws, device)


def _window_index(b: int, h: int, w: int, ws: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    nh, nw = -(-h // ws), -(-w // ws)
    token = torch.full((b, nh * ws, nw * ws), b * h * w, dtype=torch.long)
    token[:, :h, :w] = torch.arange(b * h * w).view(b, h, w)
    gather = token.view(b, nh, ws, nw, ws).transpose(2, 3).reshape(-1)
    position = torch.arange(gather.numel()).view(b, nh, nw, ws, ws).transpose(2, 3).reshape(b, nh * ws, -1)
    return gather.to(device), position[:, :h, :w].reshape(-1).to(device)
