"""Span operations on arrays of shape [..., 2].

Two representations are used: (start, end) "xx" in seconds or normalized
time, and (center, width) "cxw", the DETR parameterization. All functions are
written with `jax.numpy` and work under jit/vmap; they also accept numpy arrays.
"""

from __future__ import annotations

import jax.numpy as jnp


def xx_to_cxw(spans):
    """[..., 2] (start, end) -> [..., 2] (center, width)."""
    start, end = spans[..., 0], spans[..., 1]
    return jnp.stack([(start + end) * 0.5, end - start], axis=-1)


def cxw_to_xx(spans):
    """[..., 2] (center, width) -> [..., 2] (start, end)."""
    center, width = spans[..., 0], spans[..., 1]
    return jnp.stack([center - 0.5 * width, center + 0.5 * width], axis=-1)


def clip_spans(spans, lo, hi):
    """Clips both ends of [..., 2] spans into [lo, hi] (broadcastable)."""
    lo = jnp.asarray(lo)[..., None]
    hi = jnp.asarray(hi)[..., None]
    return jnp.clip(spans, lo, hi)


def _safe_div(num, den):
    # A zero union only happens for two identical zero-length spans; the
    # official scorer reports IoU 0 there, so do we (and gradients stay finite).
    safe = jnp.where(den > 0, den, 1.0)
    return jnp.where(den > 0, num / safe, 0.0)


def pairwise_intersection(a, b):
    """a [..., N, 2], b [..., M, 2] -> [..., N, M] length of the overlap."""
    left = jnp.maximum(a[..., :, None, 0], b[..., None, :, 0])
    right = jnp.minimum(a[..., :, None, 1], b[..., None, :, 1])
    return jnp.clip(right - left, 0.0, None)


def pairwise_iou(a, b):
    """Temporal IoU of every pair, true union: a [..., N, 2], b [..., M, 2] -> [..., N, M]."""
    inter = pairwise_intersection(a, b)
    len_a = a[..., :, 1] - a[..., :, 0]
    len_b = b[..., :, 1] - b[..., :, 0]
    union = len_a[..., :, None] + len_b[..., None, :] - inter
    return _safe_div(inter, union)


def pairwise_giou(a, b):
    """Generalized temporal IoU of every pair: [..., N, 2], [..., M, 2] -> [..., N, M].

    gIoU = IoU - (hull - union) / hull, in [-1, 1].
    """
    inter = pairwise_intersection(a, b)
    len_a = a[..., :, 1] - a[..., :, 0]
    len_b = b[..., :, 1] - b[..., :, 0]
    union = len_a[..., :, None] + len_b[..., None, :] - inter
    hull = (jnp.maximum(a[..., :, None, 1], b[..., None, :, 1])
            - jnp.minimum(a[..., :, None, 0], b[..., None, :, 0]))
    return _safe_div(inter, union) - _safe_div(hull - union, hull)


def paired_iou(a, b):
    """IoU of matching rows with the hull as union, as the official R1 does.

    a, b: [..., 2] -> [...]. The hull equals the true union whenever the
    spans overlap, so hits (IoU > 0) are unaffected by this choice.
    """
    inter = jnp.clip(jnp.minimum(a[..., 1], b[..., 1]) - jnp.maximum(a[..., 0], b[..., 0]), 0.0, None)
    hull = jnp.maximum(a[..., 1], b[..., 1]) - jnp.minimum(a[..., 0], b[..., 0])
    return _safe_div(inter, hull)
