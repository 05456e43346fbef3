r"""Training-free localization systems (JointProj FWHM peaks, background-contrast GMM).

  python -m experiments.localize --config=experiments/configs/localize.py:SYSTEM \
    --annotations=ANN.jsonl --audio_feats=FEATS/clap --text_feats=FEATS/clap_text \
    --clap=CONVERTED_DIR [--neutral_feats=DIR] --output=PRED.jsonl [--timings=T.json]

SYSTEM is one of
  backbone_cosine  cosine of raw 768-d audio rows with the end-of-text row, then FWHM (as s1);
  jointproj_s1     MS-CLAP joint space, FWHM, smooth_k=5, rel_height=0.5;
  jointproj_s2     smooth_k=7;
  jointproj_s3     rel_height=0.45;
  gmm_simple       joint-space trace, Gaussian smoothing, two-component GMM posterior runs;
  gmm_contrast     as gmm_simple on s_t - <a_t, n> (needs --neutral_feats).
Append ",runlocal" (e.g. `localize.py:gmm_contrast,runlocal`) for a quick run: fewer EM
initializations and iterations and no progress bars.

Published development figures (real features, official scorer): JointProj s1 on Clotho-Moment
val R1@0.7 46.0 / mAP 42.5 (backbone cosine 13.2 / 12.4); GMM+contrast on CASTELLA test
R1@0.7 13.5 / mAP 10.0 (GMM simple 11.9 / 9.2). Synthetic splits give other numbers.
"""

import ml_collections

SYSTEMS = ("backbone_cosine", "jointproj_s1", "jointproj_s2", "jointproj_s3", "gmm_simple",
           "gmm_contrast")

# system -> (relevance, localizer, FWHM overrides)
_SYSTEM_TABLE = {
    "backbone_cosine": ("backbone", "fwhm", {}),
    "jointproj_s1": ("joint", "fwhm", {}),
    "jointproj_s2": ("joint", "fwhm", {"smooth_k": 7}),
    "jointproj_s3": ("joint", "fwhm", {"rel_height": 0.45}),
    "gmm_simple": ("joint", "gmm", {}),
    "gmm_contrast": ("contrast", "gmm", {}),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p.strip() for p in (arg or "jointproj_s1").split(",") if p.strip()]
    system, options = parts[0], set(parts[1:])
    if system not in _SYSTEM_TABLE:
        raise ValueError(f"unknown system {system!r}; expected one of {', '.join(SYSTEMS)}")
    if options - {"runlocal"}:
        raise ValueError(f"unknown config options {sorted(options - {'runlocal'})} (only 'runlocal')")
    relevance, localizer, fwhm_overrides = _SYSTEM_TABLE[system]

    config = ml_collections.ConfigDict()
    config.system = system
    config.relevance = relevance        # "backbone" | "joint" | "contrast"
    config.localizer = localizer        # "fwhm" | "gmm"
    config.num_windows = 10             # predictions kept per query (the scorer reads 10)

    # Shapes: every recording is padded to one frame length, the longest in the split rounded
    # up to `frame_bucket` and capped at `max_frames` (longer recordings are truncated).
    config.max_frames = 300
    config.frame_bucket = 32
    config.embed_chunk = 32             # recordings per audio-projection call
    config.query_chunk = 0              # queries per localizer call; 0 = the whole split at once
    config.num_workers = 8              # feature loading threads
    # "folders" (--annotations, --audio_feats, --text_feats) or "tfds:<name>:<split>", a
    # dataset built by experiments.build_tfds into data_dir (amr_jax/data/sources.py).
    config.source = "folders"
    config.data_dir = ""
    config.progress = True

    config.fwhm = ml_collections.ConfigDict()
    config.fwhm.smooth_k = 5
    config.fwhm.rel_height = 0.5
    config.fwhm.min_prominence = 0.1
    config.fwhm.update(fwhm_overrides)

    config.gmm = ml_collections.ConfigDict()
    config.gmm.sigma = 1.5              # Gaussian smoothing, frames
    config.gmm.truncate = 4.0
    config.gmm.n_init = 5
    config.gmm.tol = 1e-3               # sklearn GaussianMixture defaults from here on
    config.gmm.max_iter = 100
    config.gmm.reg_covar = 1e-6
    config.gmm.seed = 42                # random_state of the mirrored sklearn fit
    config.gmm.threshold = 0.45         # posterior threshold of a segment
    config.gmm.peak_weight = 0.3        # score = mean(gamma) + peak_weight * max(c~)
    config.gmm.fallback_rel_height = 0.5
    config.gmm.flat_eps = 1e-6          # spread of c~ at or below which a trace is flat

    config.diagnostics = ml_collections.ConfigDict()
    config.diagnostics.seed = 0         # draws the mismatched query of each query
    config.diagnostics.delta_edges = (0.03, 0.07)  # Low / Mid / High separation bins
    config.diagnostics.auc_chunk = 64   # queries per rank-AUC block

    if "runlocal" in options:
        config.gmm.n_init = 2
        config.gmm.max_iter = 30
        config.embed_chunk = 8
        config.num_workers = 2
        config.progress = False
    config.lock()
    return config
