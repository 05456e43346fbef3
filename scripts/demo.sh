#!/usr/bin/env bash
# Main job on the embedded default: a SYNTHETIC CASTELLA-structured split, every system, one table.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" ""
echo "[demo] python -m experiments.demo --workdir=runs/demo $*"
exec "$VPY" -m experiments.demo --workdir=runs/demo "$@"
