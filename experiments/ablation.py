r"""The S-table of report 003: pretrain -> fine-tune each row over several seeds, one table.

  python -m experiments.ablation --rows=B0,S1,S2,S8 --seeds=3 --workdir=runs/ablation \
    --data_root=DATA

DATA holds one folder per dataset and split in the release layout
(`annotations.jsonl`, `clap/`, `clap_text/`): `castella/{train,val,test}`,
`clotho_moment/{train,val}` (row B1) and `clotho_moment_long/{train,val}` (rows S1-S8).
With `--synthetic`, missing folders are generated as SYNTHETIC splits of one world
(`--num_recordings` CASTELLA training recordings; the other splits scale with it), so
the whole table runs here. Rows come from `experiments/configs/amr_detr.py`
(`--runlocal` uses their `,runlocal` sizes; `--pretrain_epochs` / `--finetune_epochs`
override the epochs of every row).

Resumable: every stage resumes from its folder, finished stages and test predictions are
kept, and a pretraining run shared by several rows (the same pretraining config) is
trained once per seed. Writes `ablation.json`, `ablation.md` (mean +- std per figure
and row, then report 003's Table 1 figures for reference) and `ablation.png`.
"""

from pathlib import Path

from absl import flags

from amr_jax import cli
from amr_jax.data.synthetic_sets import generate_splits
from amr_jax.errors import UsageError
from amr_jax.train.ablation import AblationRow, run_ablation
from experiments.configs import amr_detr

_ROWS = flags.DEFINE_list("rows", list(amr_detr.ROWS), "Rows of amr_detr.py, in table order.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)
_DATA_ROOT = flags.DEFINE_string("data_root", "", "Dataset folders (default: <workdir>/data).")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Number of seeds (2023, 2024, ...).")
_SEED_LIST = flags.DEFINE_list("seed_list", [], "Explicit seeds (overrides --seeds).")
_RUNLOCAL = flags.DEFINE_bool("runlocal", False, "Use the rows' runlocal sizes.")
_PRETRAIN_EPOCHS = flags.DEFINE_integer("pretrain_epochs", 0, "Override (0: the config's).")
_FINETUNE_EPOCHS = flags.DEFINE_integer("finetune_epochs", 0, "Override (0: the config's).")
_SYNTHETIC = flags.DEFINE_bool("synthetic", False,
                               "Generate missing dataset folders as SYNTHETIC splits.")
_NUM_RECORDINGS = flags.DEFINE_integer("num_recordings", 40,
                                       "SYNTHETIC CASTELLA training recordings (--synthetic).")
_RESAMPLES = flags.DEFINE_integer("bootstrap_resamples", 1000, "Bootstrap resamples over queries.")


def build_rows(names, *, runlocal: bool, pretrain_epochs: int, finetune_epochs: int):
    unknown = [n for n in names if n not in amr_detr.ROWS]
    if unknown:
        raise UsageError(f"--rows: unknown row(s) {unknown}; expected some of {list(amr_detr.ROWS)}")
    suffix = ",runlocal" if runlocal else ""
    rows = []
    for name in names:
        spec = amr_detr.ROWS[name]
        finetune = amr_detr.get_config(name + suffix)
        pretrain = amr_detr.get_config(f"{name},pretrain{suffix}") if spec.pretrain_data else None
        for config, epochs in ((pretrain, pretrain_epochs), (finetune, finetune_epochs)):
            if config is not None and epochs:
                config.train.num_epochs = epochs
        rows.append(AblationRow(name=name, description=spec.description,
                                pretrain_data=spec.pretrain_data, pretrain=pretrain,
                                finetune=finetune, reference=spec.report))
    return rows


def synthetic_counts(num_recordings: int) -> dict[str, dict[str, int]]:
    """Split sizes of the SYNTHETIC world: CASTELLA-like fine-tuning, larger pretraining sets."""
    n = num_recordings
    return {amr_detr.CASTELLA: {"train": n, "val": max(2, n // 4), "test": max(2, n // 2)},
            amr_detr.CLOTHO_MOMENT: {"train": 2 * n, "val": max(2, n // 4)},
            amr_detr.CLOTHO_MOMENT_LONG: {"train": n, "val": max(2, n // 4)}}


def main(argv):
    del argv
    rows = build_rows(_ROWS.value, runlocal=_RUNLOCAL.value,
                      pretrain_epochs=_PRETRAIN_EPOCHS.value,
                      finetune_epochs=_FINETUNE_EPOCHS.value)
    data_root = Path(_DATA_ROOT.value or Path(_WORKDIR.value) / "data")
    title = f"Ablation (report 003), test split of {data_root / amr_detr.CASTELLA}"
    if _SYNTHETIC.value:
        needed = {amr_detr.CASTELLA} | {row.pretrain_data for row in rows if row.pretrain_data}
        for dataset, counts in synthetic_counts(_NUM_RECORDINGS.value).items():
            if dataset in needed:
                generate_splits(data_root / dataset, dataset, counts=counts)
        title = "SYNTHETIC " + title
    seeds = ([int(s) for s in _SEED_LIST.value] if _SEED_LIST.value
             else [2023 + k for k in range(_SEEDS.value)])
    run_ablation(rows, data_root=data_root, workdir=_WORKDIR.value, seeds=seeds,
                 num_resamples=_RESAMPLES.value, title=title)
    workdir = Path(_WORKDIR.value)
    cli.log_outputs({"ablation table": workdir / "ablation.md",
                     "ablation summary": workdir / "ablation.json",
                     "ablation chart": workdir / "ablation.png"})


if __name__ == "__main__":
    cli.run(main)
