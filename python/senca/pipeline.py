"""``senca run``: every slide of a samplesheet through every stage on one machine.

The runner calls the same stage commands, with the same arguments and the same output layout, as the
Nextflow modules do, so a laptop run and a cluster run produce the same files:

    OUTDIR/<sample>/<sample>.*        every per-slide artifact and figure
    OUTDIR/summary/                   summary.csv, summary.parquet, report.html, <sample>.metrics.parquet

Slides run in parallel (``jobs`` worker processes); a slide that fails is reported and the others go
on. Resume: after each stage succeeds the runner writes a stamp (``OUTDIR/<sample>/.senca/<stage>.json``)
holding the stage's arguments, the sha256 of its input and output files and a digest of senca's own code; a
rerun skips a stage whose arguments, inputs and code are unchanged and whose outputs are exactly the files it wrote (same sha256, readable
artifacts of this senca's format), and recomputes it otherwise. A changed input (or an output replaced or
damaged since) therefore reruns that stage, and every later stage whose inputs then change; a file that
is only touched (same bytes) reruns nothing. The stamp is removed before a stage starts and written only
after all its outputs are in place, so a killed run never leaves a stamp vouching for missing files.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from senca.errors import SencaError, os_error_reason, output_os_error
from senca.io.artifacts import atomic_path, check_output_dir, file_checksum, read_meta
from senca.io.samplesheet import SlideSpec, read_samplesheet, with_image_choice

log = logging.getLogger("senca")


@dataclass(frozen=True)
class RunOptions:
    """What ``senca run`` passes through to the stages."""

    encoder: str = "resnet50"
    weights: str | None = None
    input_px: int | None = None  # embed-patches --input-px; None: its automatic size (senca.embed.auto_input_px)
    epochs: int | None = None
    device: str = "auto"
    seed: int = 0
    k: int | None = None
    n_hvg: int | None = None
    resume: bool = True
    quiet: bool = False
    torch_threads: int | None = None
    train_args: tuple[str, ...] = ()  # extra train-senca options (ablations), like a Nextflow module's ext.args
    image_choice: str = "auto"  # --image-choice: for slides whose samplesheet image cell does not decide
    normalised: bool = False  # --normalised: every slide's values are already log-normalised
    tag_logs: bool = False  # prefix log lines with the slide (set for --jobs > 1 workers)
    paper: bool = False  # --paper: the paper's literal settings on every platform (PAPER_ARGS)
    view_weight: float | None = None  # --view-weight for the cluster stage (None: its platform default)
    gmm_inits: int | None = None  # --gmm-inits for the cluster stage (None: its default, senca.clustering.default_gmm_inits)
    knn_prior: float | None = None  # --knn-prior for the cluster stage (None: its platform default)


# `senca run --paper`: the paper's own choices where senca's platform defaults depart (docs/method.md)
PAPER_ARGS = {"preprocess": ("--hvg-flavor", "seurat", "--hvg-values", "log1p"), "train-senca": ("--gene-scale", "none", "--reconstruct", "branches",
                                                                  "--substitute-hops", "2", "--image-pcs", "0", "--input-pcs", "0",
                                                                  "--image-only"),
              "embed-patches": ("--input-px", "224"),  # the encoders' own input, even for small lowres patches
              "cluster": ("--method", "ward", "--view-weight", "0", "--knn-prior", "0")}


# train-senca options that `senca run` sets itself: --train-args may not override them
RUN_OWNED_TRAIN_OPTIONS = ("--spots", "--expr", "--graph", "--patches", "--epochs", "--seed", "--device", "--outdir",
                           "-o", "--quiet", "-q", "--help", "-h")


def check_train_args(train_args: tuple[str, ...]) -> None:
    """Refuse ``--train-args`` that train-senca does not know, or that ``senca run`` already sets."""
    from senca.cli import main

    command = main.get_command(None, "train-senca")  # type: ignore[arg-type]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for token in train_args:
        name = token.split("=", 1)[0]
        if not name.startswith("-"):
            continue
        if name in RUN_OWNED_TRAIN_OPTIONS:
            raise SencaError(f"--train-args: {name} is set by senca run itself; use senca run's own option")
        if name not in known:
            raise SencaError(f"--train-args: train-senca has no option {name} (see senca train-senca --help)")


@dataclass
class StageCall:
    """One stage invocation: the command, its arguments, its input files and its output files."""

    stage: str
    args: list[str]
    inputs: list[Path]
    outputs: list[Path]


@dataclass
class SlideResult:
    sample: str
    ok: bool
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None
    image: bool = False


# ----------------------------------------------------------------------------- stage commands
def _flag(name: str, value: Any) -> list[str]:
    return [] if value is None or value == "" else [name, str(value)]


def _with_paper(stage: str, args: list[str], opts: RunOptions) -> list[str]:
    """``args`` followed, under ``--paper``, by the paper's options for ``stage`` that ``args`` does not set.

    An option the run sets explicitly (``--input-px 96``, ``--view-weight 2``) wins over the preset: the stage
    gets it once, never followed by the paper's value, which click would take as the last word.
    """
    if not opts.paper:
        return args
    tokens, paper = list(PAPER_ARGS[stage]), []
    while tokens:
        name = tokens.pop(0)
        value = [tokens.pop(0)] if tokens and not tokens[0].startswith("--") else []  # a switch has no value
        if name not in args:
            paper += [name, *value]
    return [*args, *paper]


def preprocess_call(spec: SlideSpec, slide_dir: Path, opts: RunOptions) -> StageCall:
    s = spec.sample
    spec = with_image_choice(spec, opts.image_choice)
    choice = [] if spec.image_choice == "auto" else ["--image-choice", spec.image_choice]
    args = ["--sample", s, "--data", str(spec.data), *_flag("--image", spec.image), *choice,
            *_flag("--positions", spec.positions),
            *_flag("--labels", spec.labels), *_flag("--n-clusters", spec.n_clusters), *_flag("--k", opts.k),
            *_flag("--n-hvg", opts.n_hvg), *(["--normalised"] if opts.normalised else [])]
    args = _with_paper("preprocess", args, opts)
    inputs = [p for p in (spec.data, spec.image, spec.positions, spec.labels) if p is not None]
    outputs = [slide_dir / f"{s}.{kind}.parquet" for kind in ("spots", "expr", "graph")] + [slide_dir / f"{s}.h5ad"]
    return StageCall("preprocess", args, inputs, outputs)


def embed_call(s: str, slide_dir: Path, opts: RunOptions) -> StageCall:
    spots = slide_dir / f"{s}.spots.parquet"
    args = _with_paper("embed-patches", ["--spots", str(spots), "--encoder", opts.encoder, *_flag("--weights", opts.weights),
                                         *_flag("--input-px", opts.input_px), "--device", opts.device], opts)
    return StageCall("embed-patches", args, [spots], [slide_dir / f"{s}.patches.parquet", slide_dir / f"{s}.patches_qc.png"])


def train_call(s: str, slide_dir: Path, opts: RunOptions, with_image: bool) -> StageCall:
    spots, expr, graph = (slide_dir / f"{s}.{kind}.parquet" for kind in ("spots", "expr", "graph"))
    inputs = [spots, expr, graph]
    args = ["--spots", str(spots), "--expr", str(expr), "--graph", str(graph)]
    if with_image:
        patches = slide_dir / f"{s}.patches.parquet"
        args += ["--patches", str(patches)]
        inputs.append(patches)
    args += [*_flag("--epochs", opts.epochs), "--seed", str(opts.seed), "--device", opts.device]
    args = [*_with_paper("train-senca", args, opts), *opts.train_args]
    outputs = [slide_dir / f"{s}.model.pt", slide_dir / f"{s}.embeddings.parquet", slide_dir / f"{s}.train_log.parquet"]
    return StageCall("train-senca", args, inputs, outputs)


def cluster_call(s: str, slide_dir: Path, opts: RunOptions) -> StageCall:
    embeddings, spots, h5ad = slide_dir / f"{s}.embeddings.parquet", slide_dir / f"{s}.spots.parquet", slide_dir / f"{s}.h5ad"
    args = _with_paper("cluster", ["--embeddings", str(embeddings), "--spots", str(spots), "--h5ad", str(h5ad),
                                   "--seed", str(opts.seed), *_flag("--view-weight", opts.view_weight),
                                   *_flag("--gmm-inits", opts.gmm_inits), *_flag("--knn-prior", opts.knn_prior)], opts)
    outputs = [slide_dir / f"{s}.{name}" for name in
               ("clusters.parquet", "dendrogram.png", "clusters.png", "umap.png", "senca.h5ad")]
    return StageCall("cluster", args, [embeddings, spots, h5ad], outputs)


def markers_call(s: str, slide_dir: Path) -> StageCall:
    clusters, h5ad = slide_dir / f"{s}.clusters.parquet", slide_dir / f"{s}.h5ad"
    return StageCall("markers", ["--clusters", str(clusters), "--h5ad", str(h5ad)], [clusters, h5ad],
                     [slide_dir / f"{s}.markers.parquet", slide_dir / f"{s}.markers.png"])


# ----------------------------------------------------------------------------- running one stage
def invoke(stage: str, args: list[str]) -> None:
    """Run ``senca <stage> ARGS`` in this process; a stage's user error is re-raised naming the stage.

    The command's function is called without its ``@user_errors`` wrapper (``__wrapped__``), so the
    reason reaches ``senca run`` as a :class:`SencaError` instead of being printed as a second
    ``Error:`` line and an exit status: ``senca run`` reports every failure once, in its own summary.
    """
    from senca.cli import main

    command = main.get_command(None, stage)  # type: ignore[arg-type]  # the lazy group ignores the context
    if command is None or command.callback is None:
        raise SencaError(f"unknown stage {stage!r}")
    callback = getattr(command.callback, "__wrapped__", command.callback)
    with command.make_context(f"senca {stage}", list(args)) as ctx:
        try:
            ctx.invoke(callback, **ctx.params)
        except SencaError as exc:
            raise SencaError(f"{stage}: {exc}") from None


def _stamp_path(call: StageCall, slide_dir: Path) -> Path:
    return slide_dir / ".senca" / f"{call.stage}.json"


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of the senca package's own source files (paths and bytes), computed once per process.

    Why: a stage's outputs depend on the code as much as on its arguments. A default changed between two
    senca versions (round 19: lowres patches at 64 px instead of 224) leaves the arguments the same, so a
    stamp of arguments and inputs alone would resume an upgraded run on outputs the old code made. Like
    Nextflow's task hash (script and container), other code reruns the stage.
    """
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _fingerprint(call: StageCall) -> dict[str, Any]:
    """What a stage's outputs depend on: senca's code, its arguments and the content (sha256) of its input files."""
    return {"code": code_digest(), "args": call.args, "inputs": {str(p): file_checksum(p) for p in call.inputs}}


def _output_checksums(call: StageCall) -> dict[str, str] | None:
    """sha256 of every output, or None when one is missing or is not a readable artifact of this format."""
    checksums: dict[str, str] = {}
    for path in call.outputs:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        if path.suffix == ".parquet":
            try:
                read_meta(path)  # also refuses artifacts of another senca artifact format
            except SencaError:
                return None
        checksums[str(path)] = file_checksum(path)
    return checksums


def _stamp_matches(stamp: Path, fingerprint: dict[str, Any], call: StageCall) -> bool:
    """True when the stamp records these arguments and inputs, and the outputs are still the files written."""
    if not stamp.exists():
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except ValueError:
        return False  # a damaged stamp: rerun
    if not isinstance(recorded, dict) or any(recorded.get(key) != value for key, value in fingerprint.items()):
        return False
    outputs = recorded.get("outputs")
    return outputs is not None and outputs == _output_checksums(call)


def run_stage(call: StageCall, slide_dir: Path, resume: bool, quiet: bool) -> bool:
    """Run a stage unless its stamp says the same inputs already produced the outputs now on disk.

    Returns True when the stage ran, False when it was skipped.
    """
    stamp = _stamp_path(call, slide_dir)
    fingerprint = _fingerprint(call)
    if resume and _stamp_matches(stamp, fingerprint, call):
        return False
    stamp.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        invoke(call.stage, [*call.args, "--outdir", str(slide_dir), *(["--quiet"] if quiet else [])])
    except BaseException:
        _remove_outputs(call)  # a stage that failed half-way (e.g. the disk filled) leaves none of its set
        raise
    seconds = time.perf_counter() - started
    outputs = _output_checksums(call)
    if outputs is None:
        missing = [p.name for p in call.outputs if not p.is_file()]
        raise SencaError(f"stage {call.stage} did not write {', '.join(missing) or 'readable outputs'}")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(stamp) as tmp:  # the stage's wall time is recorded, never compared on resume
        tmp.write_text(json.dumps({**fingerprint, "outputs": outputs, "seconds": round(seconds, 3)}, indent=1,
                                  sort_keys=True))
    log.info("%s: %s took %.1f s", slide_dir.name, call.stage, seconds)
    return True


def _remove_outputs(call: StageCall) -> None:
    """Delete the outputs of a stage that did not finish: a set with some files missing is never left
    for a user (or a standalone rerun) to mistake for results. Its stamp is already gone."""
    for path in call.outputs:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files a killed run left behind in ``folder`` (and its ``.senca`` stamps folder).

    Atomic writes (:func:`senca.io.artifacts.atomic_path`) go to ``.<name>.<random>.tmp<suffix>`` and
    are renamed only when complete, so such a file is never an output: after SIGKILL it is just litter.
    A folder is only ever written by one ``senca run`` at a time (one worker per slide).
    """
    removed = [p for d in (folder, folder / ".senca") if d.is_dir() for p in d.glob(".*.tmp*") if p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run", folder, len(removed))
    return removed


# ----------------------------------------------------------------------------- one slide, a cohort
def run_slide(spec: SlideSpec, outdir: Path, opts: RunOptions) -> SlideResult:
    """Every stage for one slide; errors are caught and reported in the result, not raised."""
    from senca.commands.common import set_log_tag, setup_logging

    if opts.tag_logs:
        set_log_tag(spec.sample)
    setup_logging(opts.quiet)
    if opts.torch_threads:
        import torch

        torch.set_num_threads(opts.torch_threads)
    slide_dir = outdir / spec.sample
    remove_stale_temporaries(slide_dir)
    result = SlideResult(spec.sample, ok=False)
    def run(call: StageCall) -> None:
        (result.ran if run_stage(call, slide_dir, opts.resume, opts.quiet) else result.skipped).append(call.stage)

    try:
        run(preprocess_call(spec, slide_dir, opts))
        image = read_meta(slide_dir / f"{spec.sample}.spots.parquet", "spots").get("image") or {}
        result.image = image.get("path") is not None
        if result.image:
            run(embed_call(spec.sample, slide_dir, opts))
        else:
            log.warning("%s: no H&E image (image: none); train-senca uses the image-less substitute, "
                        "see docs/method.md", spec.sample)
        run(train_call(spec.sample, slide_dir, opts, result.image))
        run(cluster_call(spec.sample, slide_dir, opts))
        run(markers_call(spec.sample, slide_dir))
        result.ok = True
    except SencaError as exc:
        result.error = str(exc)
        log.error("%s: %s", spec.sample, exc)
    except OSError as exc:  # a full disk met by a library's own write: this slide fails, the others go on
        error = output_os_error(exc)
        if error is None:
            raise
        result.error = str(error)
        log.error("%s: %s", spec.sample, error)
    return result


def evaluate_cohort(outdir: Path, results: list[SlideResult], quiet: bool) -> None:
    """Metrics per labelled slide and the cohort summary/report over the slides that finished."""
    clusters = [str(outdir / r.sample / f"{r.sample}.clusters.parquet") for r in results if r.ok]
    if not clusters:
        return
    remove_stale_temporaries(outdir / "summary")
    invoke("evaluate", [*clusters, "--outdir", str(outdir / "summary"), *(["--quiet"] if quiet else [])])


def may_use_image(spec: SlideSpec) -> bool:
    """Whether a slide may reach embed-patches (so ``senca run`` needs the encoder's weights up front):
    an image file, or a Space Ranger folder / .h5ad that carries images, and not ``image: none``."""
    if spec.image_choice == "none":
        return False
    if spec.image is not None:
        return True
    if spec.kind == "visium":
        return any((spec.data / "spatial" / name).exists()
                   for name in ("tissue_hires_image.png", "tissue_lowres_image.png"))
    if spec.kind == "h5ad":
        try:
            import h5py

            with h5py.File(spec.data, "r") as handle:
                return "uns/spatial" in handle
        except (OSError, ValueError):
            return True  # unreadable here: preprocess will say why; assume it may carry an image
    return False


def run_samplesheet(samplesheet: str | Path, outdir: str | Path, opts: RunOptions, jobs: int = 1) -> list[SlideResult]:
    """Validate the whole sheet, run every slide (``jobs`` at a time), then evaluate the cohort."""
    specs = read_samplesheet(samplesheet)  # every bad row reported before any work starts
    outdir = check_output_dir(outdir).resolve()  # a folder that cannot be written: one line, before any work
    if any(may_use_image(with_image_choice(spec, opts.image_choice)) for spec in specs):
        from senca.encoders import check_encoder_weights

        check_encoder_weights(opts.encoder, opts.weights)  # one line now, not once per slide after preprocess
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SencaError(f"--outdir: cannot create the output folder ({os_error_reason(exc)})", outdir) from None
    jobs = max(1, min(jobs, len(specs)))
    results: list[SlideResult] = []
    if jobs == 1:
        results = [run_slide(spec, outdir, opts) for spec in specs]
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        worker_opts = RunOptions(**{**opts.__dict__, "torch_threads": opts.torch_threads or threads, "tag_logs": True})
        context = multiprocessing.get_context("spawn")  # torch and fork do not mix
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(run_slide, spec, outdir, worker_opts): spec.sample for spec in specs}
            by_sample = {futures[f]: _worker_result(f, futures[f]) for f in as_completed(futures)}
        results = [by_sample[spec.sample] for spec in specs]
    try:
        evaluate_cohort(outdir, results, opts.quiet)
    except SencaError as exc:  # e.g. no space left for the report: the slides' own outputs stay as they are
        log.error("summary: %s", exc)
        results.append(SlideResult(SUMMARY_RESULT, ok=False, error=str(exc)))
    return results


SUMMARY_RESULT = "summary"  # the name of the cohort evaluation's entry among the results


def _worker_result(future: Any, sample: str) -> SlideResult:
    """A worker's result; a worker that died (killed, out of memory, a crash in native code) fails only its slide."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        return SlideResult(sample, ok=False, error=f"its worker process died ({exc or 'no reason given'}); "
                                                   "rerun it with --jobs 1 to see why")
