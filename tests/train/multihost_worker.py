"""One process of a multi-process (or single-process oracle) tiny training run.

  python tests/train/multihost_worker.py --root=DATA --workdir=W --out=PARAMS.npz \
    [--coordinator_address=localhost:PORT --num_processes=2 --process_id=P] \
    [--data_shards=2] [--stop_after_steps=N]

Mirrors experiments/train_detr.py (initialize before any other JAX use, then
train_and_evaluate) with the tests' tiny model, so a 2-process run takes seconds of
compilation instead of minutes; writes the final parameters (every process: its copy).
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--coordinator_address", default="")
    parser.add_argument("--num_processes", type=int, default=0)
    parser.add_argument("--process_id", type=int, default=-1)
    parser.add_argument("--data_shards", type=int, default=0)
    parser.add_argument("--stop_after_steps", type=int, default=None)
    args = parser.parse_args()

    from amr_jax import distributed

    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)

    import jax
    import numpy as np

    import detr_fixtures as fx
    import test_trainer as tt
    from amr_jax.train import trainer

    config = tt.tiny_config(Path(args.root))
    config.train.data_shards = args.data_shards
    out = trainer.train_and_evaluate(config, args.workdir, model_factory=fx.tiny_model_factory,
                                     stop_after_steps=args.stop_after_steps)
    leaves = jax.tree_util.tree_flatten_with_path(out["params"])[0]
    np.savez(args.out, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
    print("step", out["step"], "devices", jax.device_count(), "processes", jax.process_count())


if __name__ == "__main__":
    main()
