"""Peer methods (SpaGCN, GraphST) for the benchmark, run in their own venv on our slides and labels.

The peers pin packages the project does not want (see ``benchmarks/install_peers.sh``), so they live in
``benchmarks/.peers-venv`` and run as subprocesses (``benchmarks/peers/run_*.py``). This module is the
main-venv side and never imports them:

* :func:`export_peer_input` writes one slide, read by senca's own readers, as the .h5ad the peer scripts
  read: raw counts of every gene in ``X``, ``obs`` indexed by OUR spot ids (so peers are scored on the same
  spots and labels as senca), ``obsm['spatial']`` = pixel (x, y) in the slide's full-resolution frame,
  ``obs['array_row'/'array_col']``, ``uns['platform']``, ``uns['spot_diameter_px']`` and, when the slide
  has an image, ``uns['image'] = {path, scale}`` (image pixel = spatial * scale);
* :func:`run_peer` runs one peer on one input with one seed, measures its wall time and peak RSS, and
  caches the labels (``out_csv`` + a sidecar JSON fingerprinting input, arguments and peer script).

Failures raise :class:`PeerError` whose one-line message says why (venv missing, peer crashed: the last
line of its stderr), for the benchmark table to print.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
PEERS_VENV = REPO / "benchmarks" / ".peers-venv"
SCRIPTS = {"spagcn": REPO / "benchmarks" / "peers" / "run_spagcn.py",
           "graphst": REPO / "benchmarks" / "peers" / "run_graphst.py"}
SHARED_SCRIPT = REPO / "benchmarks" / "peers" / "peer_common.py"  # imported by both: part of what a run ran
EXPORT_VERSION = 1  # bump when the .h5ad layout changes: cached inputs are then rewritten
# Spot diameter / centre-to-centre pitch: Visium 55 um / 100 um; legacy ST 100 um / 200 um.
DIAMETER_PER_PITCH = {"visium": 0.55, "st": 0.5}
INSTALL_HINT = "run: bash benchmarks/install_peers.sh"


class PeerError(RuntimeError):
    """A peer could not run; the message (one line) says why, for the benchmark table."""


@dataclass(frozen=True)
class PeerInput:
    """What :func:`export_peer_input` wrote, and what a caller needs to run and score peers on it."""

    path: Path
    sample: str
    platform: str  # st | visium (decides SpaGCN's refinement shape)
    labels: pd.Series | None  # index spot_id, in the .h5ad's spot order
    image: Path | None  # the slide's H&E (None: image-less)
    image_scale: float  # image pixel = obsm['spatial'] * image_scale
    n_spots: int


# ----------------------------------------------------------------------------- input
def _sha256(path: Path) -> str:
    from senca.io.artifacts import file_checksum

    return file_checksum(path)


def _platform(raw: Any) -> str:
    """``st`` or ``visium`` (an .h5ad slide: by its grid, hexagonal = Visium)."""
    if raw.platform in ("st", "visium"):
        return raw.platform
    from senca.graph import detect_grid_k

    xy = raw.coords[["pixel_x", "pixel_y"]].to_numpy(float)
    return "visium" if detect_grid_k(xy) == 6 else "st"


def _fingerprint(raw: Any, spot_ids: list[str]) -> dict[str, Any]:
    """Identity of an export: the slide's input files' checksums, the spots kept and the layout version."""
    spots = hashlib.sha256("\n".join(spot_ids).encode()).hexdigest()
    return {"version": EXPORT_VERSION, "sample": raw.sample, "spots_sha256": spots,
            "inputs": {name: _sha256(Path(p)) for name, p in sorted(raw.inputs.items())}}


def _peer_input(path: Path, raw: Any, spot_ids: list[str]) -> PeerInput:
    image = raw.image.path
    labels = raw.labels.reindex(spot_ids) if raw.labels is not None else None
    return PeerInput(path, raw.sample, _platform(raw), labels, None if image is None else Path(image),
                     float(raw.image.scale) if image is not None else 1.0, len(spot_ids))


def export_peer_input(slide: Any, out_h5ad: str | Path, spot_ids: list[str] | None = None) -> PeerInput:
    """Write ``slide`` (a :class:`senca.io.readers.RawSlide` or a ``SlideSpec`` to read) as a peer input .h5ad.

    ``spot_ids`` restricts (and orders) the spots, e.g. to the ones senca's preprocess kept
    (``{s}.spots.parquet``), so every method is scored on the same spots. Reuses ``out_h5ad`` when its
    sidecar ``.json`` matches the slide's inputs (the .h5ad bytes then stay the same, which keeps
    :func:`run_peer`'s cache valid).
    """
    import anndata as ad

    from senca.io.artifacts import atomic_path, write_json
    from senca.io.readers import read_slide
    from senca.io.samplesheet import SlideSpec

    raw = read_slide(slide) if isinstance(slide, SlideSpec) else slide
    out = Path(out_h5ad)
    ids = list(raw.spot_ids) if spot_ids is None else [str(s) for s in spot_ids]
    missing = pd.Index(ids).difference(pd.Index(raw.spot_ids))
    if len(missing):
        raise PeerError(f"{raw.sample}: spot {missing[0]!r} (of {len(missing)}) is not in the slide's counts")
    sidecar = out.with_suffix(".json")
    fingerprint = _fingerprint(raw, ids)
    if out.exists() and sidecar.exists() and json.loads(sidecar.read_text()) == fingerprint:
        return _peer_input(out, raw, ids)

    rows = pd.Index(raw.spot_ids).get_indexer(ids)
    coords = raw.coords.loc[ids]
    scale = float(raw.image.scale) if raw.image.path is not None else 1.0
    spatial = coords[["pixel_x", "pixel_y"]].to_numpy(np.float64) / scale  # back to the full-res frame
    platform = _platform(raw)
    from senca.graph import median_spot_pitch

    uns: dict[str, Any] = {"sample": raw.sample, "platform": platform,
                           "spot_diameter_px": DIAMETER_PER_PITCH[platform] * median_spot_pitch(spatial)}
    if raw.image.path is not None:
        uns["image"] = {"path": str(Path(raw.image.path).resolve()), "scale": scale, "source": raw.image.source}
    obs = pd.DataFrame({"array_row": coords["array_row"].to_numpy(float),
                        "array_col": coords["array_col"].to_numpy(float)}, index=pd.Index(ids, name="spot_id"))
    if raw.labels is not None:
        obs["label"] = raw.labels.reindex(ids).astype("string").fillna("NA").astype(str).to_numpy()
    adata = ad.AnnData(X=raw.counts[rows].astype(np.float32), obs=obs,
                       var=pd.DataFrame(index=pd.Index(raw.genes, name="gene")),
                       obsm={"spatial": spatial}, uns=uns)
    with atomic_path(out) as tmp:
        adata.write_h5ad(tmp)
    write_json(fingerprint, sidecar)
    return _peer_input(out, raw, ids)


# ----------------------------------------------------------------------------- run
def venv_python(venv: Path = PEERS_VENV) -> Path:
    """The peers venv's interpreter; :class:`PeerError` (with the install command) when it is missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise PeerError(f"peers venv missing ({venv}); {INSTALL_HINT}")
    return python


def _command(method: str, python: Path, input_h5ad: Path, k: int, seed: int, out_csv: Path, platform: str | None,
             image: Path | None, image_scale: float | None, clustering: str, threads: int) -> list[str]:
    cmd = [str(python), str(SCRIPTS[method]), str(input_h5ad), "--k", str(k), "--seed", str(seed),
           "--out", str(out_csv), "--threads", str(threads)]
    if platform:
        cmd += ["--platform", platform]
    if image is not None:
        cmd += ["--image", str(image)]
        if image_scale is not None:
            cmd += ["--image-scale", repr(float(image_scale))]
    if method == "graphst":
        cmd += ["--clustering", clustering]
    return cmd


def _run_measured(cmd: list[str], env: dict[str, str], log_path: Path, timeout_s: float | None) -> tuple[int, float, float]:
    """Run ``cmd`` (output to ``log_path``); return (exit code, wall seconds, peak RSS MiB of that child).

    ``os.wait4`` gives this child's own rusage (``RUSAGE_CHILDREN`` would be the max over every child the
    benchmark ever waited for); a timer kills the child past ``timeout_s``.
    """
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        timer = threading.Timer(timeout_s, proc.kill) if timeout_s else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if timer:
                timer.cancel()
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, usage.ru_maxrss / 1024  # Linux: KiB


def _last_error(log_path: Path) -> str:
    """The line of a failed peer's output that says why (its last exception line, else its last line)."""
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0] or line.startswith("PEER_ERROR")]
    return (errors or lines or ["no output"])[-1].removeprefix("PEER_ERROR ")[:300]


def _peer_info(log_path: Path) -> dict[str, Any]:
    """The ``PEER_INFO {...}`` line the peer scripts print last (timings, parameters found)."""
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if line.startswith("PEER_INFO "):
            return json.loads(line.removeprefix("PEER_INFO "))
    return {}


def _read_labels(out_csv: Path, input_spots: int | None) -> pd.Series:
    table = pd.read_csv(out_csv, dtype={"spot_id": str, "cluster": str})
    if list(table.columns[:2]) != ["spot_id", "cluster"]:
        raise PeerError(f"{out_csv}: expected columns spot_id,cluster, found {','.join(table.columns)}")
    if input_spots is not None and len(table) != input_spots:
        raise PeerError(f"{out_csv}: {len(table)} spots, the input has {input_spots}")
    return pd.Series(table["cluster"].to_numpy(), index=pd.Index(table["spot_id"], name="spot_id"), name="cluster")


def _n_spots(input_h5ad: Path) -> int:
    import h5py

    with h5py.File(input_h5ad, "r") as handle:
        obs = handle["obs"]
        index = obs.attrs.get("_index", "_index")
        return int(obs[index].shape[0])


def run_peer(method: str, input_h5ad: str | Path, k: int, seed: int, out_csv: str | Path, *,
             platform: str | None = None, image: str | Path | None = None, image_scale: float | None = None,
             clustering: str = "leiden", threads: int = 1, timeout_s: float | None = None,
             venv: Path = PEERS_VENV, reuse: bool = True) -> dict[str, Any]:
    """Run peer ``method`` (``spagcn`` | ``graphst``) on ``input_h5ad`` for ``k`` clusters with ``seed``.

    ``image`` (SpaGCN only): use this H&E as histology (``image_scale``: image pixel = obsm['spatial'] *
    scale; default the input's ``uns['image']['scale']``, else 1). ``clustering`` (GraphST only): ``leiden``
    (its own resolution search to reach k) or ``gmm`` (tied-covariance Gaussian mixture, a stand-in for
    mclust EEE); both with GraphST's refinement. ``threads`` caps BLAS/OpenMP/numba/torch threads.

    Returns ``{"method", "variant", "labels" (Series index spot_id, str cluster), "wall_s", "peak_rss_mib",
    "cached", "info" (what the peer printed: resolution, timings), "out_csv", "command"}``. Reuses
    ``out_csv`` when its sidecar JSON has the same fingerprint (input sha256, arguments, the peer
    script's and ``peer_common.py``'s sha256).
    Raises :class:`PeerError` (one line: why) when the venv is missing or the peer fails.
    """
    method = method.lower()
    if method not in SCRIPTS:
        raise PeerError(f"unknown peer {method!r} (known: {', '.join(SCRIPTS)})")
    if clustering not in ("leiden", "gmm"):
        raise PeerError(f"unknown GraphST clustering {clustering!r} (leiden | gmm)")
    if image is not None and method != "spagcn":
        raise PeerError(f"{method} takes no image here (only SpaGCN's histology mode does)")
    input_h5ad, out_csv = Path(input_h5ad).resolve(), Path(out_csv).resolve()
    image = None if image is None else Path(image).resolve()
    if not input_h5ad.exists():
        raise PeerError(f"peer input {input_h5ad} not found (write it with export_peer_input)")
    if image is not None and not image.exists():
        raise PeerError(f"image {image} not found")
    variant = f"{method}:{clustering}" if method == "graphst" else f"{method}:{'image' if image else 'noimage'}"
    fingerprint = {"method": method, "variant": variant, "k": int(k), "seed": int(seed), "platform": platform,
                   "image_scale": image_scale, "threads": int(threads),
                   "input_sha256": _sha256(input_h5ad), "script_sha256": _sha256(SCRIPTS[method]),
                   "shared_script_sha256": _sha256(SHARED_SCRIPT),
                   "image_sha256": None if image is None else _sha256(image)}
    sidecar = out_csv.with_suffix(".json")
    n_spots = _n_spots(input_h5ad)
    if reuse and out_csv.exists() and sidecar.exists():
        recorded = json.loads(sidecar.read_text())
        if recorded.get("fingerprint") == fingerprint:
            return {**recorded["result"], "labels": _read_labels(out_csv, n_spots), "cached": True}

    python = venv_python(venv)
    cmd = _command(method, python, input_h5ad, k, seed, out_csv, platform, image, image_scale, clustering, threads)
    env = {**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    env.update({name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                "NUMBA_NUM_THREADS")})
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    log_path = out_csv.with_suffix(".log")
    if out_csv.exists():
        out_csv.unlink()  # a stale CSV must not pass for this run's output
    rc, wall, rss = _run_measured(cmd, env, log_path, timeout_s)
    if rc != 0:
        why = f"timed out after {timeout_s:.0f} s" if rc in (-9, 137) and timeout_s and wall >= timeout_s else \
            _last_error(log_path)
        raise PeerError(f"{variant} failed (exit {rc}): {why} [log: {log_path}]")
    if not out_csv.exists():
        raise PeerError(f"{variant} exited 0 but wrote no {out_csv.name} [log: {log_path}]")
    labels = _read_labels(out_csv, n_spots)
    result = {"method": method, "variant": variant, "wall_s": wall, "peak_rss_mib": rss, "cached": False,
              "info": _peer_info(log_path), "out_csv": str(out_csv), "command": cmd}
    from senca.io.artifacts import write_json

    write_json({"fingerprint": fingerprint, "result": result}, sidecar)
    return {**result, "labels": labels}


def check_venv(venv: Path = PEERS_VENV) -> str | None:
    """None when the peers venv imports SpaGCN and GraphST, else the reason (for a table's 'why' column)."""
    try:
        python = venv_python(venv)
    except PeerError as exc:
        return str(exc)
    probe = subprocess.run([str(python), "-W", "ignore", "-c", "import SpaGCN, GraphST, louvain, leidenalg"],
                           capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
        return f"peers venv {venv} does not import the peers ({last}); {INSTALL_HINT}"
    return None


if __name__ == "__main__":  # quick check: python benchmarks/peers.py
    print(check_venv() or f"peers venv ok: {PEERS_VENV}", file=sys.stderr)
