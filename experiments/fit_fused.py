r"""Fits the fused training-free localizer on a validation split and writes PARAMS.json.

  python -m experiments.fit_fused --annotations=VAL.jsonl --audio_feats=FEATS/clap \
    --text_feats=FEATS/clap_text --clap=CONVERTED_DIR [--neutral_feats=DIR] \
    [--config=experiments/configs/localize.py:fused[,clotho]] --output=PARAMS.json

then, on the test split (no test data enters the fit):

  python -m experiments.localize --config=experiments/configs/localize.py:fused \
    --config.fused_params=PARAMS.json --annotations=TEST.jsonl ... --output=PRED.jsonl

Prints the fitted weights and the validation metrics at the chosen NMS threshold; the last
stdout line is the JSON of those metrics. See amr_jax/localize/fused.py and fused_fit.py.
"""

import json

from absl import flags
from ml_collections import config_flags

from amr_jax import cli
from amr_jax.errors import UsageError
from amr_jax.localize import fit_split, fused_fit, pipeline

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/localize.py:fused",
                                          "experiments/configs/localize.py:fused[,clotho]")
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "Validation annotation jsonl.")
_AUDIO = flags.DEFINE_string("audio_feats", None, "Folder of <vid>.npz audio features.")
_TEXT = flags.DEFINE_string("text_feats", None, "Folder of qid<qid>.npz text features.")
_CLAP = flags.DEFINE_string("clap", None, "Converted MS-CLAP folder.", required=True)
_NEUTRAL = flags.DEFINE_string("neutral_feats", None, "Neutral-prompt text features (only for a "
                               "contrast relevance).")
_TOKENIZER = flags.DEFINE_string("tokenizer_dir", None, "Local GPT-2 tokenizer folder.")
_QUERY_ROUTE = flags.DEFINE_enum("query_route", pipeline.DEFAULT_QUERY_ROUTE, pipeline.QUERY_ROUTES,
                                 "features: released end-of-text row; text: raw query via GPT-2.")
_OUTPUT = flags.DEFINE_string("output", None, "Parameters JSON.", required=True)


def main(argv):
    del argv
    config = _CONFIG.value
    if config.source == "folders" and not (_ANNOTATIONS.value and _AUDIO.value and _TEXT.value):
        raise UsageError("--annotations, --audio_feats and --text_feats are required")
    params = fit_split.fit_split(config, annotations=_ANNOTATIONS.value, audio_feats=_AUDIO.value,
                                 text_feats=_TEXT.value, clap_dir=_CLAP.value,
                                 neutral_feats=_NEUTRAL.value, tokenizer_dir=_TOKENIZER.value,
                                 query_route=_QUERY_ROUTE.value)
    fused_fit.save_params(_OUTPUT.value, params)
    print("weights: " + ", ".join(f"{n}={w:+.3f}" for n, w in zip(params["features"],
                                                                  params["weights"])))
    print(f"feature set: {params['feature_set']} (two-fold CV R1@0.7 on this split: "
          f"{params['cv_r1_at_0.7']})")
    print(f"nms_iou: {params['nms_iou']}")
    print(json.dumps(params["val_metrics"]), flush=True)
    cli.log_outputs({"fused parameters": _OUTPUT.value})


if __name__ == "__main__":
    cli.run(main)
