"""Correlation feature refinement (paper Eq. 5–6, docs/model.md §5): spatial Swin blocks guided by the guidance
encoder, then linear attention over classes guided by the text."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(dim: int, ratio: float, act: type[nn.Module]) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, int(dim * ratio)), act(), nn.Linear(int(dim * ratio), dim))


class GuidedWindowAttention(nn.Module):
    """Window self-attention (Swin) whose query and key also see a guidance feature; the value does not.

    With ``position_bias`` a relative position bias (Swin) is learned for windows up to ``window_size``;
    smaller windows (grids smaller than the window) use its central part. CAT-Seg's guided Swin has none.
    """

    def __init__(
        self, *, dim: int, guidance_dim: int, num_heads: int, window_size: int, position_bias: bool = False
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias = None
        if position_bias:
            self.relative_position_bias = nn.Parameter(torch.zeros(num_heads, (2 * window_size - 1) ** 2))
            nn.init.trunc_normal_(self.relative_position_bias, std=0.02)

    def bias(self, ws: int) -> torch.Tensor:
        """Relative position bias for a ws×ws window → heads×(ws²)×(ws²)."""
        assert self.relative_position_bias is not None
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = coords[:, :, None] - coords[:, None, :] + self.window_size - 1  # (2, L, L)
        index = (rel[0] * (2 * self.window_size - 1) + rel[1]).to(self.relative_position_bias.device)
        return self.relative_position_bias[:, index]

    def forward(self, x: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: …×nW×L×d, g: broadcastable to …×nW×L×g, mask: nW×L×L additive or None → …×nW×L×d."""
        *lead, nW, L, d = x.shape
        heads = self.num_heads
        # (N, nW*heads, L, d/heads): windows and heads side by side, for one 4-D attention call
        split = lambda t: t.reshape(-1, nW, L, heads, d // heads).transpose(2, 3).flatten(1, 2)
        q, k, v = split(_guided_linear(self.q, x, g)), split(_guided_linear(self.k, x, g)), split(self.v(x))
        attn_mask = None
        if self.relative_position_bias is not None:
            attn_mask = self.bias(int(L**0.5)).expand(nW, heads, L, L)
        if mask is not None:
            attn_mask = (
                mask[:, None] if attn_mask is None else attn_mask + mask[:, None]
            )  # (nW, heads|1, L, L)
        if attn_mask is not None:
            # a 4-D mask lets the fused CPU kernel run (a 3-D one falls back to the unfused math path)
            attn_mask = attn_mask.expand(nW, heads, L, L).reshape(1, nW * heads, L, L).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.view(-1, nW, heads, L, d // heads).transpose(2, 3).reshape(*lead, nW, L, d))


def _guided_linear(linear: nn.Linear, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``linear(concat(x, g))`` for a guidance ``g`` that broadcasts to ``x`` (…×d and …×g): the guidance half
    of the product is computed once for all the tensors that share it."""
    d = x.shape[-1]
    return F.linear(x, linear.weight[:, :d]) + F.linear(g, linear.weight[:, d:], linear.bias)


class SwinBlock(nn.Module):
    """Pre-norm Swin block with guidance in query and key; ``shifted`` rolls the grid by half a window."""

    def __init__(
        self,
        *,
        dim: int,
        guidance_dim: int,
        num_heads: int,
        window_size: int,
        shifted: bool,
        mlp_ratio: float,
        position_bias: bool = False,
        norm_guidance: bool = True,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        # a block's own guidance norm; without it the guidance arrives normalised (shared by the layer)
        self.norm_guidance = nn.LayerNorm(guidance_dim) if norm_guidance else nn.Identity()
        self.attn = GuidedWindowAttention(
            dim=dim,
            guidance_dim=guidance_dim,
            num_heads=num_heads,
            window_size=window_size,
            position_bias=position_bias,
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, mlp_ratio, nn.GELU)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """x: B×…×h×w×d and g: B×h×w×g (channels last) → B×…×h×w×d. The maps in … (the classes) share one
        guidance, whose normalisation and share of query and key are computed once."""
        h, w = x.shape[-3:-1]
        ws = min(self.window_size, h, w)  # a grid smaller than the window is one window (Swin)
        shift = ws // 2 if self.shifted and ws < max(h, w) else 0
        ph, pw = -h % ws, -w % ws
        y, gy = self.norm1(x), self.norm_guidance(g)  # (B, …, h, w, d), (B, h, w, g)
        if ph or pw:  # pad to whole windows
            y, gy = (F.pad(t, (0, 0, 0, pw, 0, ph)) for t in (y, gy))
        H, W = h + ph, w + pw
        if shift:
            y, gy = (torch.roll(t, (-shift, -shift), dims=(-3, -2)) for t in (y, gy))
        mask = _window_mask(h, w, H, W, ws, shift, x.device) if (shift or ph or pw) else None
        xp, gp = _partition(y, ws), _partition(gy, ws)  # (B, …, nW, L, d), (B, nW, L, g)
        gp = gp.view(gp.shape[0], *[1] * (xp.dim() - gp.dim()), *gp.shape[1:])  # broadcast over …
        y = _unpartition(self.attn(xp, gp, mask), H, W)
        if shift:
            y = torch.roll(y, (shift, shift), dims=(-3, -2))
        x = x + y[..., :h, :w, :]
        return x + self.mlp(self.norm2(x))


def _partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """…×H×W×C → …×nW×(ws·ws)×C."""
    *lead, H, W, C = x.shape
    x = x.view(*lead, H // ws, ws, W // ws, ws, C).transpose(-4, -3)  # (…, H/ws, W/ws, ws, ws, C)
    return x.reshape(*lead, (H // ws) * (W // ws), ws * ws, C)


def _unpartition(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """…×nW×(ws·ws)×C → …×H×W×C."""
    *lead, _, L, C = x.shape
    ws = int(L**0.5)
    x = x.view(*lead, H // ws, W // ws, ws, ws, C).transpose(-4, -3)  # (…, H/ws, ws, W/ws, ws, C)
    return x.reshape(*lead, H, W, C)


def _window_mask(h: int, w: int, H: int, W: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """Additive mask nW×L×L on the (rolled) padded grid: tokens of different regions do not mix. Regions
    separate padding from the image and, for shifted windows, the bands rolled in from the opposite edge
    (Swin's SW-MSA mask)."""
    labels = torch.zeros(H, W, device=device)
    labels[h:, :] = 1
    labels[:, w:] = 1
    if shift:
        labels = torch.roll(labels, (-shift, -shift), dims=(0, 1))
        bands = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
        for i, rows in enumerate(bands):
            for j, cols in enumerate(bands):
                labels[rows, cols] += 2 * (i * 3 + j)
    windows = _partition(labels[None, :, :, None], ws)[0, :, :, 0]  # (nW, L)
    different = windows[:, :, None] != windows[:, None, :]
    # -100 as Swin and CAT-Seg: the same softmax as -inf to float precision unless logits differ by ~100
    return torch.zeros(different.shape, device=device).masked_fill(different, -100.0)


class SpatialRefinement(nn.Module):
    """Spatial refinement block (Eq. 5): W-MSA then SW-MSA, per class with shared weights.

    ``shared_guidance_norm``: one LayerNorm of the guidance for both blocks (CAT-Seg), else one per block.
    """

    def __init__(
        self,
        *,
        dim: int,
        guidance_dim: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        position_bias: bool = False,
        shared_guidance_norm: bool = True,
    ) -> None:
        super().__init__()
        kwargs = dict(
            dim=dim,
            guidance_dim=guidance_dim,
            num_heads=num_heads,
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            position_bias=position_bias,
            norm_guidance=not shared_guidance_norm,
        )
        self.blocks = nn.ModuleList([SwinBlock(**kwargs, shifted=s) for s in (False, True)])  # type: ignore[arg-type]
        self.norm_guidance = nn.LayerNorm(guidance_dim) if shared_guidance_norm else nn.Identity()

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """x: B×d×T×h×w, guidance: B×g×h×w (projected) → B×d×T×h×w."""
        y = x.permute(0, 2, 3, 4, 1)  # (B, T, h, w, d)
        g = self.norm_guidance(guidance.permute(0, 2, 3, 1))  # (B, h, w, g), shared by the T classes
        for block in self.blocks:
            y = block(y, g)
        return y.permute(0, 4, 1, 2, 3)


class LinearAttention(nn.Module):
    """Linear attention (Katharopoulos et al. 2020, feature map elu+1) over a set; guidance in query and key.
    ``out_proj`` adds an output projection (CAT-Seg's has none)."""

    def __init__(
        self, *, dim: int, guidance_dim: int, num_heads: int, out_proj: bool = False, eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.eps = eps
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim) if out_proj else nn.Identity()

    def key_value(self, token: torch.Tensor, guidance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature-mapped key and value of one token shared by all sets: token d, guidance g → 2 × heads×(d/heads)."""
        k = F.elu(_guided_linear(self.k, token[None], guidance[None])) + 1
        v = F.linear(token, self.v.weight, self.v.bias)
        return k.view(self.num_heads, -1), v.view(self.num_heads, -1)

    def forward(
        self, x: torch.Tensor, g: torch.Tensor, padding: tuple[torch.Tensor, torch.Tensor, int] | None = None
    ) -> torch.Tensor:
        """x: N×T×d, g: T×g (the same for all N sets) → N×T×d. No positional embedding: equivariant to
        permutations of T.

        ``padding = (key, value, count)`` (from :meth:`key_value`): ``count`` more keys and values of one token
        that every set shares (CAT-Seg's padding tokens). Their outputs are not needed, and as keys and values
        they add ``count`` times one token's terms to the sums, computed once: the same result as attending
        over the T + count tokens, at the cost of T.
        """
        N, T, d = x.shape
        heads = lambda t: t.view(N, T, self.num_heads, -1)  # (N, T, heads, d/heads)
        q = F.elu(heads(_guided_linear(self.q, x, g))) + 1
        k = F.elu(heads(_guided_linear(self.k, x, g))) + 1
        v = heads(self.v(x))
        kv = torch.einsum("nthd,nthe->nhde", k, v)
        k_sum = k.sum(dim=1)  # (N, heads, d/heads)
        if padding is not None:
            k_pad, v_pad, count = padding
            kv = kv + count * torch.einsum("hd,he->hde", k_pad, v_pad)
            k_sum = k_sum + count * k_pad
        norm = 1.0 / (torch.einsum("nthd,nhd->nth", q, k_sum) + self.eps)
        out = torch.einsum("nthd,nhde->nthe", q, kv) * norm[..., None]
        return self.proj(out.reshape(N, T, d))


class ClassRefinement(nn.Module):
    """Class refinement block (Eq. 6): at every grid position, linear attention across the T classes with the
    projected class text as guidance (CAT-Seg's ``ClassTransformerLayer``).

    The grid is average-pooled by ``pool`` in training and ``pool_eval`` in eval mode (CAT-Seg trains with
    2×2 and evaluates with 1×1). ``pad_length`` learned padding tokens, with their own learned guidance, bring
    the class axis to a fixed length, so the attention's key statistics are those the model was trained with;
    more classes than ``pad_length`` are padded to the next multiple of it (CAT-Seg instead keeps the 256
    classes of highest CLIP score; we keep every class). ``residual="reference"`` is CAT-Seg's
    ``x + up(y + attn + mlp)`` (``y`` the pooled input); ``"update"`` is ``x + up(attn + mlp)``.
    """

    def __init__(
        self,
        *,
        dim: int,
        guidance_dim: int,
        num_heads: int,
        mlp_ratio: float,
        pool: int,
        pool_eval: int = 1,
        pad_length: int = 0,
        residual: str = "reference",
        align_corners: bool = True,
        out_proj: bool = False,
    ) -> None:
        super().__init__()
        self.pool, self.pool_eval = pool, pool_eval
        self.pad_length = pad_length
        self.residual = residual
        self.align_corners = align_corners
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LinearAttention(
            dim=dim, guidance_dim=guidance_dim, num_heads=num_heads, out_proj=out_proj
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, mlp_ratio, nn.ReLU)
        self.padding_tokens = self.padding_guidance = None
        if pad_length:
            self.padding_tokens = nn.Parameter(torch.zeros(dim))
            self.padding_guidance = nn.Parameter(torch.zeros(guidance_dim))

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x: B×d×T×h×w, text: T×g (projected) → B×d×T×h×w."""
        B, d, T, h, w = x.shape
        pool = self.pool if self.training else self.pool_eval
        y = x.transpose(1, 2).reshape(B * T, d, h, w)
        if pool > 1:
            y = F.avg_pool2d(y, pool, ceil_mode=True, count_include_pad=False)
        hp, wp = y.shape[-2:]
        y = y.view(B, T, d, hp, wp).permute(0, 3, 4, 1, 2).reshape(B * hp * wp, T, d)  # (B*h'*w', T, d)
        padding = None
        pad = -T % self.pad_length if self.pad_length else 0
        if pad:  # learned tokens and their guidance, the same at every position; only keys and values
            assert self.padding_tokens is not None and self.padding_guidance is not None
            norm1 = self.norm1
            token = F.layer_norm(
                self.padding_tokens, norm1.normalized_shape, norm1.weight, norm1.bias, norm1.eps
            )
            padding = (*self.attn.key_value(token, self.padding_guidance), pad)
        update = self.attn(self.norm1(y), text, padding)
        if self.residual == "reference":
            update = y + update
            update = update + self.mlp(self.norm2(update))
        else:
            update = update + self.mlp(self.norm2(y + update))
        update = update.view(B, hp, wp, T, d).permute(0, 3, 4, 1, 2).reshape(B * T, d, hp, wp)
        if (hp, wp) != (h, w):
            update = F.interpolate(update, size=(h, w), mode="bilinear", align_corners=self.align_corners)
        return x + update.view(B, T, d, h, w).transpose(1, 2)


class CorrelationRefinement(nn.Module):
    """``num_layers`` × (spatial refinement, class refinement), with the guidance and text projections
    shared by all layers."""

    def __init__(
        self,
        *,
        dim: int,
        num_layers: int,
        guidance_in_dim: int,
        guidance_dim: int,
        text_in_dim: int,
        text_dim: int,
        spatial_heads: int,
        class_heads: int,
        window_size: int,
        mlp_ratio: float,
        class_pool: int,
        class_pool_eval: int = 1,
        class_pad_length: int = 0,
        class_residual: str = "reference",
        class_align_corners: bool = True,
        class_attention_proj: bool = False,
        spatial_position_bias: bool = False,
        shared_guidance_norm: bool = True,
    ) -> None:
        super().__init__()
        self.guidance_proj = nn.Sequential(nn.Conv2d(guidance_in_dim, guidance_dim, 3, padding=1), nn.ReLU())
        self.text_proj = nn.Sequential(nn.Linear(text_in_dim, text_dim), nn.ReLU())
        self.spatial = nn.ModuleList(
            SpatialRefinement(
                dim=dim,
                guidance_dim=guidance_dim,
                num_heads=spatial_heads,
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                position_bias=spatial_position_bias,
                shared_guidance_norm=shared_guidance_norm,
            )
            for _ in range(num_layers)
        )
        self.classes = nn.ModuleList(
            ClassRefinement(
                dim=dim,
                guidance_dim=text_dim,
                num_heads=class_heads,
                mlp_ratio=mlp_ratio,
                pool=class_pool,
                pool_eval=class_pool_eval,
                pad_length=class_pad_length,
                residual=class_residual,
                align_corners=class_align_corners,
                out_proj=class_attention_proj,
            )
            for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor, guidance: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x: B×d×T×h×w, guidance: B×C_g×h×w, text: T×P×C → B×d×T×h×w."""
        g = self.guidance_proj(guidance)
        t = self.text_proj(F.normalize(text.mean(dim=1), dim=-1))  # template-averaged, re-normalised
        for spatial, classes in zip(self.spatial, self.classes, strict=True):
            x = classes(spatial(x, g), t)
        return x
