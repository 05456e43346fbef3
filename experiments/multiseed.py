r"""Trains a config over several seeds and reports mean +- std and a bootstrap 95% interval.

  python -m experiments.multiseed --config=experiments/configs/qd_detr.py --workdir=runs/ms \
    --seeds=5 --test_annotations=ANN.jsonl --test_audio_feats=FEATS/clap \
    --test_text_feats=FEATS/clap_text --config.data.train_annotations=... (as train_detr)

Seeds are `config.seed + 0 .. N-1` unless `--seed_list` is given. Every seed resumes
from its folder, so an interrupted sweep continues where it stopped. Writes
`summary.json` and `summary.md` in the workdir; the last stdout line is the JSON of
the means and stds.
"""

from absl import flags
from ml_collections import config_flags

from amr_jax import cli
from amr_jax.train.multiseed import run_seeds

_CONFIG = config_flags.DEFINE_config_file("config", None, "Trainer config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)
_SEEDS = flags.DEFINE_integer("seeds", 3, "Number of seeds.")
_SEED_LIST = flags.DEFINE_list("seed_list", [], "Explicit seeds (overrides --seeds).")
_TEST_ANN = flags.DEFINE_string("test_annotations", None, "Annotated test jsonl.", required=True)
_TEST_AUDIO = flags.DEFINE_string("test_audio_feats", None, "Test audio features.", required=True)
_TEST_TEXT = flags.DEFINE_string("test_text_feats", None, "Test text features.", required=True)
_RESAMPLES = flags.DEFINE_integer("bootstrap_resamples", 1000, "Bootstrap resamples over queries.")
flags.mark_flag_as_required("config")


def main(argv):
    del argv
    config = _CONFIG.value
    seeds = ([int(s) for s in _SEED_LIST.value] if _SEED_LIST.value
             else [config.seed + k for k in range(_SEEDS.value)])
    run_seeds(config, _WORKDIR.value, seeds=seeds, test_annotations=_TEST_ANN.value,
              test_audio_feats=_TEST_AUDIO.value, test_text_feats=_TEST_TEXT.value,
              name=config_flags.get_config_filename(flags.FLAGS["config"]),
              num_resamples=_RESAMPLES.value)
    cli.log_outputs({"summary": f"{_WORKDIR.value}/summary.md"})


if __name__ == "__main__":
    cli.run(main)
