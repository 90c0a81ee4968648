"""Semantic back-projection module (paper Eq. 7, Fig. 4, docs/model.md §6)."""

from __future__ import annotations

import torch
from torch import nn


class SemanticBackProjection(nn.Module):
    """Reconstructs the guidance encoder's final feature from the refined correlation features of all classes.

    The T class maps are concatenated along channels and every grid position goes through three linear layers
    with GELU between them. Used in training only, where T is the fixed number of seen classes.

    Args:
        num_classes: T.
        hidden_dim: d, the width of the refined features.
        mlp_dim: width of the two hidden layers.
        out_dim: width of the reconstruction target (SAM 256, CLIP C, RGB 3).
    """

    def __init__(self, *, num_classes: int, hidden_dim: int, mlp_dim: int, out_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.mlp = nn.Sequential(
            nn.Linear(num_classes * hidden_dim, mlp_dim),
            nn.GELU(),
            nn.Linear(mlp_dim, mlp_dim),
            nn.GELU(),
            nn.Linear(mlp_dim, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×d×T×h×w → reconstruction B×C_out×h×w."""
        B, d, T, h, w = x.shape
        if T != self.num_classes:
            raise ValueError(
                f"back-projection was built for {self.num_classes} training classes, got {T}; "
                "set back_projection_classes to the number of seen classes"
            )
        x = x.permute(0, 3, 4, 2, 1).reshape(B, h, w, T * d)  # class-major concatenation of channels
        return self.mlp(x).permute(0, 3, 1, 2)
