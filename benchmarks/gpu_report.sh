#!/usr/bin/env bash
# One prepared accelerator run (about 8 minutes): the figures README's "On a GPU" section quotes.
# Measured on an H200: steps 1-3 took about 5 min (compiles: train step 73 s, HTS-AT 50 s), so
# the recipe (step 4) gets the rest; give the device call at least 540 s.
#
#   OUT=/tmp/gpu_report DATA=DIR_WITH_CASTELLA_JSONL bash benchmarks/gpu_report.sh
#
# DATA holds castella_{train,val,test}_release.jsonl (../shared/data/castella in this project).
# Every number is measured on SYNTHETIC features and random weights. Steps, each under its own
# time limit so that one slow step cannot take the others' time (logs in $OUT/*.txt):
#   1. bench_train_detr.py: QD-DETR train step, ms/step at batch 32, 300 frames, ours (jit) and
#      the torch transcription of the same step (benchmarks/torch_train_step.py), same process;
#   2. bench_htsat.py: HTS-AT (MS-CLAP 2023 config) seconds of audio per second, flax vs torch;
#   3. experiments.localize --all_systems on a CASTELLA-structured synthetic test split (the
#      whole 566 recordings, 1,347 queries), stage timings;
#   4. the QD-DETR recipe (default config, 200 epochs asked) on a synthetic CASTELLA-structured
#      train split, stopped by its time limit; epochs done, s/epoch, best validation R1@0.7,
#      then predict_detr + evaluate on the test split from the best checkpoint.
# The summary table is printed last and written to $OUT/summary.md.
set -u
OUT=${OUT:-/tmp/gpu_report}
DATA=${DATA:-../shared/data/castella}
WORK=${WORK:-/tmp/gpu_work}
PY=${PY:-python3}
# Sizes (defaults: the figures' sizes; the test run of this script shrinks them).
STEP_ARGS=${STEP_ARGS:---components=false --repeats=5}
HTSAT_ARGS=${HTSAT_ARGS:---windows=64 --repeats=2}
TRAIN_RECS=${TRAIN_RECS:-300} VAL_RECS=${VAL_RECS:-0} TEST_RECS=${TEST_RECS:-0}
DETR_CONFIG=${DETR_CONFIG:-experiments/configs/qd_detr.py} TRAIN_S=${TRAIN_S:-100}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  $PY -c "import jax, flax, torch; print('jax', jax.__version__, jax.devices(), '| flax', \
flax.__version__, '| torch', torch.__version__, torch.cuda.is_available())"
} 2>&1 | tee "$OUT/env.txt"

# Data generation runs on the CPU beside the GPU benchmarks (it needs no accelerator).
(
  for spec in "train 0 train $TRAIN_RECS" "val 1 val $VAL_RECS" "test 2 test $TEST_RECS"; do
    set -- $spec
    extra=(); [ "$4" != 0 ] && extra=(--num_recordings="$4")
    $PY -m experiments.make_synthetic --preset=castella --seed="$2" --output="$WORK/$1" \
      --annotations="$DATA/castella_$3_release.jsonl" "${extra[@]}" >"$WORK/make_$1.log" 2>&1 &
  done
  wait
  $PY -m experiments.convert_clap --checkpoint="$WORK/test/msclap_synthetic.npz" \
    --output="$WORK/clap_converted" >"$WORK/convert.log" 2>&1
  touch "$WORK/data_ready"
) &

echo "== 1. DETR train step" | tee "$OUT/train_step.txt"
timeout 180 $PY benchmarks/bench_train_detr.py $STEP_ARGS 2>&1 \
  | grep -v Warning | tee -a "$OUT/train_step.txt"
[ "${PIPESTATUS[0]}" = 124 ] && echo "timed out (180 s)" | tee -a "$OUT/train_step.txt"

echo "== 2. HTS-AT throughput" | tee "$OUT/htsat.txt"
timeout 90 $PY benchmarks/bench_htsat.py $HTSAT_ARGS 2>&1 \
  | grep -v Warning | tee -a "$OUT/htsat.txt"
[ "${PIPESTATUS[0]}" = 124 ] && echo "timed out (90 s)" | tee -a "$OUT/htsat.txt"

for _ in $(seq 60); do [ -e "$WORK/data_ready" ] && break; sleep 2; done
F=(--audio_feats="$WORK/test/clap" --text_feats="$WORK/test/clap_text" --clap="$WORK/clap_converted"
   --neutral_feats="$WORK/test/neutral_text")
echo "== 3. localize --all_systems (synthetic CASTELLA test)" | tee "$OUT/localize.txt"
SECONDS=0
timeout 110 $PY -m experiments.localize --all_systems --annotations="$WORK/test/annotations.jsonl" \
  "${F[@]}" --output="$WORK/loc" 2>&1 \
  | grep -v "^I1\|Warning" | tail -30 | tee -a "$OUT/localize.txt"
echo "wall (s): $SECONDS" | tee -a "$OUT/localize.txt"
cp "$WORK/loc/timings.json" "$OUT/localize_timings.json" 2>/dev/null

echo "== 4. QD-DETR recipe (synthetic CASTELLA train 300 recordings, val, test)" | tee "$OUT/train.txt"
D=(--config.data.train_annotations="$WORK/train/annotations.jsonl"
   --config.data.train_audio_feats="$WORK/train/clap" --config.data.train_text_feats="$WORK/train/clap_text"
   --config.data.val_annotations="$WORK/val/annotations.jsonl"
   --config.data.val_audio_feats="$WORK/val/clap" --config.data.val_text_feats="$WORK/val/clap_text")
SECONDS=0
timeout --signal=INT "$TRAIN_S" $PY -m experiments.train_detr --config="$DETR_CONFIG" \
  --workdir="$WORK/detr" "${D[@]}" >"$WORK/train.log" 2>&1
echo "train exit $? after $SECONDS s" | tee -a "$OUT/train.txt"
cp "$WORK/detr/metrics.jsonl" "$OUT/train_metrics.jsonl" 2>/dev/null
timeout 40 $PY -m experiments.predict_detr --workdir="$WORK/detr" \
  --annotations="$WORK/test/annotations.jsonl" --audio_feats="$WORK/test/clap" \
  --text_feats="$WORK/test/clap_text" --output="$WORK/detr_test.jsonl" >>"$WORK/train.log" 2>&1 \
  && timeout 30 $PY -m experiments.evaluate --gt="$WORK/test/annotations.jsonl" \
       --pred="$WORK/detr_test.jsonl" 2>&1 | tee -a "$OUT/train.txt"
tail -5 "$WORK/train.log" >> "$OUT/train.txt"

$PY benchmarks/gpu_summary.py --out="$OUT" | tee "$OUT/summary.md"
