"""Predicts windows with a trained QD-DETR workdir (best checkpoint, else latest).

  python -m experiments.predict_detr --workdir=DIR --annotations=ANN.jsonl \
    --audio_feats=FEATS/clap --text_feats=FEATS/clap_text --output=PRED.jsonl

Writes DCASE jsonl predictions [[start_s, end_s, score], ...] (top 10, best
first). When the annotations have windows, prints the metrics report and, as
the last stdout line, one JSON object with R1@0.5, R1@0.7, mAP, mAP@0.5, mAP@0.75.

--reproduce_reference reproduces the reference implementation's own predictions
(e.g. of a checkpoint imported with experiments.convert_detr): its text-to-audio
mask mixes the rows of a batch, so it also batches as the reference evaluation does
(100 queries in file order, the last batch partial). The default masks per row, so
a query's prediction does not depend on the other queries of its batch.

Several hosts (WORKSPACE.md "Multi-host"): the same command on every host, plus
--coordinator_address=HOST0:PORT --num_processes=N --process_id=I (or --coordinator_address=auto
on a TPU pod). Process p predicts the queries of recordings p, p + N, ...; process 0 writes
the predictions (identical to a one-process run) and the metrics. Not with
--reproduce_reference.
"""

from absl import app, flags

from amr_jax import cli, distributed

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.", required=True)
_ANN = flags.DEFINE_string("annotations", None, "Annotation jsonl.", required=True)
_AUDIO = flags.DEFINE_string("audio_feats", None, "Folder of <vid>.npz audio features.",
                             required=True)
_TEXT = flags.DEFINE_string("text_feats", None, "Folder of qid<qid>.npz text features.",
                            required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Predictions jsonl to write.", required=True)
_REPRODUCE = flags.DEFINE_bool(
    "reproduce_reference", False,
    "Reference text-to-audio mask and batching (batches of 100 in file order).")
_LAUNCH = cli.define_launch_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Before any other JAX use: the processes must agree on the devices first.
    _LAUNCH.initialize()
    from amr_jax.train.predict import predict_to_file  # noqa: PLC0415 (after initialize)

    predict_to_file(_WORKDIR.value, _ANN.value, _AUDIO.value, _TEXT.value, _OUTPUT.value,
                    reproduce_reference=_REPRODUCE.value)
    if not distributed.is_primary():
        return
    cli.log_outputs({"predictions": _OUTPUT.value})


if __name__ == "__main__":
    cli.run(main)
