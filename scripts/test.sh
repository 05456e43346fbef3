#!/usr/bin/env bash
# Installs the test extras and runs the whole test suite (pytest fails on "no tests collected").
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" "test,torch"
# Two workers (one per core; XLA compilation, most of the suite's time, is single-threaded);
# each test file stays on one worker so module fixtures are built once.
echo "[test] python -m pytest -q -n 2 --dist loadfile --durations=15 $*"
exec "$VPY" -m pytest -q -n 2 --dist loadfile --durations=15 "$@"
