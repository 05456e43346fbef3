r"""Training-free localization systems: `--config=experiments/configs/localize.py:SYSTEM[,...]`.

The systems, options and commands are documented in `amr_jax/configs/localize.py`, the
one home of these configs; this file is what the binaries' `--config` flag loads.
"""

from amr_jax.configs.localize import *  # noqa: F401,F403
from amr_jax.configs.localize import get_config  # noqa: F401 (what config_flags calls)
