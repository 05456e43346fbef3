"""Optimizer of the reference QD-DETR training: global-norm clipping + AdamW.

torch's `clip_grad_norm_` followed by `AdamW` (decoupled weight decay on every
parameter) and a `StepLR` schedule (multiply by `lr_drop_factor` every
`lr_drop_epochs` epochs; the reference drop at 400 of 200 epochs keeps the
rate constant).
"""

from __future__ import annotations

import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           steps_per_epoch: int) -> optax.Schedule:
    """Step-decay schedule in optimizer steps from the `optim` sub-config."""
    return optax.exponential_decay(
        init_value=config.learning_rate, transition_steps=config.lr_drop_epochs * steps_per_epoch,
        decay_rate=config.lr_drop_factor, staircase=True)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int
                   ) -> optax.GradientTransformation:
    """clip_by_global_norm(grad_clip) -> AdamW(schedule, b1, b2, eps, weight_decay)."""
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(learning_rate_schedule(config, steps_per_epoch), b1=config.b1, b2=config.b2,
                    eps=config.eps, weight_decay=config.weight_decay),
    )
