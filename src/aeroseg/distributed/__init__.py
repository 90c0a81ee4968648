"""``aeroseg predict --ray``: the units of a prediction (scenes, or bands of window rows of a large scene)
run on the workers of a Ray cluster, each holding the model once; the driver assembles the outputs.

Needs the optional ``ray`` extra (``pip install "aeroseg[ray]"``); no other part of aeroseg imports ray.
See docs/distributed.md.
"""

from __future__ import annotations

EXTRA = 'pip install "aeroseg[ray]"'


def require_ray() -> None:
    """Raise a one-line :class:`aeroseg.errors.UserError` naming the extra when ray is not installed."""
    from aeroseg.errors import UserError

    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError(f"--ray needs the ray package, which is not installed: {EXTRA}") from None
