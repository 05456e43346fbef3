r"""The ablation rows of the quality- and boundary-aware DETR (report 003, Table 1; DESIGN 9.8).

Every row is pretraining (or none) followed by CASTELLA fine-tuning. A row's two stages
are ordinary trainer configs of `experiments/configs/qd_detr.py` with the seed-003
switches turned on:

  get_config("S8")            the fine-tuning stage (train on CASTELLA; B0 trains only this)
  get_config("S8,pretrain")   the pretraining stage (on the row's `ROWS[row].pretrain_data`)
  ...,runlocal                the smoke sizes of qd_detr.py:runlocal (2 epochs, batch 8,
                              hidden 64 / FFN 128)

| row | backbone | pretraining | both stages | fine-tuning only |
|-----|----------|-------------|-------------|------------------|
| B0 | QD-DETR | none | - | - |
| B1 | QD-DETR | Clotho-Moment | - | - |
| S1 | QD-DETR | Clotho-Moment-Long | - | - |
| S2 | UVCOM + similarity loss | Clotho-Moment-Long | - | - |
| S3 | UVCOM | Clotho-Moment-Long | quality head + re-ranking | - |
| S4 | UVCOM | Clotho-Moment-Long | - | dense saliency |
| S5 | UVCOM | Clotho-Moment-Long | - | dense saliency, short proposals |
| S6 | UVCOM | Clotho-Moment-Long | boundary negatives | dense saliency, short proposals |
| S7 | UVCOM | Clotho-Moment-Long | quality | dense saliency, short proposals |
| S8 | UVCOM | Clotho-Moment-Long | boundary negatives, quality | dense saliency, short proposals |

Objectives other than dense saliency apply in both stages (DESIGN 9.8). Short proposals
act only at inference; pinned here: they are off while pretraining (they would only
change which pretraining epoch is kept), so S2, S4 and S5 share one pretraining run, as
do S3 and S7; `experiments.ablation` trains each distinct pretraining config once per seed.

One row by hand (the ablation runner does the same for many rows and seeds):

  python -m experiments.train_detr --config=experiments/configs/amr_detr.py:S8,pretrain \
    --workdir=runs/s8_pre --config.data.train_annotations=CML/train/annotations.jsonl ...
  python -m experiments.train_detr --config=experiments/configs/amr_detr.py:S8 \
    --workdir=runs/s8 --config.train.init_from=runs/s8_pre \
    --config.data.train_annotations=CASTELLA/train/annotations.jsonl ...

`ROWS[row].report` holds the report's single-seed figures on the real CASTELLA
development-testing split (Table 1), for comparison only.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from experiments.configs import qd_detr

CASTELLA = "castella"
CLOTHO_MOMENT = "clotho_moment"
CLOTHO_MOMENT_LONG = "clotho_moment_long"
STAGES = ("pretrain", "finetune")


@dataclasses.dataclass(frozen=True)
class Row:
    """One ablation row: what it adds, its pretraining data and its qd_detr.py variants."""

    description: str
    pretrain_data: str          # "" (no pretraining), CLOTHO_MOMENT or CLOTHO_MOMENT_LONG
    both_stages: tuple[str, ...]      # qd_detr.VARIANTS applied in pretraining and fine-tuning
    finetune_only: tuple[str, ...]    # qd_detr.VARIANTS applied in fine-tuning only
    report: dict                # Table 1 of report 003 (real CASTELLA test, one seed)


def _report(r1_5, r1_7, mean_ap, map_5, map_75) -> dict:
    return {"R1@0.5": r1_5, "R1@0.7": r1_7, "mAP": mean_ap, "mAP@0.5": map_5, "mAP@0.75": map_75}


_FT = ("dense_saliency", "short")
ROWS = {
    "B0": Row("QD-DETR, CASTELLA only", "", (), (), _report(23.16, 10.32, 9.11, 20.34, 6.96)),
    "B1": Row("QD-DETR, Clotho-Moment -> CASTELLA", CLOTHO_MOMENT, (), (),
              _report(25.61, 13.59, 12.06, 23.60, 10.72)),
    "S1": Row("QD-DETR, Clotho-Moment-Long -> CASTELLA", CLOTHO_MOMENT_LONG, (), (),
              _report(29.84, 17.97, 14.60, 26.44, 14.07)),
    "S2": Row("UVCOM backbone + similarity loss, CM-Long -> CASTELLA", CLOTHO_MOMENT_LONG,
              ("uvcom",), (), _report(32.29, 20.34, 16.06, 28.53, 15.72)),
    "S3": Row("S2 + quality head and re-ranking", CLOTHO_MOMENT_LONG, ("uvcom", "quality"), (),
              _report(36.38, 24.65, 18.42, 31.98, 17.66)),
    "S4": Row("S2 + dense all-window saliency (fine-tuning)", CLOTHO_MOMENT_LONG, ("uvcom",),
              ("dense_saliency",), _report(33.33, 21.31, 16.42, 28.88, 15.70)),
    "S5": Row("S4 + short proposals", CLOTHO_MOMENT_LONG, ("uvcom",), _FT,
              _report(33.33, 21.31, 16.87, 28.92, 16.21)),
    "S6": Row("S5 + boundary hard negatives", CLOTHO_MOMENT_LONG, ("uvcom", "boundary"), _FT,
              _report(32.67, 21.08, 16.96, 28.59, 16.71)),
    "S7": Row("S5 + quality head and re-ranking", CLOTHO_MOMENT_LONG, ("uvcom", "quality"), _FT,
              _report(35.93, 23.24, 17.03, 30.60, 15.74)),
    "S8": Row("S6 + quality head and re-ranking", CLOTHO_MOMENT_LONG,
              ("uvcom", "boundary", "quality"), _FT, _report(37.49, 25.09, 18.61, 31.97, 17.86)),
}


def parse_arg(arg: str | None) -> tuple[str, str, bool]:
    """`"S8,pretrain,runlocal"` -> ("S8", "pretrain", True); the stage defaults to finetune."""
    parts = [p for p in (arg or "").split(",") if p]
    rows = [p for p in parts if p in ROWS]
    stages = [p for p in parts if p in STAGES]
    unknown = [p for p in parts if p not in ROWS and p not in STAGES and p != "runlocal"]
    if unknown or len(rows) != 1 or len(stages) > 1:
        raise ValueError(f"config argument {arg!r}: expected one row of {sorted(ROWS)}, optionally "
                         f"one stage of {list(STAGES)} and 'runlocal', comma-separated")
    row, stage = rows[0], (stages[0] if stages else "finetune")
    if stage == "pretrain" and not ROWS[row].pretrain_data:
        raise ValueError(f"row {row} ({ROWS[row].description}) has no pretraining stage")
    return row, stage, "runlocal" in parts


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    row, stage, runlocal = parse_arg(arg)
    variants = list(ROWS[row].both_stages)
    if stage == "finetune":
        variants += ROWS[row].finetune_only
    if runlocal:
        variants.append("runlocal")
    return qd_detr.get_config(",".join(variants))
