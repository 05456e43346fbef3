r"""Diagnostics of the training-free systems on an annotated split.

  python -m experiments.diagnose --config=experiments/configs/localize.py:gmm_contrast \
    --annotations=ANN.jsonl --audio_feats=FEATS/clap --text_feats=FEATS/clap_text \
    --clap=CONVERTED_DIR [--neutral_feats=DIR | --tokenizer_dir=DIR] [--query_route=text] \
    [--output=DIAG.json] [--detr_workdir=DIR]

Append ",clotho" to the config for centre-cut Clotho-Moment features. The raw-text routes
(--tokenizer_dir, --query_route=text) are those of experiments.localize.

Prints the matched-vs-mismatched win rate and rank-AUC of frame relevance for the backbone
and the joint space, and the mean IoU of the top GMM window by separation Delta; with
--detr_workdir (a train_detr or convert_detr workdir) also the QD-DETR's mean IoU of its
top window on the same queries, per Delta bin (the report's Table III).
"""

from absl import flags
from ml_collections import config_flags

from amr_jax import cli
from amr_jax.eval import diagnostics
from amr_jax.localize import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/localize.py:gmm_contrast", "A GMM system config.")
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "Annotated jsonl.", required=True)
_AUDIO = flags.DEFINE_string("audio_feats", None, "Folder of <vid>.npz.", required=True)
_TEXT = flags.DEFINE_string("text_feats", None, "Folder of qid<qid>.npz.", required=True)
_CLAP = flags.DEFINE_string("clap", None, "Converted MS-CLAP folder.", required=True)
_NEUTRAL = flags.DEFINE_string("neutral_feats", None, "Neutral-prompt text features.")
_TOKENIZER = flags.DEFINE_string("tokenizer_dir", None,
                                 "Local GPT-2 tokenizer folder (vocab.json, merges.txt).")
_QUERY_ROUTE = flags.DEFINE_enum("query_route", pipeline.DEFAULT_QUERY_ROUTE, pipeline.QUERY_ROUTES,
                                 "features: released end-of-text row; text: raw query via GPT-2.")
_OUTPUT = flags.DEFINE_string("output", None, "Optional JSON output.")
_DETR = flags.DEFINE_string("detr_workdir", None,
                            "Optional QD-DETR workdir: adds its mean IoU per Delta bin.")


def main(argv):
    del argv
    diagnostics.run_diagnostics(_CONFIG.value, annotations=_ANNOTATIONS.value,
                                audio_feats=_AUDIO.value, text_feats=_TEXT.value,
                                clap_dir=_CLAP.value, neutral_feats=_NEUTRAL.value,
                                output=_OUTPUT.value, detr_workdir=_DETR.value,
                                tokenizer_dir=_TOKENIZER.value, query_route=_QUERY_ROUTE.value)
    cli.log_outputs({"diagnostics": _OUTPUT.value})


if __name__ == "__main__":
    cli.run(main)
