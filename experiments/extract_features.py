"""Extracts MS-CLAP 2023 features in the release layout, all in JAX (no PyTorch at run time).

  python -m experiments.extract_features --clap=CONVERTED_DIR --audio=FILE_OR_DIR \
      --layout=castella|clotho_moment|lighthouse --output=DIR \
      [--queries=ANN.jsonl --tokenizer_dir=DIR] [--batch_size=16]

--clap is an `experiments.convert_clap` folder converted from a checkpoint that holds
`audio_encoder.base.htsat.*` (CLAP_weights_2023.pth does). Each wav (PCM; any rate,
resampled to 44.1 kHz) becomes DIR/clap/<file stem>.npz with `features` [T, 768]:
1 s windows, 1 s hop; castella truncates at 300 s (T = floor(seconds)), clotho_moment
centre-pads half a window on each side (T = floor(seconds) + 1), lighthouse keeps whole
seconds without a cap (T = floor(seconds), as lighthouse's inference API). With --queries every
record's query becomes DIR/clap_text/qid<qid>.npz (`last_hidden_state` [L, 768], GPT-2
of the converted folder, tokenizer from --tokenizer_dir). Files are written atomically.
"""

import json

from absl import flags

from amr_jax import cli
from amr_jax.clap import audio_frontend, convert, extract, text_route
from amr_jax.data import records
from amr_jax.errors import UsageError

_CLAP = flags.DEFINE_string("clap", None, "Converted MS-CLAP folder (with HTS-AT).", required=True)
_AUDIO = flags.DEFINE_string("audio", None, "A wav file or a folder of wav files.")
_LAYOUT = flags.DEFINE_enum("layout", None, audio_frontend.LAYOUTS,
                            "Window cut: castella, clotho_moment (the releases) or lighthouse.")
_OUTPUT = flags.DEFINE_string("output", None, "Output feature root (clap/, clap_text/).",
                              required=True)
_QUERIES = flags.DEFINE_string("queries", None, "Annotation jsonl whose queries to encode.")
_TOKENIZER = flags.DEFINE_string("tokenizer_dir", None, "GPT-2 tokenizer folder (--queries).")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Windows per device call.")


def main(argv):
    del argv
    if not _AUDIO.value and not _QUERIES.value:
        raise UsageError("nothing to do: pass --audio (with --layout) and/or --queries")
    clap = convert.load_converted(_CLAP.value)
    outputs, summary = {}, {}
    if _AUDIO.value:
        if not _LAYOUT.value:
            raise UsageError("--audio needs --layout=castella or --layout=clotho_moment")
        model = clap.htsat_module()
        if model is None:
            raise UsageError(f"{_CLAP.value} holds no HTS-AT weights (audio_encoder.base.htsat.*); "
                             "convert the full MS-CLAP 2023 checkpoint with experiments.convert_clap")
        encoder = extract.AudioEncoder(model, batch_size=_BATCH.value)
        frames = extract.extract_audio(encoder, extract.audio_files(_AUDIO.value), _OUTPUT.value,
                                       _LAYOUT.value)
        summary["audio_files"], summary["frames"] = len(frames), frames
        outputs["audio features"] = f"{_OUTPUT.value}/{extract.AUDIO_SUBDIR}"
    if _QUERIES.value:
        model = clap.to_model()
        tokenizer = text_route.require_tokenizer(
            model, clap_dir=_CLAP.value, tokenizer_dir=_TOKENIZER.value, needed_for="--queries")
        queries = [(r.qid, r.query) for r in records.read_annotations(_QUERIES.value)]
        summary["queries"] = extract.extract_text(model.gpt2, tokenizer, queries, _OUTPUT.value)
        outputs["text features"] = f"{_OUTPUT.value}/{extract.TEXT_SUBDIR}"
    print(json.dumps(summary))
    cli.log_outputs(outputs)


if __name__ == "__main__":
    cli.run(main)
