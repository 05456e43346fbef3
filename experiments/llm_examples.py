r"""Worked examples for the language-model localizer (jointproj_llm), from a training split.

  python -m experiments.llm_examples --annotations=TRAIN.jsonl --audio_feats=FEATS/clap \
    --text_feats=FEATS/clap_text --clap=CONVERTED_DIR [--num=3 --seed=0] --output=EXAMPLES.jsonl

Each line holds a query, its duration, its joint-space relevance curve and its windows; pass
the file as `--config.llm.examples=EXAMPLES.jsonl` to experiments.localize.
"""

from absl import flags
from ml_collections import config_flags

from amr_jax import cli
from amr_jax.localize import llm, pipeline

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/localize.py:jointproj_llm",
                                          "experiments/configs/localize.py:jointproj_llm[,clotho]")
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "Training annotation jsonl.", required=True)
_AUDIO = flags.DEFINE_string("audio_feats", None, "Folder of <vid>.npz audio features.",
                             required=True)
_TEXT = flags.DEFINE_string("text_feats", None, "Folder of qid<qid>.npz text features.",
                            required=True)
_CLAP = flags.DEFINE_string("clap", None, "Converted MS-CLAP folder.", required=True)
_NUM = flags.DEFINE_integer("num", 3, "Number of worked examples.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the draw.")
_OUTPUT = flags.DEFINE_string("output", None, "Examples jsonl.", required=True)


def main(argv):
    del argv
    examples = pipeline.draw_examples(_CONFIG.value, annotations=_ANNOTATIONS.value,
                                      audio_feats=_AUDIO.value, text_feats=_TEXT.value,
                                      clap_dir=_CLAP.value, num=_NUM.value, seed=_SEED.value)
    llm.write_examples(_OUTPUT.value, examples)
    cli.log_outputs({"examples": _OUTPUT.value})


if __name__ == "__main__":
    cli.run(main)
