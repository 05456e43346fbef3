r"""Training-free localization systems (JointProj FWHM peaks, background-contrast GMM).

  python -m experiments.localize --config=experiments/configs/localize.py:SYSTEM \
    --annotations=ANN.jsonl --audio_feats=FEATS/clap --text_feats=FEATS/clap_text \
    --clap=CONVERTED_DIR [--neutral_feats=DIR | --tokenizer_dir=DIR] [--query_route=text] \
    --output=PRED.jsonl [--timings=T.json]

SYSTEM is one of
  backbone_cosine  cosine of raw 768-d audio rows with the end-of-text row, then FWHM (as s1);
  jointproj_s1     MS-CLAP joint space, FWHM, smooth_k=5, rel_height=0.5;
  jointproj_s2     smooth_k=7;
  jointproj_s3     rel_height=0.45;
  gmm_simple       joint-space trace, Gaussian smoothing, two-component GMM posterior runs;
  gmm_contrast     as gmm_simple on s_t - <a_t, n> (needs --neutral_feats, or GPT-2 in the
                   --clap folder and --tokenizer_dir);
  jointproj_dp     joint space, duration-prior window search (DESIGN 9.9; config.dp);
  fused            background-contrast trace (as gmm_contrast); FWHM windows at several
                   widths + GMM runs + DP windows rescored by a linear model on their features,
                   NMS (amr_jax/localize/fused.py); fit the model on a validation split with
                   `python -m experiments.fit_fused ... --output=PARAMS.json` and pass
                   `--config.fused_params=PARAMS.json` (untuned defaults otherwise);
  jointproj_llm    EXPLORATORY: a language model reads the joint-space curve (TAP prompt with
                   the worked examples of --config.llm.examples, from
                   experiments.llm_examples on the training split); backend
                   `--config.llm.backend=clap_gpt2` (the GPT-2 of --clap, --tokenizer_dir) or
                   `transformers` (`--config.llm.model_dir=LOCAL_LM`); answers that do not parse
                   fall back to FWHM (counted). Not run by --all_systems.
Append ",runlocal" (e.g. `localize.py:gmm_contrast,runlocal`) for a quick run: fewer EM
initializations and iterations and no progress bars.

Frame timing (`config.frame_offset_s`): frame `i` covers `[i + o, i + 1 + o)` seconds. The
dataset preset sets `o`:
  ",castella" (the default)  o = 0:    CASTELLA features are whole 1 s windows from 0 s
                                      (`T = duration`, capped at 300);
  ",clotho"                  o = -0.5: Clotho-Moment features are centre-cut (`T = duration + 1`,
                                      frame i centred on second i), e.g.
                                      `localize.py:gmm_contrast,clotho` (`,clotho,runlocal` works).
Any other centre-cut split: `--config.frame_offset_s=-0.5`. The FWHM windows are then
`[round(left_ips + 0.5 + o), round(right_ips + 0.5 + o)]` and a GMM run of frames `a..b-1` is
`[a + o, b + o]` (both clipped to `[0, duration]`, at least 1 s). When most recordings' lengths
suggest the other convention (`T = duration + 1` with o = 0, or `T = duration` with o = -0.5),
the run logs a warning naming example vids (`amr_jax.data.timing`).

Query and neutral routes (flags of experiments.localize / experiments.diagnose, not config):
`--query_route=features` (default) embeds each query from the released end-of-text row of its
text features; `--query_route=text` re-encodes the raw query text with the GPT-2 held by the
converted MS-CLAP folder (`caption_encoder.base.*`) and the tokenizer of `--tokenizer_dir`
(a local folder with vocab.json and merges.txt). gmm_contrast's neutral direction comes from
`--neutral_feats` when given, otherwise from the three phrases through the same GPT-2 route.

Published development figures (real features, official scorer): JointProj s1 on Clotho-Moment
val R1@0.7 46.0 / mAP 42.5 (backbone cosine 13.2 / 12.4); GMM+contrast on CASTELLA test
R1@0.7 13.5 / mAP 10.0 (GMM simple 11.9 / 9.2). Synthetic splits give other numbers.

This module is the one home of these configs (the library's Predictor and demo read it);
`experiments/configs/localize.py` is the file the binaries' `--config` flag loads.
"""

import ml_collections

from amr_jax.data.timing import FRAME_OFFSET_S

__all__ = ["DATASETS", "SEED_SYSTEMS", "SYSTEMS", "get_config", "all_system_configs"]

# config option -> dataset whose frame convention it selects
DATASETS = {"castella": "castella", "clotho": "clotho_moment", "clotho_moment": "clotho_moment"}
# The six systems of the seed reports (the demo runs these); --all_systems adds dp and fused.
SEED_SYSTEMS = ("backbone_cosine", "jointproj_s1", "jointproj_s2", "jointproj_s3", "gmm_simple",
                "gmm_contrast")
SYSTEMS = SEED_SYSTEMS + ("jointproj_dp", "fused")

# system -> (relevance, localizer, FWHM overrides)
_SYSTEM_TABLE = {
    "backbone_cosine": ("backbone", "fwhm", {}),
    "jointproj_s1": ("joint", "fwhm", {}),
    "jointproj_s2": ("joint", "fwhm", {"smooth_k": 7}),
    "jointproj_s3": ("joint", "fwhm", {"rel_height": 0.45}),
    "gmm_simple": ("joint", "gmm", {}),
    "gmm_contrast": ("contrast", "gmm", {}),
    "jointproj_dp": ("joint", "dp", {}),
    "fused": ("contrast", "fused", {}),
    # Exploratory, not in SYSTEMS (--all_systems): needs a language model (DESIGN 9.10).
    "jointproj_llm": ("joint", "llm", {}),
}

# Duration prior (DESIGN 9.9): log-normal of the window length in seconds, `(mean, std)` of
# log(length), fitted with `duration_dp.fit_lognormal` on the cleaned windows of
#   castella: castella_train_release.jsonl (6157 windows);
#   clotho_moment: clotho_moment_val_release.jsonl (4918 windows; no Clotho-Moment train
#   annotations are available offline, so val stands in: a deviation from "train").
_LOGNORMAL = {"castella": (1.5262, 1.1318), "clotho_moment": (2.9773, 0.3142)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p.strip() for p in (arg or "jointproj_s1").split(",") if p.strip()]
    system, options = parts[0], set(parts[1:])
    if system not in _SYSTEM_TABLE:
        raise ValueError(f"unknown system {system!r}; expected one of "
                         f"{', '.join(_SYSTEM_TABLE)}")
    known = {"runlocal"} | set(DATASETS)
    if options - known:
        raise ValueError(f"unknown config options {sorted(options - known)} "
                         f"(expected any of {sorted(known)})")
    datasets = sorted(options & set(DATASETS))
    if len({DATASETS[d] for d in datasets}) > 1:
        raise ValueError(f"config options name two datasets: {datasets}")
    dataset = DATASETS[datasets[0]] if datasets else "castella"
    relevance, localizer, fwhm_overrides = _SYSTEM_TABLE[system]

    config = ml_collections.ConfigDict()
    config.system = system
    config.relevance = relevance        # "backbone" | "joint" | "contrast"
    config.localizer = localizer        # "fwhm" | "gmm" | "dp" | "fused"
    config.num_windows = 10             # predictions kept per query (the scorer reads 10)
    # Frame i covers [i + o, i + 1 + o) s: 0 for CASTELLA, -0.5 for centre-cut Clotho-Moment.
    config.frame_offset_s = FRAME_OFFSET_S[dataset]

    # Shapes: every recording is padded to one frame length, the longest in the split rounded
    # up to `frame_bucket` and capped at `max_frames` (longer recordings are truncated).
    config.max_frames = 300
    config.frame_bucket = 32
    # Packed rows of max_frames frames per audio-projection call. On this project's 2-core CPU,
    # 16 gives frames bit-equal to 32 (XLA's dot keeps its blocking) while the operands stay in
    # cache: the projection of the CASTELLA-structured test split takes 3.6 s instead of 4.4 s.
    # Below 16 the dot's summation order changes (12: frames differ by float32 rounding).
    config.embed_chunk = 16
    config.query_chunk = 0              # queries per localizer call; 0 = the whole split at once
    # Bounded memory (amr_jax/localize/streaming.py): 0 reads the whole split at once; N > 0
    # reads, embeds and localizes N recordings (at most stream_queries queries) at a time.
    config.stream_recordings = 0
    config.stream_queries = 512
    config.num_workers = 0              # feature loading threads; 0: min(8, CPUs)
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

    # jointproj_dp (DESIGN 9.9): argmax over windows [a, a + l) of
    # sum(z_t - tau) + lam * log p(l), exact over all starts and lengths 1..max_len.
    config.dp = ml_collections.ConfigDict()
    config.dp.tau = 0.5
    config.dp.lam = 1.0
    config.dp.log_mu, config.dp.log_sigma = _LOGNORMAL[dataset]
    config.dp.max_len = 120
    config.dp.iou_threshold = 0.5       # later windows overlap a chosen one by at most this

    # fused (amr_jax/localize/fused.py): FWHM at several widths + GMM runs + DP windows,
    # rescored by a linear model on their features, NMS, top K. The model comes from
    # `fused_params` (written by experiments.fit_fused on a validation split); without it the
    # untuned defaults below rank by peak height alone.
    config.fused = ml_collections.ConfigDict()
    config.fused.smooth_k = 5
    config.fused.rel_heights = (0.3, 0.5, 0.7)
    config.fused.min_prominence = 0.1
    config.fused.per_source = 10        # windows taken from each source
    config.fused.mean = (0.0,) * 8      # fused.FEATURES order
    config.fused.scale = (1.0,) * 8
    config.fused.weights = (1.0,) + (0.0,) * 7
    config.fused.nms_iou = 0.5
    config.fused_params = ""            # PARAMS.json from experiments.fit_fused

    # jointproj_llm (amr_jax/localize/llm.py, exploratory): a language model reads the curve.
    config.llm = ml_collections.ConfigDict()
    config.llm.backend = "clap_gpt2"    # "clap_gpt2" (GPT-2 of --clap, --tokenizer_dir) |
                                        # "transformers" (llm.model_dir, optional extra)
    config.llm.model_dir = ""           # local causal LM folder of the transformers backend
    config.llm.examples = ""            # EXAMPLES.jsonl (python -m experiments.llm_examples)
    config.llm.max_new_tokens = 64
    config.llm.batch_size = 8
    config.llm.context = 0              # clap_gpt2 token buffer; 0 = GPT-2's n_positions
    config.llm.max_values = 300         # curve values rendered per recording

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


# What makes a system a system; every other field is a property of the run or the split.
_PER_SYSTEM_FIELDS = ("system", "relevance", "localizer", "fwhm")


def all_system_configs(base: ml_collections.ConfigDict | None = None
                       ) -> list[ml_collections.ConfigDict]:
    """One config per system (`--all_systems`), in `SYSTEMS` order.

    With `base` (the `--config` of the run, e.g. `localize.py:gmm_contrast,clotho,runlocal` with
    overrides), every system takes base's split- and run-level fields (frame offset, shapes,
    workers, progress, GMM and diagnostics blocks); each keeps its own relevance, localizer and
    FWHM block.
    """
    configs = []
    for system in SYSTEMS:
        config = get_config(system)
        if base is not None:
            config.update({k: v for k, v in base.to_dict().items() if k not in _PER_SYSTEM_FIELDS})
        configs.append(config)
    return configs
