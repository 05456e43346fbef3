r"""QD-DETR and its seed-003 variants: `--config=experiments/configs/qd_detr.py[:VARIANT][,runlocal]`.

Fields, variants and commands are documented in `amr_jax/configs/qd_detr.py`, the one
home of these defaults; this file is what the binaries' `--config` flag loads.
"""

from amr_jax.configs.qd_detr import *  # noqa: F401,F403
from amr_jax.configs.qd_detr import VARIANTS, get_config  # noqa: F401 (what config_flags calls)
