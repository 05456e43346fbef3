"""Batched EM for a two-component 1-D Gaussian mixture, following sklearn's GaussianMixture.

One mixture is fitted per row of a padded batch `[B, T]` (prefix mask, valid frames first),
from `n_init` initializations per row, all at once: every (row, initialization) pair is one
lane of `lax.while_loop`s for k-means and EM, with sufficient statistics summed over valid
frames only.

What matches sklearn (`GaussianMixture(n_components=2, covariance_type="full", tol, max_iter,
reg_covar, n_init, init_params="kmeans")`):
  * initialization: hard k-means labels -> one-hot responsibilities -> weights `nk / n`,
    means and variances (+ `reg_covar`), with sklearn's `10 * eps` added to `nk`;
  * EM: E-step then M-step per iteration; the lower bound is the mean log-likelihood of the
    E-step; stop when it changes by less than `tol` or after `max_iter` iterations;
  * selection: the initialization with the highest final lower bound (first on ties);
  * posterior = `predict_proba` with the selected parameters.

The k-means labels follow sklearn's KMeans (n_init=1) step by step, including its random
numbers: greedy k-means++ seeding (first centre uniform over the valid frames, then the better
of 2 candidates drawn with probability proportional to the squared distance), then Lloyd
iterations until the labels stop changing or the squared centre shift is `<= 1e-4 * var(x)`
(max 300). sklearn draws 3 uniforms per initialization from `RandomState(random_state)` (one
for the first centre, two for the candidates); `kmeans_draws` reproduces that stream on the
host, so with the same seed every initialization starts from the same centres as sklearn's
(up to float32 rounding). The draws do not depend on the padding, so a padded row gives the
unpadded fit.

Work saved without changing the result: values are centred per row (the mixture is
translation-equivariant); 1-D k-means partitions are thresholds, so Lloyd runs on the sorted
values with prefix sums (O(log T) per iteration); initializations whose k-means partition
repeats an earlier one of the same row are not run again (identical EM, identical bound); and
the remaining (row, initialization) pairs run EM in lanes of fixed size, refilled in rounds.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from amr_jax.localize.lanes import run_in_lanes

# sklearn adds 10 * float64 eps to every component count so that empty components do not
# divide by zero; the same constant is used here (representable in float32).
_NK_EPS = 10.0 * float(np.finfo(np.float64).eps)
_LOG_2PI = math.log(2.0 * math.pi)
# sklearn.cluster.KMeans defaults used by GaussianMixture's "kmeans" initialization.
_KMEANS_MAX_ITER = 300
_KMEANS_TOL = 1e-4
_KMEANSPP_TRIALS = 2  # 2 + int(log(n_clusters)) for n_clusters = 2
# EM scheduling (speed knobs only: results do not depend on them): (lanes per row of the
# batch, iteration cap) per phase. About half of the initializations repeat an earlier
# partition, so 3 lanes per row usually hold the rest in one round; after 10 iterations the
# few unconverged ones continue on B/4 lanes.
_EM_PHASES = ((3, 10), (0.25, 1 << 30))


@flax.struct.dataclass
class MixtureFit:
    """Fitted two-component mixtures, one per row.

    Attributes:
      weights, means, variances: `[B, 2]`.
      lower_bound: `[B]` mean log-likelihood reached by the selected initialization.
      n_iter: `[B]` int32 EM iterations of the selected initialization.
      converged: `[B]` bool.
    """

    weights: jax.Array
    means: jax.Array
    variances: jax.Array
    lower_bound: jax.Array
    n_iter: jax.Array
    converged: jax.Array

    @property
    def relevant(self) -> jax.Array:
        """`[B]` int32 index of the component with the higher mean (0 on ties)."""
        return jnp.argmax(self.means, axis=-1).astype(jnp.int32)

    @property
    def separation(self) -> jax.Array:
        """`[B]` `|mu_rel - mu_bg|`."""
        return jnp.abs(self.means[:, 1] - self.means[:, 0])


class EMState(NamedTuple):
    """EM of one (row, initialization) item per entry; every field `[N]`.

    `lower_bound` is the mean log-likelihood of the last E-step (-inf before the first),
    `n_iter` the EM iterations run, `done` converged or out of iterations (or skipped).
    """

    weight0: jax.Array
    weight1: jax.Array
    mean0: jax.Array
    mean1: jax.Array
    var0: jax.Array
    var1: jax.Array
    lower_bound: jax.Array
    n_iter: jax.Array
    done: jax.Array


def kmeans_draws(seed: int, n_init: int) -> np.ndarray:
    """The uniforms sklearn's k-means++ consumes: `[n_init, 3]` float64.

    Per initialization `RandomState.choice(n, p=w)` takes one `random_sample()` and
    `uniform(size=2)` takes two, in that order, from one stream seeded once per fit.
    """
    return np.random.RandomState(seed).random_sample(3 * n_init).reshape(n_init, 3)


def _searchsorted(sorted_rows: jax.Array, values: jax.Array, side: str) -> jax.Array:
    """Row-wise searchsorted: `sorted_rows [..., T]`, `values [..., K]` -> `[..., K]` int32."""
    lead = sorted_rows.shape[:-1]
    flat_rows = sorted_rows.reshape((-1, sorted_rows.shape[-1]))
    flat_vals = values.reshape((flat_rows.shape[0], -1))
    out = jax.vmap(lambda r, v: jnp.searchsorted(r, v, side=side))(flat_rows, flat_vals)
    return out.reshape(lead + values.shape[len(lead):]).astype(jnp.int32)


def _kmeanspp_centres(x, mask, n, draws):
    """Greedy k-means++ seeds. `x [B, T]` centred, `n [B]`, `draws [I, 3]` -> `[B, I]` x2."""
    last = n.astype(jnp.int32)[:, None] - 1
    first = jnp.minimum(jnp.floor(draws[None, :, 0] * n[:, None]).astype(jnp.int32), last)
    c0 = jnp.take_along_axis(x, first, axis=1)  # [B, I]
    dist = jnp.where(mask[:, None, :], (x[:, None, :] - c0[..., None]) ** 2, 0.0)  # [B, I, T]
    targets = draws[None, :, 1:1 + _KMEANSPP_TRIALS] * jnp.sum(dist, axis=-1, keepdims=True)
    cand = jnp.minimum(_searchsorted(jnp.cumsum(dist, axis=-1), targets, "left"), last[..., None])
    cand_x = jnp.take_along_axis(x, cand.reshape(x.shape[0], -1), axis=1).reshape(cand.shape)
    cand_dist = jnp.minimum(dist[:, :, None, :], jnp.where(
        mask[:, None, None, :], (x[:, None, None, :] - cand_x[..., None]) ** 2, 0.0))
    best = jnp.argmin(jnp.sum(cand_dist, axis=-1), axis=-1)  # [B, I]
    c1 = jnp.take_along_axis(cand_x, best[..., None], axis=-1)[..., 0]
    return c0, c1


def _kmeans_lower_counts(sorted_x, prefix, n, c0, c1, tol):
    """Lloyd's 2-means on sorted values; returns how many sorted values join the lower centre.

    `sorted_x [B, T]` (padding +inf), `prefix [B, T + 1]` cumulative sums, `n [B]`,
    centres `[B, I]`. A value joins the centre it is strictly closer to, else centre 0,
    as sklearn's argmin does.
    """
    n_int = n.astype(jnp.int32)[:, None]
    total = jnp.take_along_axis(prefix, n_int, axis=1)
    rows = jnp.broadcast_to(sorted_x[:, None, :], c0.shape + sorted_x.shape[-1:])

    def lower_count(c0, c1):
        mid = 0.5 * (c0 + c1)
        right = _searchsorted(rows, mid[..., None], "right")[..., 0]
        left = _searchsorted(rows, mid[..., None], "left")[..., 0]
        count = jnp.where(c0 < c1, right, jnp.where(c0 > c1, left, n_int))
        return jnp.minimum(count, n_int), c0 <= c1

    def body(state):
        c0, c1, prev_k, prev_orient, it, done = state
        k, orient = lower_count(c0, c1)
        low_sum = jnp.take_along_axis(prefix, k, axis=1)
        k_f = k.astype(sorted_x.dtype)
        low = jnp.minimum(c0, c1)
        high = jnp.maximum(c0, c1)
        # An emptied cluster keeps its centre (sklearn relocates it; not reached from
        # k-means++ seeds on a non-constant row).
        new_low = jnp.where(k > 0, low_sum / jnp.maximum(k_f, 1.0), low)
        new_high = jnp.where(k < n_int, (total - low_sum) / jnp.maximum(n[:, None] - k_f, 1.0), high)
        n0 = jnp.where(orient, new_low, new_high)
        n1 = jnp.where(orient, new_high, new_low)
        same = (k == prev_k) & (orient == prev_orient)
        stop = same | ((n0 - c0) ** 2 + (n1 - c1) ** 2 <= tol[:, None])
        keep = lambda old, new: jnp.where(done, old, new)
        return (keep(c0, n0), keep(c1, n1), keep(prev_k, k), keep(prev_orient, orient),
                it + 1, done | stop)

    def cond(state):
        return (state[4] < _KMEANS_MAX_ITER) & ~jnp.all(state[5])

    init = (c0, c1, jnp.full(c0.shape, -1, jnp.int32), jnp.zeros(c0.shape, bool), jnp.int32(0),
            jnp.zeros(c0.shape, bool))
    c0, c1, _, _, _, _ = jax.lax.while_loop(cond, body, init)
    return lower_count(c0, c1)[0]


def _em_lanes(x, mask, n, state: EMState, cap, *, tol, max_iter, reg_covar) -> EMState:
    """EM on lanes `x [R, T]`, resuming from `state` (`[R]` fields), until every lane has
    converged, reached `max_iter` or reached `cap` iterations."""
    mf = mask.astype(x.dtype)
    x2 = x * x

    def body(st: EMState) -> EMState:
        a0 = jnp.log(st.weight0) - 0.5 * (_LOG_2PI + jnp.log(st.var0))
        a1 = jnp.log(st.weight1) - 0.5 * (_LOG_2PI + jnp.log(st.var1))
        l0 = a0[:, None] - 0.5 * (x - st.mean0[:, None]) ** 2 / st.var0[:, None]
        l1 = a1[:, None] - 0.5 * (x - st.mean1[:, None]) ** 2 / st.var1[:, None]
        d = l1 - l0
        e = jnp.exp(-jnp.abs(d))
        log_norm = jnp.maximum(l0, l1) + jnp.log1p(e)
        big = 1.0 / (1.0 + e)
        small = e * big
        r1 = jnp.where(d >= 0, big, small) * mf
        r0 = jnp.where(d >= 0, small, big) * mf
        new_lower = jnp.sum(log_norm * mf, axis=-1) / n
        nk0 = jnp.sum(r0, axis=-1) + _NK_EPS
        nk1 = jnp.sum(r1, axis=-1) + _NK_EPS
        s0, s1 = jnp.sum(r0 * x, axis=-1), jnp.sum(r1 * x, axis=-1)
        q0, q1 = jnp.sum(r0 * x2, axis=-1), jnp.sum(r1 * x2, axis=-1)
        n_m0, n_m1 = s0 / nk0, s1 / nk1
        # sum r (x - mu)^2 = q - mu * s on values centred per row (no harmful cancellation).
        n_v0 = jnp.maximum(q0 - n_m0 * s0, 0.0) / nk0 + reg_covar
        n_v1 = jnp.maximum(q1 - n_m1 * s1, 0.0) / nk1 + reg_covar
        total = nk0 + nk1
        active = ~st.done & (st.n_iter < cap)
        keep = lambda old, new: jnp.where(active, new, old)
        new_it = st.n_iter + active.astype(jnp.int32)
        stop = (jnp.abs(new_lower - st.lower_bound) < tol) | (new_it >= max_iter)
        return EMState(weight0=keep(st.weight0, nk0 / total), weight1=keep(st.weight1, nk1 / total),
                       mean0=keep(st.mean0, n_m0), mean1=keep(st.mean1, n_m1),
                       var0=keep(st.var0, n_v0), var1=keep(st.var1, n_v1),
                       lower_bound=keep(st.lower_bound, new_lower), n_iter=new_it,
                       done=st.done | (active & stop))

    return jax.lax.while_loop(lambda st: jnp.any(~st.done & (st.n_iter < cap)), body, state)


def _em_rounds(xc, mask, n, state: EMState, lanes, cap, *, n_init, tol, max_iter,
               reg_covar) -> EMState:
    """Runs every unfinished item (`state` fields `[B * n_init]`) up to `cap` iterations,
    `lanes` items at a time; items are (row, init) pairs, row = item // n_init."""

    def run(items, lane_state: EMState, live):
        row = items // n_init
        # Lanes without an item are marked done so they do not iterate.
        lane_state = lane_state._replace(done=lane_state.done | ~live)
        return _em_lanes(xc[row], mask[row], n[row], lane_state, cap, tol=tol,
                         max_iter=max_iter, reg_covar=reg_covar)

    return run_in_lanes(state, pending=lambda st: ~st.done & (st.n_iter < cap), run=run,
                        lanes=lanes)


def fit_mixture(x: jax.Array, mask: jax.Array, *, n_init: int, tol: float, max_iter: int,
                reg_covar: float, seed: int) -> MixtureFit:
    """Fits a two-component 1-D Gaussian mixture to the valid values of every row.

    Rows with fewer than 2 valid frames or a single distinct value give meaningless fits;
    callers treat them as flat (see `amr_jax.localize.systems`).

    Args:
      x: `[B, T]` float32 values.
      mask: `[B, T]` bool prefix mask.
      n_init: initializations per row; the best lower bound is kept.
      tol: EM stops when the lower bound changes by less than this.
      max_iter: EM iteration limit.
      reg_covar: added to every variance.
      seed: `random_state` of the sklearn fit being mirrored (seeds the k-means++ draws).

    Returns:
      MixtureFit with `[B, ...]` arrays.
    """
    b_size = x.shape[0]
    mf = mask.astype(x.dtype)
    n = jnp.maximum(jnp.sum(mf, axis=-1), 1.0)
    offset = jnp.sum(x * mf, axis=-1) / n
    xc = jnp.where(mask, x - offset[:, None], 0.0)
    km_tol = _KMEANS_TOL * jnp.sum(xc * xc, axis=-1) / n

    # k-means initializations, all on [B, I].
    draws = jnp.asarray(kmeans_draws(seed, n_init), x.dtype)
    c0, c1 = _kmeanspp_centres(xc, mask, n, draws)
    sorted_x = jnp.sort(jnp.where(mask, xc, jnp.inf), axis=-1)
    finite = jnp.where(mask.any(-1, keepdims=True) & jnp.isfinite(sorted_x), sorted_x, 0.0)
    prefix = jnp.concatenate([jnp.zeros((b_size, 1), x.dtype), jnp.cumsum(finite, axis=-1)], 1)
    prefix2 = jnp.concatenate([jnp.zeros((b_size, 1), x.dtype), jnp.cumsum(finite ** 2, -1)], 1)
    k = _kmeans_lower_counts(sorted_x, prefix, n, c0, c1, km_tol)  # [B, I]

    # One-hot initial responsibilities -> parameters (sklearn's _initialize), from prefix sums.
    # Component 0 is the cluster of centre c0, as sklearn labels it.
    n_col = n[:, None]
    total1 = jnp.take_along_axis(prefix, n.astype(jnp.int32)[:, None], axis=1)
    total2 = jnp.take_along_axis(prefix2, n.astype(jnp.int32)[:, None], axis=1)
    low1, low2 = jnp.take_along_axis(prefix, k, axis=1), jnp.take_along_axis(prefix2, k, axis=1)
    k_f = k.astype(x.dtype)
    low = (k_f + _NK_EPS, low1, low2)
    high = (n_col - k_f + _NK_EPS, total1 - low1, total2 - low2)
    c0_low = c0 <= c1

    def component(first):
        cnt, s1, s2 = (jnp.where(c0_low == first, a, b) for a, b in zip(low, high))
        mean = s1 / cnt
        var = jnp.maximum(s2 - mean * s1, 0.0) / cnt + reg_covar
        return cnt / n_col, mean, var

    w0, m0, v0 = component(True)
    w1, m1, v1 = component(False)

    # Skip initializations whose partition repeats an earlier one of the same row.
    earlier = jnp.tril(jnp.ones((n_init, n_init), bool), -1)
    repeat = jnp.any((k[:, :, None] == k[:, None, :]) & earlier[None], axis=-1)  # [B, I]
    source = jnp.argmax((k[:, :, None] == k[:, None, :]), axis=-1)  # first equal init

    # Lanes: the distinct (row, init) pairs run in lanes of fixed size. Most converge within
    # a few iterations; the slow ones are moved to a narrower set of lanes for the rest, so
    # the batch does not iterate for its slowest member.
    flat = lambda a: a.reshape(-1)
    num_items = b_size * n_init
    state = EMState(*(flat(a) for a in (w0, w1, m0, m1, v0, v1)),
                    lower_bound=jnp.full((num_items,), -jnp.inf, x.dtype),
                    n_iter=jnp.zeros((num_items,), jnp.int32), done=flat(repeat))
    for lanes_per_row, cap in _EM_PHASES:
        lanes = max(1, min(num_items, int(b_size * lanes_per_row)))
        state = _em_rounds(xc, mask, n, state, lanes, min(cap, max_iter), n_init=n_init, tol=tol,
                           max_iter=max_iter, reg_covar=reg_covar)

    # Per row: repeated initializations take their source's result, then the best bound wins.
    per_init = EMState(*(jnp.take_along_axis(a.reshape(b_size, n_init), source, axis=1)
                         for a in state))
    lower = per_init.lower_bound
    best = jnp.argmax(lower, axis=1)[:, None]
    pick = lambda a: jnp.take_along_axis(a, best, axis=1)[:, 0]
    return MixtureFit(weights=jnp.stack([pick(per_init.weight0), pick(per_init.weight1)], -1),
                      means=jnp.stack([pick(per_init.mean0), pick(per_init.mean1)], -1)
                      + offset[:, None],
                      variances=jnp.stack([pick(per_init.var0), pick(per_init.var1)], -1),
                      lower_bound=pick(lower), n_iter=pick(per_init.n_iter),
                      converged=pick(per_init.done))


def _log_joint(x, weights, means, variances):
    """`log w_k + log N(x | mu_k, var_k)`, `[T, 2]`."""
    return (jnp.log(weights) - 0.5 * (_LOG_2PI + jnp.log(variances))
            - 0.5 * (x[:, None] - means) ** 2 / variances)


def posterior(x: jax.Array, mask: jax.Array, fit: MixtureFit) -> jax.Array:
    """Responsibility of the higher-mean component for every frame, as `predict_proba`.

    Args:
      x: `[B, T]`.
      mask: `[B, T]` bool.
      fit: the mixtures of the rows.

    Returns:
      `[B, T]` in [0, 1], 0 on padded frames.
    """
    log_joint = jax.vmap(_log_joint)(x, fit.weights, fit.means, fit.variances)  # [B, T, 2]
    log_norm = jnp.logaddexp(log_joint[..., 0], log_joint[..., 1])
    rel = fit.relevant
    log_rel = jnp.take_along_axis(log_joint, rel[:, None, None], axis=2)[..., 0]
    return jnp.where(mask, jnp.exp(log_rel - log_norm), 0.0)
