#!/usr/bin/env bash
# Install the peer methods SpaGCN and GraphST into their own venv, benchmarks/.peers-venv.
#
# Why a separate environment: both pin or break things the project does not want in its own venv
# (SpaGCN 1.2.7 imports louvain, whose import needs pkg_resources, gone from setuptools >= 81;
# louvain 0.8.2 is built for igraph 0.11.x; GraphST 1.1.1 needs POT and scikit-misc). The benchmark
# calls the scripts in benchmarks/peers/ with this venv's python (see benchmarks/peers.py).
#
# Idempotent: does nothing when the venv already imports every peer package (pass --force to
# reinstall). Exits non-zero with a one-line reason on failure.
#
#   bash benchmarks/install_peers.sh            # create / check benchmarks/.peers-venv
#   PEERS_PYTHON=python3.11 bash benchmarks/install_peers.sh --force
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PEERS_VENV:-$HERE/.peers-venv}"
PYTHON="${PEERS_PYTHON:-python3}"

# Pins verified together on Python 3.11 (CPU). torch 2.14.1 is the project's own torch version; it runs
# on CPU here (the benchmark passes device=cpu). setuptools<81 keeps pkg_resources for louvain.
PINS=(
  "setuptools<81"
  "torch==2.14.1"
  "SpaGCN==1.2.7"
  "GraphST==1.1.1"
  "louvain==0.8.2"
  "igraph==0.11.8"
  "python-igraph==0.11.8"
  "leidenalg==0.10.2"
  "POT==0.9.7.post1"
  "scikit-misc==0.5.3"
  "scanpy==1.11.5"
  "anndata==0.12.19"
  "numpy==2.4.6"
  "scipy==1.17.1"
  "pandas==2.3.3"
  "scikit-learn==1.9.1"
  "numba==0.68.1"
  "pyarrow==26.0.1"
  "pillow==13.0.0"
)
CHECK='import SpaGCN, GraphST, louvain, leidenalg, igraph, ot, skmisc, scanpy, anndata, torch, sklearn, PIL, pkg_resources'

die() { echo "install_peers.sh: $*" >&2; exit 1; }

imports_ok() {
  [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -W ignore -c "$CHECK" >/dev/null 2>&1
}

show_installed() {
  "$VENV/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(spagcn|graphst|louvain|igraph|python-igraph|leidenalg|pot|scikit-misc|scanpy|anndata|numpy|scipy|pandas|scikit-learn|numba|torch|pyarrow|pillow|setuptools) ' \
    || true
}

if [[ "${1:-}" != "--force" ]] && imports_ok; then
  echo "peers venv ready: $VENV (SpaGCN and GraphST import); nothing to do"
  show_installed
  exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON on PATH (set PEERS_PYTHON to a Python 3.11 interpreter)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 10) else 1)' \
  || die "$PYTHON is $("$PYTHON" --version 2>&1); the peer pins need Python >= 3.10 (3.11 verified)"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "creating $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV" || die "python -m venv $VENV failed (Debian: apt-get install python3-venv)"
fi

echo "installing into $VENV: ${PINS[*]}"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check "${PINS[@]}" >"$LOG" 2>&1; then
  tail -n 25 "$LOG" >&2
  die "pip install failed (last lines above); a pin may be missing from the index this machine reaches"
fi
grep -E '^Successfully installed' "$LOG" || true

if ! imports_ok; then
  "$VENV/bin/python" -W ignore -c "$CHECK" 2>&1 | tail -n 5 >&2 || true
  die "installed, but the peer packages do not import (error above)"
fi
echo "peers venv ready: $VENV"
show_installed
