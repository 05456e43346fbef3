"""experiments/configs/amr_detr.py: the rows of DESIGN 9.8, stage by stage."""

from __future__ import annotations

import pytest

from amr_jax.train.ablation import config_key
from experiments.configs import amr_detr, qd_detr

# DESIGN 9.8, written out per row and stage: (backbone, quality, boundary, dense, short).
# Dense saliency is fine-tuning only; short proposals (inference) are pinned off in
# pretraining; every other objective applies in both stages.
EXPECTED = {
    "B0": {"finetune": ("qd_detr", 0, 0, 0, 0)},
    "B1": {"pretrain": ("qd_detr", 0, 0, 0, 0), "finetune": ("qd_detr", 0, 0, 0, 0)},
    "S1": {"pretrain": ("qd_detr", 0, 0, 0, 0), "finetune": ("qd_detr", 0, 0, 0, 0)},
    "S2": {"pretrain": ("uvcom", 0, 0, 0, 0), "finetune": ("uvcom", 0, 0, 0, 0)},
    "S3": {"pretrain": ("uvcom", 1, 0, 0, 0), "finetune": ("uvcom", 1, 0, 0, 0)},
    "S4": {"pretrain": ("uvcom", 0, 0, 0, 0), "finetune": ("uvcom", 0, 0, 1, 0)},
    "S5": {"pretrain": ("uvcom", 0, 0, 0, 0), "finetune": ("uvcom", 0, 0, 1, 1)},
    "S6": {"pretrain": ("uvcom", 0, 1, 0, 0), "finetune": ("uvcom", 0, 1, 1, 1)},
    "S7": {"pretrain": ("uvcom", 1, 0, 0, 0), "finetune": ("uvcom", 1, 0, 1, 1)},
    "S8": {"pretrain": ("uvcom", 1, 1, 0, 0), "finetune": ("uvcom", 1, 1, 1, 1)},
}
PRETRAIN_DATA = {"B0": "", "B1": "clotho_moment", **{f"S{i}": "clotho_moment_long"
                                                      for i in range(1, 9)}}


def _switches(config):
    uvcom = config.model.backbone == "uvcom"
    # The UVCOM rows carry its similarity loss at the report's weight, QD-DETR rows none.
    assert config.loss.sim_weight == (0.5 if uvcom else 0.0)
    quality = config.model.quality_head
    assert config.loss.quality_weight == (1.0 if quality else 0.0)
    assert config.postprocess.quality_rerank == quality
    return (config.model.backbone, int(quality), int(config.loss.boundary_weight == 0.05),
            int(config.data.saliency_labels == "all_windows"),
            int(config.postprocess.short_proposals))


@pytest.mark.parametrize("row", list(EXPECTED))
def test_rows_follow_design_9_8(row):
    assert amr_detr.ROWS[row].pretrain_data == PRETRAIN_DATA[row]
    for stage, expected in EXPECTED[row].items():
        config = amr_detr.get_config(f"{row},{stage}")
        assert _switches(config) == expected, (row, stage)
        # The recipe itself is QD-DETR's (DESIGN 9.6: sizes and optimizer as QD-DETR).
        plain = qd_detr.get_config()
        for section in ("optim", "train"):
            assert config[section].to_dict() == plain[section].to_dict()
        assert config.model.hidden_dim == 256 and config.model.dec_layers == 2
        small = amr_detr.get_config(f"{row},{stage},runlocal")
        assert _switches(small) == expected and small.train.num_epochs == 2
    if not PRETRAIN_DATA[row]:
        with pytest.raises(ValueError, match="no pretraining stage"):
            amr_detr.get_config(f"{row},pretrain")


def test_rows_that_pretrain_alike_share_one_pretraining_run():
    keys = {row: config_key(amr_detr.get_config(f"{row},pretrain"))
            for row in amr_detr.ROWS if amr_detr.ROWS[row].pretrain_data}
    groups = {}
    for row, key in keys.items():
        groups.setdefault((amr_detr.ROWS[row].pretrain_data, key), []).append(row)
    assert sorted(groups.values()) == sorted([["B1"], ["S1"], ["S2", "S4", "S5"], ["S3", "S7"],
                                              ["S6"], ["S8"]])


@pytest.mark.parametrize("arg", ["", "S9", "S1,S2", "S1,pretrain,finetune", "S1,fast"])
def test_bad_arguments_are_rejected(arg):
    with pytest.raises(ValueError, match="expected one row"):
        amr_detr.get_config(arg)
