r"""Builds a TFDS dataset (array_record, no TensorFlow) from a local feature download.

  python -m experiments.build_tfds --dataset=castella --manual_dir=FEATS --data_dir=TFDS_DIR

DATASET: castella, clotho_moment, dcase2026_evaluation, synthetic_castella,
synthetic_clotho_moment. FEATS holds the annotation jsonl and the clap/ and clap_text/
folders (as released, or as experiments.make_synthetic writes them; layouts in
amr_jax/data/tfds/builders.py). Read it back with
`--config.source=tfds:<dataset>:<split> --config.data_dir=TFDS_DIR` (experiments.localize)
or `--config.data.source=tfds:<dataset> --config.data.data_dir=TFDS_DIR` (train_detr).
"""

from absl import flags

from amr_jax import cli

_DATASET = flags.DEFINE_enum(
    "dataset", None, ["castella", "clotho_moment", "dcase2026_evaluation", "synthetic_castella",
                      "synthetic_clotho_moment"], "Dataset to build.", required=True)
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "The local feature download.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder (output).", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Rebuild an existing dataset.")


def main(argv):
    del argv
    from amr_jax.data.tfds import builders  # imports tensorflow_datasets (never TensorFlow)

    path = builders.build(_DATASET.value, manual_dir=_MANUAL_DIR.value, data_dir=_DATA_DIR.value,
                          overwrite=_OVERWRITE.value)
    cli.log_outputs({"TFDS dataset": str(path)})


if __name__ == "__main__":
    cli.run(main)
