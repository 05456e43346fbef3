r"""Training-free localization of a whole split (JointProj FWHM or background-contrast GMM).

  python -m experiments.localize --config=experiments/configs/localize.py:SYSTEM \
    --annotations=ANN.jsonl --audio_feats=FEATS/clap --text_feats=FEATS/clap_text \
    --clap=CONVERTED_DIR [--neutral_feats=DIR | --tokenizer_dir=DIR] [--query_route=text] \
    --output=PRED.jsonl [--timings=T.json] [--plot_qids=QID,QID --plot_dir=DIR]

A TFDS dataset (experiments.build_tfds) replaces the three data flags:
  --config.source=tfds:<name>:<split> --config.data_dir=TFDS_DATA_DIR

SYSTEM: backbone_cosine, jointproj_s1, jointproj_s2, jointproj_s3, gmm_simple, gmm_contrast,
jointproj_dp, fused (`--config.fused_params=PARAMS.json` from experiments.fit_fused),
jointproj_llm (exploratory; see experiments/configs/localize.py);
append ",clotho" for centre-cut Clotho-Moment features (frame offset -0.5 s, see the config).
With annotated windows it prints the metrics table and, as its last stdout line, the JSON
object of `experiments.evaluate`. With --all_systems every system runs on the split (loaded
once), `--output` is a folder receiving `<system>.jsonl`, and one table is printed; a --config
given with it supplies the shared settings (e.g. `localize.py:jointproj_s1,clotho` for the
Clotho frame offset).

Raw-text routes (the converted MS-CLAP folder must hold GPT-2, `caption_encoder.base.*`):
gmm_contrast without --neutral_feats encodes "background sound", "ambient noise", "background
audio" through GPT-2 with the tokenizer of --tokenizer_dir (vocab.json + merges.txt);
--query_route=text re-encodes every query from its raw text instead of the released
end-of-text row (joint-space systems).

Several hosts (WORKSPACE.md "Multi-host"): the same command on every host, plus
--coordinator_address=HOST0:PORT --num_processes=N --process_id=I (or --coordinator_address=auto
on a TPU pod). Process p localizes the queries of recordings p, p + N, ...; process 0 writes
the predictions (identical to a one-process run), timings and metrics. Not with
--config.stream_recordings, --plot_qids or jointproj_llm.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from amr_jax import cli, distributed
from amr_jax.localize import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/configs/localize.py:SYSTEM")
# Required with the default config.source="folders"; a "tfds:<name>:<split>" source replaces them.
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "Annotation jsonl.")
_AUDIO = flags.DEFINE_string("audio_feats", None, "Folder of <vid>.npz audio features.")
_TEXT = flags.DEFINE_string("text_feats", None, "Folder of qid<qid>.npz text features.")
_CLAP = flags.DEFINE_string("clap", None, "Converted MS-CLAP folder (experiments.convert_clap).")
_NEUTRAL = flags.DEFINE_string("neutral_feats", None, "Folder of the neutral-prompt text features "
                               "(gmm_contrast; without it the phrases go through GPT-2).")
_TOKENIZER = flags.DEFINE_string("tokenizer_dir", None,
                                 "Local GPT-2 tokenizer folder (vocab.json, merges.txt) for the "
                                 "raw-text routes.")
_QUERY_ROUTE = flags.DEFINE_enum("query_route", pipeline.DEFAULT_QUERY_ROUTE, pipeline.QUERY_ROUTES,
                                 "features: released end-of-text row; text: raw query via GPT-2.")
_OUTPUT = flags.DEFINE_string("output", None, "Predictions jsonl (a folder with --all_systems).",
                              required=True)
_TIMINGS = flags.DEFINE_string("timings", None, "Optional JSON file for the stage seconds.")
_PLOT_QIDS = flags.DEFINE_list("plot_qids", [], "qids whose curves are drawn as PNG figures.")
_PLOT_DIR = flags.DEFINE_string("plot_dir", None, "Folder of the figures.")
_LAUNCH = cli.define_launch_flags()
_ALL = flags.DEFINE_bool("all_systems", False, "Run the eight systems of configs/localize.py SYSTEMS (not jointproj_llm); "
                           "--output is a folder.")


def _check_source(config) -> None:
    if config.source == "folders" and not (_ANNOTATIONS.value and _AUDIO.value and _TEXT.value):
        raise app.UsageError("--annotations, --audio_feats and --text_feats are required "
                             "(or --config.source=tfds:<name>:<split> --config.data_dir=DIR)")


def main(argv):
    del argv
    # Before any other JAX use: the processes must agree on the devices first.
    _LAUNCH.initialize()
    if _ALL.value:
        from experiments.configs import localize as localize_configs

        if _CONFIG.value is not None and _CONFIG.value.stream_recordings:
            raise app.UsageError("--all_systems reads the split once for all six systems; run "
                                 "one system at a time with --config.stream_recordings")
        configs = localize_configs.all_system_configs(_CONFIG.value)
        _check_source(configs[0])
        rows = pipeline.run_all_systems(configs, annotations=_ANNOTATIONS.value,
                                        audio_feats=_AUDIO.value, text_feats=_TEXT.value,
                                        output_dir=_OUTPUT.value, clap_dir=_CLAP.value,
                                        neutral_feats=_NEUTRAL.value,
                                        tokenizer_dir=_TOKENIZER.value,
                                        query_route=_QUERY_ROUTE.value)
        if not distributed.is_primary():
            return
        cli.log_outputs({"predictions": [os.path.join(_OUTPUT.value, f"{s}.jsonl") for s in rows],
                         "timings": os.path.join(_OUTPUT.value, "timings.json")})
        return
    if _CONFIG.value is None:
        raise app.UsageError("--config=experiments/configs/localize.py:SYSTEM is required")
    _check_source(_CONFIG.value)
    if _CONFIG.value.stream_recordings:
        from amr_jax.localize import streaming  # bounded memory, chunk by chunk

        if distributed.process_count() > 1:
            raise app.UsageError("--config.stream_recordings bounds one host's memory; drop it "
                                 "with --num_processes (each process holds only its shard)")
        if _PLOT_QIDS.value or _QUERY_ROUTE.value != pipeline.DEFAULT_QUERY_ROUTE:
            raise app.UsageError("--plot_qids and --query_route=text need the whole split at "
                                 "once; drop --config.stream_recordings")
        streaming.stream_localization(_CONFIG.value, annotations=_ANNOTATIONS.value,
                                      audio_feats=_AUDIO.value, text_feats=_TEXT.value,
                                      output=_OUTPUT.value, clap_dir=_CLAP.value,
                                      neutral_feats=_NEUTRAL.value, timings=_TIMINGS.value)
        cli.log_outputs({"predictions": _OUTPUT.value, "timings": _TIMINGS.value})
        return
    out = pipeline.run_localization(_CONFIG.value, annotations=_ANNOTATIONS.value,
                              audio_feats=_AUDIO.value, text_feats=_TEXT.value,
                              output=_OUTPUT.value, clap_dir=_CLAP.value,
                              neutral_feats=_NEUTRAL.value, tokenizer_dir=_TOKENIZER.value,
                              query_route=_QUERY_ROUTE.value, timings=_TIMINGS.value,
                              plot_qids=_PLOT_QIDS.value, plot_dir=_PLOT_DIR.value)
    if not distributed.is_primary():
        return
    cli.log_outputs({"predictions": _OUTPUT.value, "timings": _TIMINGS.value,
                     "figures": out["plots"]})


if __name__ == "__main__":
    cli.run(main)
