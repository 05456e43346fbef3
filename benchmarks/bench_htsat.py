"""MS-CLAP 2023 audio encoder throughput: seconds of audio encoded per second, Flax vs torch.

  python benchmarks/bench_htsat.py [--windows=8] [--repeats=3] [--threads=N] [--small]

Synthetic: random weights (msclap's `HTSAT_Swin_Transformer` at the 2023 config, converted
by `amr_jax.clap.htsat_convert`), random noise windows of 1 s at 44.1 kHz. Both rows run the
whole window -> 768-d feature path (STFT, log-mel, bn0, resize, HTS-AT):
  - flax jit: `amr_jax.clap.extract.AudioEncoder.encode_windows` (one compiled program,
    batch = --windows);
  - torch: msclap's module, `latent_output`, under `torch.inference_mode()`.
The embeddings of both are compared first (max |diff| printed). Needs the `htsat` extra.
"""

import os
import sys
import time

from absl import app, flags

_WINDOWS = flags.DEFINE_integer("windows", 8, "1 s windows per call (batch).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats (median reported).")
_THREADS = flags.DEFINE_integer("threads", None, "CPU threads (default: cores available).")
_SMALL = flags.DEFINE_bool("small", False, "Use the narrow test config instead of 2023's.")


def _median(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv):
    del argv
    threads = _THREADS.value or len(os.sched_getaffinity(0))
    if threads == 1:
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + \
            " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "clap"))
    import htsat_testlib as tl
    import jax
    import numpy as np
    import torch

    from amr_jax.clap import extract, htsat, htsat_convert

    torch.set_num_threads(threads)
    cfg = tl.SMALL if _SMALL.value else htsat.HTSATConfig()
    ref = tl.torch_htsat(cfg, seed=0)
    cfg2, params, _, _ = htsat_convert.convert(tl.checkpoint_weights(ref))
    encoder = extract.AudioEncoder(htsat.build_htsat(cfg2, params), batch_size=_WINDOWS.value)
    x = np.random.default_rng(0).normal(0, 0.1, (_WINDOWS.value, 44_100)).astype(np.float32)
    # The torch reference runs where it would for a user: on the GPU when there is one.
    torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = ref.to(torch_device)
    xt = torch.from_numpy(x).to(torch_device)

    def run_torch():
        with torch.inference_mode():
            out = ref(xt)["latent_output"].cpu().numpy()  # .cpu() waits for the GPU
        return out

    start = time.perf_counter()
    ours = encoder.encode_windows(x)
    compile_s = time.perf_counter() - start
    diff = float(np.abs(ours - run_torch()).max())
    t_flax = _median(lambda: encoder.encode_windows(x), _REPEATS.value)
    t_torch = _median(run_torch, _REPEATS.value)
    n = _WINDOWS.value
    print(f"HTS-AT {'small test config' if _SMALL.value else '2023 config'} (synthetic random "
          f"weights), {n} x 1 s windows per call, {threads} threads, {jax.devices()[0].platform}")
    print(f"max |flax - torch| embedding: {diff:.2e}; flax first call (compile) {compile_s:.1f} s")
    print(f"{'implementation':<16} {'s/call':>8} {'audio s/s':>10}")
    for name, t in ((f"flax jit ({jax.devices()[0].platform})", t_flax),
                    (f"torch ({torch_device})", t_torch)):
        print(f"{name:<16} {t:8.3f} {n / t:10.2f}")


if __name__ == "__main__":
    app.run(main)
