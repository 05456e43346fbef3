"""Same seed, two processes: bit-identical predictions from every training-free system.

(QD-DETR training + prediction across processes: tests/reliability/test_kill_resume.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_training_free_system_is_bit_identical_across_processes(tmp_path):
    from amr_jax.clap import convert
    from amr_jax.data.synthetic import generate_split
    from experiments.configs import localize as localize_configs

    d = tmp_path / "split"
    generate_split("castella", d, seed=3, num_recordings=6, progress=False)
    convert.convert_and_save(d / "msclap_synthetic.npz", d / "clap_converted")
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        cmd = [sys.executable, "-m", "experiments.localize", "--all_systems",
               "--config=experiments/configs/localize.py:gmm_contrast",
               f"--annotations={d / 'annotations.jsonl'}", f"--audio_feats={d / 'clap'}",
               f"--text_feats={d / 'clap_text'}", f"--clap={d / 'clap_converted'}",
               f"--neutral_feats={d / 'neutral_text'}", f"--output={out}"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO)))
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append({p.name: p.read_bytes() for p in sorted(out.glob("*.jsonl"))})
    a, b = outputs
    assert len(a) == len(localize_configs.SYSTEMS), sorted(a)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], f"{name} differs between two processes"
        assert a[name].count(b"\n") == 20  # every query of the split predicted
