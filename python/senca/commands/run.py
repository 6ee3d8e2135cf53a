"""``senca run``: the embedded single-machine runner over a whole samplesheet."""

from __future__ import annotations

import shlex
import sys

import click

from senca.commands.common import device_option, log, quiet_option, seed_option, setup_logging, user_errors
from senca.errors import SencaError
from senca.io.samplesheet import IMAGE_CHOICES
from senca.pipeline import SUMMARY_RESULT, RunOptions, check_train_args, run_samplesheet


@click.command("run")
@click.option("--samplesheet", required=True, type=click.Path(dir_okay=False), help="Samplesheet CSV (see docs/cli.md).")
@click.option("--outdir", "-o", required=True, type=click.Path(file_okay=False), help="Output folder (one subfolder per slide + summary/).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True, help="Slides processed in parallel.")
@click.option("--encoder", type=click.Choice(["resnet50", "resnet18", "efficientnet-lite0"]), default="resnet50", show_default=True,
              help="Image encoder for embed-patches (efficientnet-lite0 ships its weights: works offline).")
@click.option("--weights", type=str, default=None, help="Encoder weights: a state-dict file, or 'random' (recorded).")
@click.option("--input-px", type=click.IntRange(min=32), default=None,  # senca.embed.MIN_INPUT_PX
              help="Resize patches to this side before the encoder; smaller is faster, for 10^5+ spot slides on a "
                   "CPU (docs/scaling.md)  [default: the encoder's 224, or for patches smaller than that (Visium "
                   "lowres) their side rounded up to a multiple of 32, at least 64; --paper: 224]")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs [default: train-senca's].")
@click.option("--k", type=click.IntRange(min=1), default=None, help="Neighbours per spot [default: 4 for ST, 6 for Visium].")
@click.option("--n-hvg", type=click.IntRange(min=1), default=None, help="Highly variable genes [default: 500 for legacy ST, 3000 for Visium].")
@click.option("--train-args", type=str, default="", metavar="'OPTIONS'",
              help="Extra train-senca options for every slide, e.g. '--no-cross-attention --combine sum' (ablations; "
                   "like a Nextflow module's ext.args).")
@click.option("--image-choice", type=click.Choice(IMAGE_CHOICES), default="auto", show_default=True,
              help="Image for slides whose samplesheet image cell does not decide: auto (the best that passes image "
                   "QC: full-res > hires > lowres > none), hires, lowres, or none (every slide image-less).")
@click.option("--normalised", is_flag=True,
              help="Every slide's values are already log-normalised: accept non-integers, skip normalisation.")
@click.option("--view-weight", type=click.FloatRange(min=0), default=None,
              help="Cluster [S, W x substitute view] instead of S alone (senca cluster --view-weight) "
                   "[default: 2 for Visium, 0 (S alone, the paper) for legacy ST].")
@click.option("--gmm-inits", type=click.IntRange(min=1), default=None,
              help="Starts of the tied Gaussian mixture (senca cluster --gmm-inits): more find likelier fits, at "
                   "more time [default: 400 up to 5,000 spots, fewer above, at least 50].")
@click.option("--knn-prior", type=click.FloatRange(min=0), default=None,
              help="Weight of the kNN Potts prior refitted after the mixture (senca cluster --knn-prior); 0: the "
                   "mixture's own labels [default: 16 for Visium, 0 for legacy ST].")
@click.option("--paper", is_flag=True,
              help="The paper's literal settings on every platform: seurat HVGs, no gene scaling, D reconstructs "
                   "[R, H], patches at the encoder's 224 px, Ward clusters of S alone; an option given explicitly wins "
                   "(docs/method.md lists each departure and its numbers).")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Skip stages whose outputs are complete for the same inputs.")
@device_option
@seed_option
@quiet_option
@user_errors
def run(samplesheet, outdir, jobs, encoder, weights, input_px, epochs, k, n_hvg, train_args, image_choice, normalised,
        view_weight, gmm_inits, knn_prior, paper, resume, device, seed, quiet):
    """Run every stage for every slide of SAMPLESHEET on this machine.

    Same commands and output layout as the Nextflow pipeline; failed slides are reported and the
    others finish. Exit status 1 when any slide failed.
    """
    setup_logging(quiet)
    try:
        extra = tuple(shlex.split(train_args))
    except ValueError as exc:
        raise SencaError(f"--train-args {train_args!r}: {exc}") from None
    check_train_args(extra)
    opts = RunOptions(encoder=encoder, weights=weights, input_px=input_px, epochs=epochs, device=device, seed=seed, k=k,
                      n_hvg=n_hvg, resume=resume, quiet=quiet, train_args=extra, image_choice=image_choice,
                      normalised=normalised, paper=paper, view_weight=view_weight,
                      gmm_inits=gmm_inits, knn_prior=knn_prior)
    results = run_samplesheet(samplesheet, outdir, opts, jobs)
    slides = [r for r in results if r.sample != SUMMARY_RESULT]
    for r in slides:  # the reason of a failure is in the one Error line below, not repeated here
        state = "ok" if r.ok else "FAILED"
        detail = f"ran {', '.join(r.ran) or 'nothing'}" + (f"; reused {', '.join(r.skipped)}" if r.skipped else "")
        log.info("%s: %s (%s; image: %s)", r.sample, state, detail, "yes" if r.image else "none")
    failed = [r for r in slides if not r.ok]
    summary_failed = [r for r in results if r.sample == SUMMARY_RESULT]
    if failed or summary_failed:  # one line: every failed slide with the reason its stage gave (file / column / spot)
        parts = []
        if failed:
            reasons = "; ".join(f"{r.sample} ({r.error})" for r in failed)
            parts.append(f"{len(failed)} of {len(slides)} slide(s) failed: {reasons}")
        if summary_failed:
            parts.append(f"the cohort summary failed: {summary_failed[0].error}")
        click.echo(f"Error: {'; '.join(parts)}", err=True)
        sys.exit(1)
    log.info("done: %d slide(s); report at %s/summary/report.html", len(results), outdir)
