"""Training programs are reused only through the caller's `CompiledCache` (tiny model)."""

from __future__ import annotations

import detr_fixtures as fx
from amr_jax.compiled import CompiledCache
from amr_jax.train import trainer
from test_trainer import tiny_config


def test_training_programs_are_reused_only_through_the_callers_cache(tmp_path):
    config = tiny_config(tmp_path)
    kwargs = {"steps_per_epoch": 2, "model_factory": fx.tiny_model_factory,
              "mesh": trainer.data_mesh()}
    cache = CompiledCache()
    shared_a, _ = trainer.build_programs(config, cache=cache, **kwargs)
    shared_b, _ = trainer.build_programs(config, cache=cache, **kwargs)
    assert shared_a is shared_b
    alone, _ = trainer.build_programs(config, **kwargs)
    assert alone is not shared_a
    other = tiny_config(tmp_path)
    other.loss.giou_weight = 2.0
    different, _ = trainer.build_programs(other, cache=cache, **kwargs)
    assert different is not shared_a and len(cache) == 2
