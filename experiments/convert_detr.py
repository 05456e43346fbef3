r"""Imports a reference QD-DETR PyTorch checkpoint (lighthouse / official DCASE baseline).

  python -m experiments.convert_detr --checkpoint=best.ckpt --layout=dcase --workdir=DIR
  python -m experiments.predict_detr --workdir=DIR --annotations=ANN.jsonl \
    --audio_feats=FEATS/clap --text_feats=FEATS/clap_text --output=PRED.jsonl \
    [--reproduce_reference]

Reads the `model` state dict of a `torch.save` file (the `optimizer`, `lr_scheduler`,
`epoch` and `opt` entries are ignored; tensors saved on cuda:0 load on the CPU and
`opt` loads without easydict, through an allow-list unpickler that never runs code
from the file). --layout is the layout the checkpoint was trained with: `dcase` for
the official baseline, `lighthouse` for lighthouse. Writes a workdir like the one
`experiments.train_detr` writes (config.json, best/, best.json) plus conversion.json
(sha256, converted and ignored keys). Config overrides (e.g.
--config.postprocess.max_ts_val=150 for lighthouse's Clotho-Moment models) are stored
in the workdir's config.
"""

import json
import os

from absl import app, flags
from ml_collections import config_flags

from amr_jax import cli
from amr_jax.detr.convert import convert_checkpoint

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "qd_detr.py"),
    "QD-DETR experiment config (model sizes must match the checkpoint).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "torch.save checkpoint file.",
                                  required=True)
_LAYOUT = flags.DEFINE_enum("layout", None, ["dcase", "lighthouse"],
                            "Input layout the checkpoint was trained with.", required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output workdir.", required=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    report = convert_checkpoint(_CHECKPOINT.value, _WORKDIR.value, layout=_LAYOUT.value,
                                config=_CONFIG.value)
    print(json.dumps({k: report[k] for k in ("checkpoint", "sha256", "layout", "epoch",
                                              "num_parameters", "ignored")}))
    print(f"converted {len(report['converted'])} tensors into {_WORKDIR.value}")
    cli.log_outputs({"workdir (best checkpoint, config.json, conversion.json)": _WORKDIR.value})


if __name__ == "__main__":
    cli.run(main)
