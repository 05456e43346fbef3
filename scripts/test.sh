#!/usr/bin/env bash
# Installs the test extras and runs the whole test suite (pytest fails on "no tests collected").
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" "test,torch"
echo "[test] python -m pytest -q $*"
exec "$VPY" -m pytest -q "$@"
