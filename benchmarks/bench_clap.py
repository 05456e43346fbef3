"""Audio frames projected into the MS-CLAP joint space per second: Flax (jit) vs torch.

  python benchmarks/bench_clap.py [--recordings=16] [--frames=300] [--repeats=5] [--threads=N]

Same random 768 -> 1024 head weights, same `[N, T, 768]` float32 input, same run.
Rows:
  - flax jit head+norm: the jitted kernel of `amr_jax.clap.embed` on one device-resident
    chunk (projection head, L2 norm, padding mask);
  - flax project_audio: the public function (chunking, host numpy in and out);
  - torch head+norm: a torch module with MS-CLAP's `Projection` structure + F.normalize
    under `torch.inference_mode()`.
Threads: torch uses --threads; XLA's CPU client sizes its pool to the cores it may use,
so --threads defaults to that count (with --threads=1 XLA is made single-threaded too).
Outputs of both implementations are compared before timing.
"""

import os
import sys

from absl import app, flags

_RECORDINGS = flags.DEFINE_integer("recordings", 16, "N: recordings per call.")
_FRAMES = flags.DEFINE_integer("frames", 300, "T: frames per recording (CASTELLA caps at 300).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (median reported).")
_THREADS = flags.DEFINE_integer("threads", None, "CPU threads (default: cores available).")


def _median_seconds(fn, repeats):
    import time

    fn()  # warm-up (compilation, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main(argv):
    del argv
    threads = _THREADS.value or len(os.sched_getaffinity(0))
    if threads == 1:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import torch.nn.functional as F
    from flax import nnx

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "clap"))
    import clap_testlib as lib  # the torch reference module used by the parity tests

    from amr_jax.clap import convert, embed

    torch.set_num_threads(threads)
    n, t, d, j = _RECORDINGS.value, _FRAMES.value, 768, 1024
    sd = lib.random_msclap_state_dict(seed=0, d_in=d, d_out=j)
    params, report = convert.convert_state_dict(sd)
    clap = convert.params_to_clap(params, report).to_model()
    ref = lib.torch_projection_class()(d, j).eval()
    ref.load_state_dict(
        {k: torch.from_numpy(sd["audio_encoder.projection." + k]) for k in lib.HEAD_SUFFIXES}
    )

    x = np.random.default_rng(0).normal(size=(n, t, d)).astype(np.float32)
    mask = np.ones((n, t), bool)
    frames = n * t

    graphdef, state = nnx.split(clap.audio_head)
    x_dev, m_dev = jnp.asarray(x), jnp.asarray(mask)

    def flax_kernel():
        embed._project_rows(graphdef, state, x_dev, m_dev).block_until_ready()

    def flax_public():
        embed.project_audio(clap, x, mask, chunk_size=n, progress=False)

    x_torch = torch.from_numpy(x)

    def torch_head():
        with torch.inference_mode():
            F.normalize(ref(x_torch), dim=-1)

    with torch.inference_mode():
        want = F.normalize(ref(x_torch), dim=-1).numpy()
    got = embed.project_audio(clap, x, mask, chunk_size=n, progress=False)
    diff = float(np.abs(got - want).max())

    rows = [
        ("flax jit head+norm", _median_seconds(flax_kernel, _REPEATS.value)),
        ("flax project_audio", _median_seconds(flax_public, _REPEATS.value)),
        ("torch head+norm", _median_seconds(torch_head, _REPEATS.value)),
    ]
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), threads={threads} "
          f"(torch {torch.get_num_threads()}), input [{n}, {t}, {d}] float32, "
          f"max |flax - torch| = {diff:.2e}")
    print(f"{'implementation':<22} {'frames':>8} {'seconds':>9} {'frames/s':>12}")
    for name, sec in rows:
        print(f"{name:<22} {frames:>8} {sec:>9.4f} {frames / sec:>12,.0f}")
    print(f"flax jit / torch: {rows[2][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
    app.run(main)
