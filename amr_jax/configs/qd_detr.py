r"""QD-DETR for audio moment retrieval (the official DCASE 2026 Task 6 baseline recipe).

Train (CASTELLA layout; every data path is a config field):

  python -m experiments.train_detr --config=experiments/configs/qd_detr.py --workdir=runs/qd_detr \
    --config.data.train_annotations=DATA/castella_train_release.jsonl \
    --config.data.train_audio_feats=FEATS/clap \
    --config.data.train_text_feats=FEATS/clap_text \
    --config.data.val_annotations=DATA/castella_val_release.jsonl \
    --config.data.val_audio_feats=FEATS/clap \
    --config.data.val_text_feats=FEATS/clap_text

Data fields (config.data):
  train_annotations / val_annotations: annotation jsonl files (lighthouse / DCASE layout);
  train_audio_feats / val_audio_feats: folders of `<vid>.npz` (key "features", [T, 768]);
  train_text_feats / val_text_feats: folders of `qid<qid>.npz` (key "last_hidden_state").
  source: "folders" (the six paths above) or "tfds:<name>", a dataset built by
    `experiments.build_tfds` in data_dir, read without TensorFlow; its splits train_split
    and val_split replace the paths (amr_jax/data/sources.py). Same results either way.
  layout: the input layout (`amr_jax/detr/layout.py`; the model is the same in both):
    "dcase" (default, the official DCASE 2026 baseline): audio row
      [clap_768 (L2-normalized per frame) ‖ tef_start, tef_end], raw text rows never cut;
      max_tokens 0 pads text to the longest query of the run's splits (train + val when
      training, the predicted split when predicting), max_tokens N > 0 pads to N and any
      longer text is an error naming its qid; best epoch by val R1@0.7.
    "lighthouse": audio row [tef_start, tef_end ‖ clap_768 (L2-normalized)], text
      L2-normalized per token and cut to max_tokens (0 means max_q_l = 32); best epoch by
      val mAP. Select with --config.data.layout=lighthouse.
  train.best_metric: "" uses the layout's metric; any brief key ("R1@0.7", "mAP", ...)
    overrides it.
The workdir receives config.json, orbax checkpoints (`checkpoints/` latest, resumed
automatically; `best/` the epoch with the best validation `train.best_metric`) and
metrics.jsonl (one line per epoch). Predict with the best checkpoint:

  python -m experiments.predict_detr --workdir=runs/qd_detr --annotations=ANN.jsonl \
    --audio_feats=FEATS/clap --text_feats=FEATS/clap_text --output=PRED.jsonl

Expected on real CASTELLA features (official baseline, 5 seeds, test split):
R1@0.5 22.7, R1@0.7 10.2, mAP 10.5.

`:runlocal` is a small smoke run (2 epochs, batch 8, hidden 64 / FFN 128 instead of 256 / 1024)
for a tiny synthetic split, e.g.

  python -m experiments.make_synthetic --preset=castella --output=/tmp/syn --seed=0 \
    --num_recordings=16
  python -m experiments.train_detr --config=experiments/configs/qd_detr.py:runlocal \
    --workdir=/tmp/qd_run --config.data.train_annotations=/tmp/syn/annotations.jsonl \
    --config.data.train_audio_feats=/tmp/syn/clap \
    --config.data.train_text_feats=/tmp/syn/clap_text \
    --config.data.val_annotations=/tmp/syn/annotations.jsonl \
    --config.data.val_audio_feats=/tmp/syn/clap --config.data.val_text_feats=/tmp/syn/clap_text

Expected: 2 epochs of 6 steps, about 1-2 minutes on 2 CPU cores (most of it XLA
compilation), validation metrics near chance (a smoke test, not a result).

Seed-003 components (quality- and boundary-aware refinement, DESIGN 6 and 9.2-9.5),
each a config switch of the same model / criterion / post-processing, off by default:

  :quality         model.quality_head, loss.quality_weight = 1.0 (L1 to the matched
                   IoU on every decoder layer), postprocess.quality_rerank (p_fg * q^1.5)
  :boundary        loss.boundary_weight = 0.05 (candidate-level boundary hard negatives)
  :dense_saliency  data.saliency_labels = "all_windows" (use it for fine-tuning)
  :short           postprocess.short_proposals (1/2/3 s saliency-peak proposals + NMS 0.7)
  :all             every component above

UVCOM backbone (DESIGN 9.6; amr_jax/detr/uvcom.py):

  :uvcom           model.backbone = "uvcom" (CIM encoder: DBIA/EM attention, LRP, GKA),
                   loss.sim_weight = 0.5 (multi-aspect similarity loss); negative pairs
                   use the least similar text from train.neg_choose_epoch (80) on

Each combines with runlocal, e.g. `--config=experiments/configs/qd_detr.py:all,runlocal`.
Pretrain -> fine-tune: `--config.train.init_from=PRETRAIN_WORKDIR` starts from that run's
best (else latest) weights (`--config.train.init_from_checkpoint=latest` for the latest)
with a fresh optimizer and step counter; names and shapes must match exactly.

This module is the one home of these defaults (the trainer fills fields missing from older
workdirs from it); `experiments/configs/qd_detr.py` is the file `--config` loads.
"""

import ml_collections

from amr_jax.detr.model import default_model_config


__all__ = ["VARIANTS", "get_config"]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 2023

    config.data = ml_collections.ConfigDict()
    config.data.train_annotations = ""
    config.data.train_audio_feats = ""
    config.data.train_text_feats = ""
    config.data.val_annotations = ""
    config.data.val_audio_feats = ""
    config.data.val_text_feats = ""
    config.data.max_frames = 300     # max_a_l (CASTELLA)
    config.data.layout = "dcase"     # or "lighthouse" (see the docstring)
    config.data.max_tokens = 0       # 0: the layout's default (see the docstring)
    config.data.max_windows = 5
    config.data.clip_length = 1.0    # seconds per feature frame
    config.data.num_workers = 0      # feature loading threads; 0: min(8, CPUs)
    config.data.source = "folders"   # or "tfds:<name>": TFDS splits train_split / val_split
    config.data.data_dir = ""        # TFDS data folder (experiments.build_tfds --data_dir)
    config.data.train_split = "train"
    config.data.val_split = "val"    # "" trains without validation (tfds source)
    # --- seed 003: dense saliency (DESIGN 9.2) ---
    # "first_window" (reference) or "all_windows" (every frame of every window).
    config.data.saliency_labels = "first_window"

    config.model = default_model_config()

    config.loss = ml_collections.ConfigDict()
    config.loss.cost_span = 10.0
    config.loss.cost_giou = 1.0
    config.loss.cost_class = 4.0
    config.loss.span_weight = 10.0
    config.loss.giou_weight = 1.0
    config.loss.label_weight = 4.0
    config.loss.saliency_weight = 1.0
    config.loss.eos_coef = 0.1
    config.loss.saliency_margin = 0.2
    config.loss.saliency_tau = 0.5
    config.loss.saliency_num_ranks = 12
    # --- seed 003: quality head and boundary hard negatives (DESIGN 9.3, 9.4) ---
    # A term with weight 0 is not built (the reference objective).
    config.loss.quality_weight = 0.0            # report: 1.0; needs model.quality_head
    config.loss.boundary_weight = 0.0           # report: 0.05
    config.loss.boundary_candidate_iou_min = 0.40
    config.loss.boundary_candidate_iou_max = 0.75
    config.loss.boundary_negative_iou_min = 0.45
    config.loss.boundary_negative_iou_max = 0.75
    config.loss.boundary_margin = 0.03
    config.loss.boundary_eps = 0.05
    config.loss.boundary_num_factors = 12       # factors 0.1, 0.2, ..., 1.2
    config.loss.boundary_factor_step = 0.1
    # --- seed 003: UVCOM's multi-aspect similarity loss (DESIGN 9.6) ---
    config.loss.sim_weight = 0.0                # report: 0.5; needs model.backbone = "uvcom"

    config.optim = ml_collections.ConfigDict()
    config.optim.learning_rate = 1e-4
    config.optim.weight_decay = 1e-4
    config.optim.grad_clip = 0.1
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.eps = 1e-8
    config.optim.lr_drop_epochs = 400
    config.optim.lr_drop_factor = 0.1

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 32
    config.train.num_epochs = 200
    config.train.eval_batch_size = 100
    config.train.eval_every_epochs = 1
    config.train.log_every_steps = 50
    config.train.checkpoint_every_steps = 500   # plus one at every epoch end
    config.train.best_metric = ""  # "": the layout's (dcase R1@0.7, lighthouse mAP)
    config.train.max_to_keep = 1
    # Training-data shards (WORKSPACE.md "Multi-host"): 0 = one per process (1 on one host,
    # today's batches). On one process, N > 1 builds the batches an N-process run builds.
    config.train.data_shards = 0
    # --- pretrain -> fine-tune ---
    config.train.init_from = ""                 # workdir of a pretraining run
    config.train.init_from_checkpoint = "best"  # "best" (else latest) or "latest"
    # UVCOM: from this epoch on, negative pairs use the least similar text of the batch.
    config.train.neg_choose_epoch = 80
    # Dropout masks: "threefry" (nnx.Dropout, the verified default) or "hash" (a keyed index
    # hash, amr_jax/detr/dropout.py: same keep rule and scaling, another random stream; the
    # training step on a 2-core CPU takes ~0.65x the time).
    config.train.dropout_masks = "threefry"

    config.postprocess = ml_collections.ConfigDict()
    config.postprocess.max_ts_val = 300.0
    config.postprocess.top_k = 10
    # --- seed 003: re-ranking and short proposals (DESIGN 9.3, 9.5) ---
    config.postprocess.quality_rerank = False   # score p_fg * q ** quality_gamma
    config.postprocess.quality_gamma = 1.5
    config.postprocess.short_proposals = False  # saliency-peak proposals + temporal NMS
    config.postprocess.short_num_peaks = 3
    config.postprocess.short_coefficient = 0.25
    config.postprocess.nms_iou = 0.7

    parts = [p for p in (arg or "").split(",") if p]
    unknown = [p for p in parts if p != "runlocal" and p not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown config argument(s) {unknown} in {arg!r} (expected "
                         f"'runlocal' and/or one of {sorted(VARIANTS)}, comma-separated)")
    for part in parts:
        if part in VARIANTS:
            VARIANTS[part](config)
    if "runlocal" in parts:
        config.train.batch_size = 8
        config.train.num_epochs = 2
        config.train.eval_batch_size = 16
        config.train.log_every_steps = 2
        config.train.checkpoint_every_steps = 1000  # epoch ends only
        config.data.num_workers = 2
        # A narrower model (same layers, heads and code paths): the smoke runs of the
        # tests, notebooks and demo spend their time in XLA compilation and CPU steps,
        # not in what the width would show. Full width: drop runlocal.
        config.model.hidden_dim = 64
        config.model.dim_feedforward = 128
    config.lock()
    return config


def _quality(config: ml_collections.ConfigDict) -> None:
    config.model.quality_head = True
    config.loss.quality_weight = 1.0
    config.postprocess.quality_rerank = True


def _boundary(config: ml_collections.ConfigDict) -> None:
    config.loss.boundary_weight = 0.05


def _dense_saliency(config: ml_collections.ConfigDict) -> None:
    config.data.saliency_labels = "all_windows"


def _short(config: ml_collections.ConfigDict) -> None:
    config.postprocess.short_proposals = True


def _uvcom(config: ml_collections.ConfigDict) -> None:
    config.model.backbone = "uvcom"
    config.loss.sim_weight = 0.5


def _all(config: ml_collections.ConfigDict) -> None:
    for component in (_quality, _boundary, _dense_saliency, _short):
        component(config)


# Named variants: each turns on one seed-003 component on top of QD-DETR.
VARIANTS = {"quality": _quality, "boundary": _boundary, "dense_saliency": _dense_saliency,
            "short": _short, "all": _all, "uvcom": _uvcom}
