"""Clotho-Moment-Long: recipes + annotations from clip lists, optionally the audio (DESIGN 9.7).

  python -m experiments.make_cm_long --foreground=FG.jsonl --background=BG.jsonl \
      --output=DIR --seed=0 [--num_clips=N] [--audio_root=AUDIO [--bg_audio_root=BG_AUDIO]]
  python -m experiments.make_cm_long --recipes=DIR/recipes.jsonl --output=DIR \
      --audio_root=AUDIO        # render existing recipes only
  python -m experiments.make_cm_long --clotho_captions=clotho_captions_development.csv \
      --audio_root=CLOTHO/development --background_from_audio --bg_audio_root=WALK_WAVS \
      --output=DIR [...]   # lists built from the audio (DIR/foreground.jsonl, background.jsonl)

Lists (jsonl): foreground `{"id", "duration", "captions": [...], "path"?}`, background
`{"id", "duration", "path"?}` (`path` relative to the audio root, default `<id>.wav`).
Writes DIR/recipes.jsonl, DIR/annotations.jsonl (release layout), DIR/statistics.json and,
with --audio_root, DIR/wav/<vid>.wav (rerunning keeps finished files). Prints the realized
statistics at the end.
"""

import json
from pathlib import Path

import tqdm
from absl import flags

from amr_jax import cli
from amr_jax.data import clotho_moment_long as cml
from amr_jax.data import cm_lists
from amr_jax.data.cm_mixer import MixConfig, render_recipes
from amr_jax.errors import UsageError
from amr_jax.io_utils import atomic_write_text

_FOREGROUND = flags.DEFINE_string("foreground", None, "Foreground clip list (jsonl).")
_BACKGROUND = flags.DEFINE_string("background", None, "Background recording list (jsonl).")
_RECIPES = flags.DEFINE_string("recipes", None, "Existing recipes.jsonl to render (no lists).")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder.", required=True)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the recipes.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", None, "Number of clips (default: every segment).")
_FIRST_QID = flags.DEFINE_integer("first_qid", 0, "First qid (qids are zero-padded to 5).")
_CLIP_S = flags.DEFINE_float("clip_s", 300.0, "Clip length (s).")
_MEAN_GAP_S = flags.DEFINE_float("mean_gap_s", 45.0, "Mean of the exponential gaps (s).")
_RECUR_PROB = flags.DEFINE_float("recur_prob", 0.35, "Probability that an event recurs.")
_BG_HOP_S = flags.DEFINE_float("bg_hop_s", 300.0, "Hop between background segments (s).")
_AUDIO_ROOT = flags.DEFINE_string("audio_root", None, "Render WAVs from this audio folder.")
_BG_AUDIO_ROOT = flags.DEFINE_string("bg_audio_root", None,
                                     "Background audio folder (default: --audio_root).")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", 32000, "Output sample rate (Hz).")
_WAV_ENCODING = flags.DEFINE_enum("wav_encoding", "pcm16", ["pcm16", "float32"], "WAV samples.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 2, "Rendering / measuring threads.")
_CLOTHO_CAPTIONS = flags.DEFINE_string(
    "clotho_captions", None, "Build the foreground list from this Clotho captions CSV and the "
    "WAVs in --audio_root (trimmed as the generator), instead of --foreground.")
_TRIM_DB = flags.DEFINE_float("trim_db", 5.0, "Trimming threshold below the clip power (dB).")
_BACKGROUND_FROM_AUDIO = flags.DEFINE_bool(
    "background_from_audio", False, "Build the background list from the WAVs in "
    "--bg_audio_root (or --audio_root), instead of --background.")


def _write_jsonl(path: Path, lines: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(line) + "\n" for line in lines))


def main(argv):
    del argv
    output = Path(_OUTPUT.value)
    outputs = {}
    if _RECIPES.value:
        recipes = cml.read_recipes(_RECIPES.value)
        summary = None
    else:
        fg_list, bg_list = _FOREGROUND.value, _BACKGROUND.value
        if not ((fg_list or _CLOTHO_CAPTIONS.value) and (bg_list or _BACKGROUND_FROM_AUDIO.value)):
            raise UsageError("pass --foreground and --background (or --recipes to render; or "
                             "--clotho_captions / --background_from_audio to build the lists)")
        if _CLOTHO_CAPTIONS.value:
            if not _AUDIO_ROOT.value:
                raise UsageError("--clotho_captions needs --audio_root (the Clotho WAV folder)")
            fg_list = outputs["foreground list"] = _write_jsonl(
                output / "foreground.jsonl", cm_lists.foreground_list_from_clotho(
                    _CLOTHO_CAPTIONS.value, _AUDIO_ROOT.value, clip_db=_TRIM_DB.value,
                    num_workers=_NUM_WORKERS.value))
        if _BACKGROUND_FROM_AUDIO.value:
            bg_root = _BG_AUDIO_ROOT.value or _AUDIO_ROOT.value
            if not bg_root:
                raise UsageError("--background_from_audio needs --bg_audio_root or --audio_root")
            bg_list = outputs["background list"] = _write_jsonl(
                output / "background.jsonl", cm_lists.background_list_from_folder(bg_root))
        try:
            config = cml.RecipeConfig(clip_s=_CLIP_S.value, mean_gap_s=_MEAN_GAP_S.value,
                                      recur_prob=_RECUR_PROB.value, bg_hop_s=_BG_HOP_S.value)
        except ValueError as e:
            raise UsageError(str(e)) from None
        foregrounds = cml.read_foreground_list(fg_list, max_duration_s=config.clip_s)
        backgrounds = cml.read_background_list(bg_list)
        with tqdm.tqdm(desc="recipes", unit="clip", mininterval=1.0) as bar:
            def progress(done, total):
                bar.total = total
                bar.update(done - bar.n)
            recipes, summary = cml.generate_recipes(
                foregrounds, backgrounds, config=config, seed=_SEED.value,
                num_clips=_NUM_CLIPS.value, first_qid=_FIRST_QID.value, progress=progress)
        outputs["recipes"], outputs["annotations"] = cml.write_release(output, recipes)
    stats = cml.recipe_statistics(recipes)
    if summary is not None:
        outputs["statistics"] = atomic_write_text(
            output / "statistics.json",
            json.dumps({"statistics": stats, "generation": summary}, indent=2) + "\n")
    if _AUDIO_ROOT.value:
        mix_config = MixConfig(sample_rate=_SAMPLE_RATE.value, encoding=_WAV_ENCODING.value)
        paths, written = render_recipes(
            recipes, output / "wav", fg_root=_AUDIO_ROOT.value,
            bg_root=_BG_AUDIO_ROOT.value or _AUDIO_ROOT.value, config=mix_config,
            num_workers=_NUM_WORKERS.value)
        print(f"audio: {written} written, {len(paths) - written} kept")
        outputs["audio"] = paths
    print(cml.format_statistics(stats))
    cli.log_outputs(outputs)


if __name__ == "__main__":
    cli.run(main)
