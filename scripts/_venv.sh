# Sourced by the two set-up scripts: creates .venv if missing and installs the package.
# Usage: source scripts/_venv.sh "<extras>"   e.g. "" or "test,torch"
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating virtual environment .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
VPY="$REPO/.venv/bin/python"
extras="$1"
if [[ ",$extras," == *",torch,"* ]]; then
  # The CPU build must come first: any other torch requirement pulls a multi-GB CUDA build.
  echo "[setup] installing torch==2.13.0 (CPU build)"
  "$VPY" -m pip install -q --disable-pip-version-check torch==2.13.0
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
echo "[setup] installing amr-jax ($spec) and its dependencies"
"$VPY" -m pip install -q --disable-pip-version-check -e "$spec"
if [[ ",$extras," == *",test,"* && ",$extras," == *",torch,"* ]]; then
  # HTS-AT parity references (pyproject extra "htsat"): librosa with its dependencies, then
  # msclap and torchlibrosa without theirs (their pins would replace torch and numpy).
  echo "[setup] installing the HTS-AT references (librosa; msclap, torchlibrosa with --no-deps)"
  "$VPY" -m pip install -q --disable-pip-version-check "librosa>=0.10"
  "$VPY" -m pip install -q --disable-pip-version-check --no-deps msclap==1.3.3 torchlibrosa==0.1.0
fi
