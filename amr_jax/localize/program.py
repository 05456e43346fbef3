"""The jitted localization program: relevance curves of every query, then its localizer.

`localize_split` compiles (once per cache, see `amr_jax.compiled`) and runs two programs over
a whole split: the relevance curves of every query against its recording, then the configured
localizer (FWHM, GMM, duration-prior DP or fused) over fixed-size query chunks. The language-model
localizer runs its FWHM fallback through the same program and generates on the host.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from amr_jax import saliency
from amr_jax.compiled import CompiledCache
from amr_jax.errors import ConfigError
from amr_jax.localize import duration_dp, fused, fused_fit, systems
from amr_jax.localize.arrays import SplitArrays
from amr_jax.localize.embedding import Embedded


def localize_curves(config: ml_collections.ConfigDict, curves: jax.Array, mask: jax.Array,
                    duration: jax.Array, fused_params: dict | None = None):
    """Runs the configured localizer on `[B, T]` curves.

    `fused_params`: the fused localizer's linear model (`fused_fit.resolve_params(config)`),
    read once by the caller; resolved here when not given.
    """
    if config.localizer == "fused" and fused_params is None:
        fused_params = fused_fit.resolve_params(config)
    if config.localizer == "fwhm":
        return systems.fwhm_localize(curves, mask, duration, num_windows=config.num_windows,
                                     frame_offset_s=config.frame_offset_s,
                                     **config.fwhm.to_dict())
    if config.localizer == "gmm":
        return systems.gmm_localize(curves, mask, duration, num_windows=config.num_windows,
                                    frame_offset_s=config.frame_offset_s,
                                    **config.gmm.to_dict())
    if config.localizer == "dp":
        return duration_dp.dp_localize(curves, mask, duration, num_windows=config.num_windows,
                                       frame_offset_s=config.frame_offset_s, **config.dp.to_dict())
    if config.localizer == "fused":
        return fused.fused_localize(curves, mask, duration, num_windows=config.num_windows,
                                    frame_offset_s=config.frame_offset_s,
                                    **fused_fit.fused_kwargs(config, fused_params))
    raise ValueError(f"unknown localizer {config.localizer!r}")


@dataclasses.dataclass
class LocalizeResult:
    """Output of `localize_split`: host arrays plus the stage times.

    Attributes:
      windows: `[B, K, 3]`; valid: `[B, K]`.
      curves: `[B, T]` raw relevance; mask: `[B, T]`.
      details: the localizer's output (smoothed curve, posterior, mixtures...) as numpy.
      compile_s, localize_s: compilation and run seconds (relevance + localizer).
      frame_offset_s: frame `i` covers `[i + o, i + 1 + o)` s (for plots).
    """

    windows: np.ndarray
    valid: np.ndarray
    curves: np.ndarray
    mask: np.ndarray
    details: object
    compile_s: float
    localize_s: float
    frame_offset_s: float


def chunk_rows(x: np.ndarray, start: int, size: int) -> np.ndarray:
    part = x[start:start + size]
    if len(part) < size:
        part = np.concatenate([part, np.zeros((size - len(part),) + part.shape[1:], part.dtype)])
    return part


def _signature(args) -> tuple:
    return tuple((None if a is None else (tuple(a.shape), str(a.dtype))) for a in args)


def _compiled(cache: CompiledCache, key: tuple, fn, args) -> tuple[object, float]:
    """Returns `(executable, compile seconds)`; 0 s when `cache` already holds it.

    Keys name what the executable depends on (system settings and shapes), so several
    systems or splits of one shape sharing a cache compile each kernel once.
    """
    t0 = time.perf_counter()
    exe, built = cache.get_or_build(key, lambda: jax.jit(fn).lower(*args).compile())
    return exe, (time.perf_counter() - t0) if built else 0.0


def localize_split(config: ml_collections.ConfigDict, arrays: SplitArrays,
                   embedded: Embedded, backend=None, *,
                   cache: CompiledCache | None = None,
                   split_queries: int | None = None) -> LocalizeResult:
    """Relevance curves and localization of every query; compilation timed separately.

    `backend`: the language model of the "llm" localizer (`llm.make_backend`), else unused.
    `cache`: compiled kernels owned by the caller, reused across calls that pass the same
    cache (several systems, chunks of a streamed split, a predictor's queries); None
    compiles for this call alone.
    `split_queries`: the number of queries of the whole split when `arrays` holds one shard
    of it (multi-host scoring): the relevance kernel then reads `split_queries` query rows
    (padded rows read slot 0 of recording 0 and are dropped) and the localizer runs in the
    batches the whole split would (`query_chunk`, or one batch of `split_queries` rows),
    because XLA:CPU's float32 row kernels depend on the number of rows by about an ulp (a
    localizer batch; the L2 normalization of fewer than ~6 query rows). Default: `arrays`'
    own count, no padding.
    """
    cache = CompiledCache() if cache is None else cache
    if config.localizer == "llm":
        return _localize_split_llm(config, arrays, embedded, backend, cache=cache)
    num_queries = len(arrays.duration)
    total = num_queries if split_queries is None else split_queries
    chunk = min(config.query_chunk or total, total)
    rel_args = (embedded.audio, arrays.audio_mask, embedded.queries, embedded.neutral,
                arrays.query_recording, arrays.query_slot, arrays.slot_query)
    if total > num_queries:  # a shard: the whole split's number of query rows
        rel_args = (embedded.audio, arrays.audio_mask,
                    chunk_rows(np.asarray(embedded.queries), 0, total), embedded.neutral,
                    chunk_rows(arrays.query_recording, 0, total),
                    chunk_rows(arrays.query_slot, 0, total), arrays.slot_query)
    mask = arrays.audio_mask[arrays.query_recording]
    t_len = mask.shape[1]
    padded = -(-num_queries // chunk) * chunk
    mask_p = chunk_rows(mask, 0, padded)
    duration_p = chunk_rows(arrays.duration, 0, padded)

    rel_exec, rel_compile_s = _compiled(
        cache, ("relevance", config.relevance) + _signature(rel_args),
        functools.partial(saliency.relevance_curves, config.relevance), rel_args)
    loc_args = (jax.ShapeDtypeStruct((chunk, t_len), jnp.float32),
                jax.ShapeDtypeStruct((chunk, t_len), jnp.bool_),
                jax.ShapeDtypeStruct((chunk,), jnp.float32))
    fused_params = fused_fit.resolve_params(config) if config.localizer == "fused" else None
    settings = json.dumps({k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k]
                           for k in ("localizer", "num_windows", "frame_offset_s", "fwhm", "gmm",
                                     "dp", "fused")} | {"fused_params": fused_params},
                          sort_keys=True)
    loc_exec, loc_compile_s = _compiled(cache, ("localize", settings, chunk, t_len),
                                        functools.partial(localize_curves, config,
                                                          fused_params=fused_params), loc_args)
    compile_s = rel_compile_s + loc_compile_s

    t0 = time.perf_counter()
    curves = rel_exec(*rel_args)
    if total > num_queries:
        curves = curves[:num_queries]
    if padded > num_queries:
        curves = jnp.concatenate([curves, jnp.zeros((padded - num_queries, t_len), curves.dtype)])
    outputs = [loc_exec(curves[s:s + chunk], mask_p[s:s + chunk], duration_p[s:s + chunk])
               for s in range(0, padded, chunk)]
    outputs = jax.block_until_ready(outputs)
    localize_s = time.perf_counter() - t0

    host = [jax.tree.map(np.asarray, o) for o in outputs]
    merged = jax.tree.map(lambda *xs: np.concatenate(xs)[:num_queries], *host)
    return LocalizeResult(windows=merged.windows, valid=merged.valid, curves=np.asarray(curves)[:num_queries],
                          mask=mask, details=merged, compile_s=compile_s, localize_s=localize_s,
                          frame_offset_s=config.frame_offset_s)


def _localize_split_llm(config: ml_collections.ConfigDict, arrays: SplitArrays,
                        embedded: Embedded, backend, *, cache: CompiledCache) -> LocalizeResult:
    """The language-model localizer: jitted curves and FWHM fallback, host-side generation.

    The fallback windows are jointproj's FWHM windows with `config.fwhm` (s1 by default); the
    number of queries that used them is in `details.fallback`.
    """
    from amr_jax.localize import llm

    if backend is None:
        raise ValueError("the llm localizer needs a backend (llm.make_backend)")
    if not config.llm.examples:
        raise ConfigError(f"{config.system} needs --config.llm.examples=EXAMPLES.jsonl (worked "
                          "examples from the training split: python -m experiments.llm_examples)")
    examples = llm.load_examples(config.llm.examples)
    fwhm_config = ml_collections.ConfigDict(config.to_dict())
    fwhm_config.localizer = "fwhm"
    base = localize_split(fwhm_config, arrays, embedded, cache=cache)
    t0 = time.perf_counter()
    out = llm.llm_windows(backend, arrays.query_text, base.curves, base.mask, arrays.duration,
                          examples, base.windows, base.valid, num_windows=config.num_windows,
                          batch_size=config.llm.batch_size, max_values=config.llm.max_values)
    details = systems.Localization(windows=out.windows, valid=out.valid,
                                   curve=np.asarray(base.details.curve), fallback=out.fallback)
    return dataclasses.replace(base, windows=out.windows, valid=out.valid, details=details,
                               localize_s=base.localize_s + time.perf_counter() - t0)
