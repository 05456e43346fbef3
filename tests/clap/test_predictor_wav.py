"""amr_jax.Predictor on a wav path: HTS-AT in JAX, then the same localization as on features."""

import wave

import numpy as np
import pytest

import clap_testlib as lib
import htsat_testlib as tl
from amr_jax.clap import convert, extract
from amr_jax.clap import audio_frontend as fe
from amr_jax.clap.htsat import HTSATConfig
from amr_jax.errors import UsageError
from experiments.configs import localize as localize_configs

# 768-d output (as the release) but one block per stage and one head: cheap on CPU.
WIDE = HTSATConfig(depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), num_classes=3)
SR = fe.SAMPLE_RATE


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pw")
    sd = lib.random_msclap_state_dict(seed=2, d_in=768, d_out=32,
                                      htsat=tl.checkpoint_weights(tl.torch_htsat(WIDE, seed=1)))
    lib.save_pth(sd, root / "ck.pth")
    params, report = convert.convert_checkpoint(root / "ck.pth", progress=False)
    convert.save_converted(params, report, root / "clap")
    n = int(6.6 * SR)
    t = np.arange(n) / SR
    x = 0.4 * np.sin(2 * np.pi * 700 * t) * ((t > 2) & (t < 4)) + 0.01 * np.sin(2 * np.pi * 90 * t)
    pcm = (x * 32767).astype("<i2")
    with wave.open(str(root / "mine.wav"), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(SR)
        f.writeframes(pcm.tobytes())
    return root, pcm.astype(np.float32) / 32768


def test_wav_path_equals_its_features(setup):
    from amr_jax import Predictor

    root, signal = setup
    config = localize_configs.get_config("jointproj_s1,runlocal")
    predictor = Predictor(config=config, clap_dir=root / "clap")
    query = np.random.default_rng(0).normal(size=(5, 768)).astype(np.float32)
    from_wav = predictor.predict(root / "mine.wav", query)
    model = convert.load_converted(root / "clap").htsat_module()
    feats = extract.AudioEncoder(model).encode_windows(fe.window_audio(signal, "lighthouse"))
    assert feats.shape == (6, 768)
    from_feats = predictor.predict(feats, query, duration=len(signal) / SR)
    assert from_wav.windows == from_feats.windows and len(from_wav.windows) >= 1
    np.testing.assert_allclose(from_wav.curve, from_feats.curve, atol=1e-5)
    assert max(w[1] for w in from_wav.windows) <= 6.6 + 1e-6


def test_wav_needs_htsat_weights(setup, tmp_path):
    from amr_jax import Predictor

    root, _ = setup
    lib.save_pth(lib.random_msclap_state_dict(seed=0, d_in=768, d_out=32), tmp_path / "ck.pth")
    params, report = convert.convert_checkpoint(tmp_path / "ck.pth", progress=False)
    convert.save_converted(params, report, tmp_path / "clap")
    predictor = Predictor(config=localize_configs.get_config("jointproj_s1,runlocal"),
                          clap_dir=tmp_path / "clap")
    with pytest.raises(UsageError, match="holds no HTS-AT weights"):
        predictor.predict(root / "mine.wav", np.zeros((3, 768), np.float32))
