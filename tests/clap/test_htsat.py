"""MS-CLAP 2023 audio front end + HTS-AT vs msclap / torchlibrosa with random weights.

The numeric HTS-AT parity runs a narrow config (`htsat_testlib.SMALL`: width 8, same four
stages, shifted / unshifted / single-window blocks); the 2023 config (31 M values) is
checked by parameter count and by converting its full state dict. Full-size numeric
parity is printed by benchmarks/htsat_throughput.py.
"""

import wave

import jax
import numpy as np
import pytest
import torch
from flax import nnx

import htsat_testlib as tl
from amr_jax.clap import audio_frontend as fe
from amr_jax.clap import convert, extract, htsat, htsat_convert
from amr_jax.errors import ConversionError, UsageError

SR = fe.SAMPLE_RATE
T1 = np.arange(SR) / SR


@pytest.fixture(scope="module")
def torch_frontend():
    tl.msclap_htsat()
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram

    spec = Spectrogram(n_fft=1024, hop_length=320, win_length=1024, window="hann",
                       center=True, pad_mode="reflect", freeze_parameters=True)
    mel = LogmelFilterBank(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000, ref=1.0,
                           amin=1e-10, top_db=None, freeze_parameters=True)

    def run(x):
        with torch.no_grad():
            return mel(spec(torch.from_numpy(np.asarray(x, np.float32))))[:, 0].numpy()

    return spec, mel, run


@pytest.fixture(scope="module")
def small():
    model = tl.torch_htsat(tl.SMALL, seed=0)
    weights = tl.checkpoint_weights(model)
    cfg, params, converted, ignored = htsat_convert.convert(weights)
    ours = htsat.build_htsat(cfg, params)
    # One compiled window -> feature program (batch 4) shared by the tests below.
    return model, weights, cfg, ours, converted, ignored, extract.AudioEncoder(ours, batch_size=4)


def _f64_log_mel(x):
    cfg = fe.FrontendConfig()
    real, imag = fe.dft_kernels(cfg.n_fft)
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (512, 512)), mode="reflect")
    frames = padded[:, fe._frame_indices(x.shape[1], cfg)]
    power = (frames @ real) ** 2 + (frames @ imag) ** 2
    mel = power @ fe.mel_filterbank(32000, 1024, 64, 50, 14000)
    return 10 * np.log10(np.maximum(mel, 1e-10))


def test_constants_equal_torchlibrosa(torch_frontend):
    spec, mel, _ = torch_frontend
    np.testing.assert_allclose(fe.mel_filterbank(32000, 1024, 64, 50, 14000),
                               mel.melW.numpy(), rtol=0, atol=1e-8)
    real, imag = fe.dft_kernels(1024)
    np.testing.assert_allclose(real.T, spec.stft.conv_real.weight[:, 0].numpy(), atol=1e-7)
    np.testing.assert_allclose(imag.T, spec.stft.conv_imag.weight[:, 0].numpy(), atol=1e-7)


def test_log_mel_noise_within_1e4(torch_frontend):
    x = np.random.default_rng(0).normal(0, 0.1, (3, SR)).astype(np.float32)
    x[2] *= 0.01  # a quiet window too
    ours = np.asarray(jax.jit(fe.log_mel)(x))
    ref = torch_frontend[2](x)
    assert ours.shape == ref.shape == (3, 138, 64)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def test_log_mel_tones(torch_frontend):
    """Tones: within 1e-4 dB on every bin within 40 dB of the window's peak. Far Hann
    sidelobes (< -95 dB) sit at float32 rounding level in both implementations: there we
    require ours to be no further from a float64 computation than torchlibrosa is."""
    x = np.stack([0.5 * np.sin(2 * np.pi * 440 * T1),
                  0.3 * np.sin(2 * np.pi * 3000 * T1) + 0.2 * np.sin(2 * np.pi * 97.3 * T1),
                  0.8 * np.sin(2 * np.pi * 9000 * T1 + 1.0)]).astype(np.float32)
    ours = np.asarray(jax.jit(fe.log_mel)(x))
    ref = torch_frontend[2](x)
    near = ref >= ref.max(axis=(1, 2), keepdims=True) - 40
    np.testing.assert_allclose(ours[near], ref[near], rtol=0, atol=1e-4)
    truth = _f64_log_mel(x)
    assert np.abs(ours - truth).max() <= np.abs(ref - truth).max() + 1e-4
    assert np.abs(ours - ref).max() < 0.1


def test_small_htsat_matches_msclap(small):
    model, _, cfg, ours, converted, ignored, encoder = small
    assert cfg == tl.SMALL
    rng = np.random.default_rng(1)
    x = np.stack([rng.normal(0, 0.1, SR), 0.5 * np.sin(2 * np.pi * 440 * T1),
                  np.zeros(SR)]).astype(np.float32)
    ref_emb, ref_clip = tl.torch_embedding(model, x)
    emb = encoder.encode_windows(x)  # padded to the batch of 4
    clip = jax.jit(lambda w: ours.clipwise(fe.log_mel(w)))(x)
    assert emb.shape == (3, cfg.num_features)
    np.testing.assert_allclose(emb, ref_emb, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(clip), ref_clip, rtol=0, atol=1e-5)
    # Windows are independent: one window in a batch of zeros gives the same row.
    np.testing.assert_allclose(encoder.encode_windows(x[1:2])[0], emb[1], atol=1e-5)
    assert "audio_encoder.base.htsat.head.weight" in ignored
    assert converted["audio_encoder.base.htsat.layers.0.blocks.0.attn.qkv.weight"].endswith("(T)")


def test_whole_path_on_20s_signal_matches_reference_extraction(small):
    """wav -> windows (both layouts) -> log-mel -> HTS-AT vs the extractors' torch path."""
    model, *_, encoder = small
    n = 20 * SR + 12_345
    t = np.arange(n) / SR
    rng = np.random.default_rng(2)
    sig = (0.3 * np.sin(2 * np.pi * (200 + 40 * t) * t) * (t % 4 < 2)
           + rng.normal(0, 0.02, n)).astype(np.float32)
    for layout in ("castella", "clotho_moment"):
        audio = torch.from_numpy(sig)
        if layout == "clotho_moment":
            audio = torch.nn.functional.pad(audio, (SR // 2, SR // 2))
        ref_windows = audio.unfold(0, SR, SR).numpy()
        windows = fe.window_audio(sig, layout)
        np.testing.assert_array_equal(windows, ref_windows)
        assert len(windows) == (20 if layout == "castella" else 21)
        ref, _ = tl.torch_embedding(model, ref_windows)
        np.testing.assert_allclose(encoder.encode_windows(windows), ref, rtol=0, atol=1e-4)


def test_full_2023_config_count_and_names():
    full = tl.torch_htsat(htsat.HTSATConfig(), seed=5)
    expected = sum(p.numel() for n, p in full.named_parameters()
                   if "extractor" not in n and not n.startswith("head."))
    expected += 2 * 64  # bn0 running mean / var
    assert htsat.count_params(htsat.HTSATConfig()) == expected  # 28.9 M
    weights = tl.checkpoint_weights(full)
    cfg, params, converted, ignored = htsat_convert.convert(weights)
    assert cfg == htsat.HTSATConfig()
    assert len(converted) + len(ignored) == len(weights)
    assert params["stages"]["3"]["blocks"]["1"]["attn"]["relative_position_bias_table"].shape == (225, 32)


def test_strict_conversion_names_every_problem(small):
    _, weights, *_ = small
    p = htsat_convert.PREFIX
    bad = dict(weights)
    del bad[p + "layers.1.blocks.0.mlp.fc2.bias"]
    bad[p + "layers.1.blocks.0.extra.weight"] = np.zeros(3, np.float32)
    bad["audio_encoder.base.stray"] = np.zeros(3, np.float32)
    bad[p + "layers.2.blocks.1.attn.qkv.weight"] = np.zeros((5, 5), np.float32)
    with pytest.raises(ConversionError) as e:
        htsat_convert.convert(bad, source="ck.pth")
    msg = str(e.value)
    for part in ("ck.pth", "layers.1.blocks.0.mlp.fc2.bias", "layers.1.blocks.0.extra.weight",
                 "audio_encoder.base.stray", "layers.2.blocks.1.attn.qkv.weight: (5, 5)"):
        assert part in msg
    other_mel = dict(weights)
    other_mel[p + "logmel_extractor.melW"] = weights[p + "logmel_extractor.melW"] * 1.01
    with pytest.raises(ConversionError, match="melW differs"):
        htsat_convert.convert(other_mel)


def test_checkpoint_route_through_convert_and_orbax(small, tmp_path):
    import clap_testlib

    model, weights, *_ = small
    sd = clap_testlib.random_msclap_state_dict(seed=1, d_in=tl.SMALL.num_features, d_out=16,
                                               htsat=weights)
    clap_testlib.save_pth(sd, tmp_path / "ck.pth")
    params, report = convert.convert_checkpoint(tmp_path / "ck.pth", progress=False)
    convert.save_converted(params, report, tmp_path / "out")
    loaded = convert.load_converted(tmp_path / "out")
    assert loaded.htsat_config == tl.SMALL
    x = np.random.default_rng(3).normal(0, 0.1, (2, SR)).astype(np.float32)
    emb = extract.AudioEncoder(loaded.htsat_module(), batch_size=4).encode_windows(x)
    np.testing.assert_allclose(emb, tl.torch_embedding(model, x)[0], atol=1e-4)
    bad = dict(sd)
    bad["audio_encoder.projection.linear1.weight"] = np.zeros((16, 5), np.float32)
    with pytest.raises(convert.ConversionError, match="HTS-AT width"):
        convert.convert_state_dict(bad)


def test_resample_and_io(tmp_path):
    assert fe.resample(np.ones(5), SR, SR).tolist() == [1.0] * 5
    n = 16000
    x = np.sin(2 * np.pi * 1000 * np.arange(n) / 16000)
    y = fe.resample(x, 16000, SR)
    assert y.shape == (int(np.ceil(n * SR / 16000)),)
    expected = np.sin(2 * np.pi * 1000 * np.arange(y.size) / SR)
    np.testing.assert_allclose(y[500:-500], expected[500:-500], atol=2e-3)
    pcm = (np.clip(x, -1, 1) * 20000).astype("<i2")
    stereo = np.stack([pcm, -pcm], axis=1)
    with wave.open(str(tmp_path / "a.wav"), "wb") as f:
        f.setnchannels(2), f.setsampwidth(2), f.setframerate(16000)
        f.writeframes(stereo.tobytes())
    data, rate = fe.load_wav(tmp_path / "a.wav")
    assert rate == 16000
    np.testing.assert_array_equal(data, pcm / 32768.0)
    (tmp_path / "b.wav").write_bytes(b"nope")
    with pytest.raises(UsageError, match="b.wav"):
        fe.load_wav(tmp_path / "b.wav")
    assert fe.window_audio(np.zeros(SR * 301 + 5), "castella").shape == (300, SR)
    assert fe.window_audio(np.zeros(SR // 2), "clotho_moment").shape == (1, SR)
    with pytest.raises(UsageError, match="layout"):
        fe.window_audio(np.zeros(SR), "other")
    with pytest.raises(UsageError, match="T <= 1024"):
        nnx.eval_shape(lambda: htsat.HTSAT(tl.SMALL, rngs=nnx.Rngs(0)))(np.zeros((1, 1100, 64)))


def test_24_bit_wav_equals_soundfile(tmp_path):
    import soundfile  # a librosa dependency (htsat references)

    x = np.random.default_rng(4).uniform(-0.9, 0.9, 999)
    soundfile.write(tmp_path / "c.wav", x, 22050, subtype="PCM_24")
    data, rate = fe.load_wav(tmp_path / "c.wav")
    ref, ref_rate = soundfile.read(tmp_path / "c.wav", dtype="float32")
    assert rate == ref_rate == 22050
    np.testing.assert_allclose(data, ref, rtol=0, atol=1e-7)


@pytest.mark.parametrize("orig_sr", [16000, 22050, 48000, 32000])
def test_resample_equals_torch_transcription(orig_sr):
    x = np.random.default_rng(orig_sr).normal(0, 0.2, orig_sr // 3 + 7).astype(np.float32)
    ours = fe.resample(x, orig_sr, SR)
    ref = tl.torch_resample(x, orig_sr, SR)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)
