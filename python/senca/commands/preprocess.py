"""``senca preprocess``: one slide (or the rows of a samplesheet) to spots/expr/graph Parquet + .h5ad."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from senca.commands.common import log, outdir_option, quiet_option, setup_logging, user_errors
from senca.errors import SencaError
from senca.io.readers import read_slide
from senca.io.samplesheet import IMAGE_CHOICES, SlideSpec, data_kind, read_samplesheet, with_image_choice
from senca.preprocess import PreprocessParams, preprocess_slide, write_preprocess


def _existing(path: str | None) -> Path | None:
    if path is None or path == "":
        return None
    p = Path(path)
    if not p.exists():
        raise SencaError("file not found", p)
    return p.resolve()


def slides_from_options(samplesheet: str | None, samples: tuple[str, ...], data: str | None, image: str | None,
                        positions: str | None, labels: str | None, n_clusters: int | None,
                        image_choice: str = "auto") -> list[SlideSpec]:
    """The slides to preprocess: a samplesheet's rows (optionally some of them) or one slide's files.

    ``--image`` may be a keyword (``hires``, ``lowres``, ``none``) as in the samplesheet's ``image``
    column; ``--image-choice`` applies to every slide whose own ``image`` names no file or keyword,
    by the samplesheet's rule (:func:`senca.io.samplesheet.with_image_choice`): so ``--image FILE
    --image-choice lowres`` uses FILE, and ``--image-choice hires`` leaves a legacy ST slide's own
    image alone, as ``senca run`` and the Nextflow pipeline (one run-wide param) need.
    """
    own_choice = "auto"
    if image is not None and image.strip().lower() in IMAGE_CHOICES:
        own_choice, image = image.strip().lower(), None
    if samplesheet is not None:
        if data is not None:
            raise SencaError("give either --samplesheet or --data, not both")
        image_choice = image_choice if own_choice == "auto" else own_choice  # a keyword here: every row's
        specs = read_samplesheet(samplesheet)
        if samples:
            known = {s.sample for s in specs}
            unknown = [s for s in samples if s not in known]
            if unknown:
                raise SencaError(f"sample {unknown[0]!r} is not in the samplesheet", samplesheet)
            specs = [s for s in specs if s.sample in samples]
        return [with_image_choice(s, image_choice) for s in specs]
    if data is None or len(samples) != 1:
        raise SencaError("give --samplesheet, or one --sample with its --data")
    spec = SlideSpec(samples[0], _existing(data), _existing(image), _existing(positions), _existing(labels), n_clusters,
                     own_choice)
    if data_kind(spec.data) == "st" and spec.positions is None:
        raise SencaError("a legacy ST counts table needs --positions (spot file with pixel_x/pixel_y)", spec.data)
    return [with_image_choice(spec, image_choice)]


@click.command("preprocess")
@click.option("--samplesheet", type=click.Path(dir_okay=False), help="Samplesheet CSV (every row, or those named by --sample).")
@click.option("--sample", "samples", multiple=True, help="Sample id (with --data), or a samplesheet row to run (repeatable).")
@click.option("--data", type=click.Path(), help="Space Ranger outs/ folder, .h5ad, or legacy-ST counts .tsv[.gz].")
@click.option("--image", type=str, help="H&E image whose pixels the spot coordinates index (jpg/png/tif), or hires, "
                                        "lowres, none (a Space Ranger / .h5ad slide's own image, or image-less).")
@click.option("--image-choice", type=click.Choice(IMAGE_CHOICES), default="auto", show_default=True,
              help="Which image a slide uses when its own --image / samplesheet cell does not say: auto (the best "
                   "that passes image QC: full-res > hires > lowres > none), hires, lowres, or none.")
@click.option("--positions", type=click.Path(), help="Legacy-ST spot file with x, y, pixel_x, pixel_y.")
@click.option("--labels", type=click.Path(), help="Ground-truth labels (spot id or array x, y -> label).")
@click.option("--n-clusters", type=click.IntRange(min=2), help="Number of regions expected (used by cluster).")
@click.option("--n-hvg", type=click.IntRange(min=1), default=None,
              help="Highly variable genes kept as model input [default: 500 for legacy ST (paper), 3000 for Visium "
                   "and hexagonal-grid .h5ad].")
@click.option("--min-gene-counts", type=click.IntRange(min=0), default=10, show_default=True, help="Drop genes with fewer total counts.")
@click.option("--k", type=click.IntRange(min=1), default=None, help="Neighbours per spot [default: 4 for ST, 6 for Visium].")
@click.option("--hvg-flavor", type=click.Choice(["seurat", "seurat_v3"]), default=None,
              help="HVG ranking: seurat = normalised dispersion (paper), seurat_v3 = variance of raw counts "
                   "[default: seurat for legacy ST, seurat_v3 for Visium; docs/method.md].")
@click.option("--hvg-values", type=click.Choice(["log1p", "pearson_residuals"]), default=None,
              help="What expr.parquet holds for the HVGs: log1p of counts per 10^4 (paper) or the analytic Pearson "
                   "residuals of their counts [default: log1p for legacy ST (paper), pearson_residuals for Visium; docs/method.md, round 12].")
@click.option("--normalised", is_flag=True,
              help="The values are already log-normalised (non-integers): accept them and skip normalisation "
                   "(recorded in the provenance). Without it non-integer counts are refused.")
@click.option("--export-image", is_flag=True,
              help="Also write exactly one {s}.chosen_image.* into --outdir: the image the slide uses (after "
                   "image QC and any fallback) as {s}.chosen_image.<ext> (a hard link, else a copy), or, when it "
                   "runs image-less (no image, none chosen, every image rejected by QC), the marker "
                   "{s}.chosen_image.none (one line: why). For runners that pass files between tasks (the "
                   "Nextflow pipeline routes each slide on it); senca run reads the path recorded in the spots "
                   "metadata instead.")
@outdir_option
@quiet_option
@user_errors
def preprocess(samplesheet, samples, data, image, image_choice, positions, labels, n_clusters, n_hvg, min_gene_counts, k,
               hvg_flavor, hvg_values, normalised, export_image, outdir, quiet):
    """Read a slide, filter and normalise genes, select HVGs, and build the spatial kNN graph.

    Writes {s}.spots.parquet, {s}.expr.parquet, {s}.graph.parquet and {s}.h5ad into --outdir, and with
    --export-image exactly one {s}.chosen_image.<ext>: the image the slide uses, or the marker
    {s}.chosen_image.none when it runs image-less. An .h5ad that carries its own image also gets {s}.image.png.
    """
    setup_logging(quiet)
    specs = slides_from_options(samplesheet, samples, data, image, positions, labels, n_clusters, image_choice)
    params = PreprocessParams(n_hvg=n_hvg, min_gene_counts=min_gene_counts, k=k, hvg_flavor=hvg_flavor,
                              hvg_values=hvg_values)
    if normalised:
        specs = [replace(spec, normalised=True) for spec in specs]
    for spec in specs:  # read and check every slide's inputs first would double the I/O; fail per slide
        raw = read_slide(spec)
        result = preprocess_slide(raw, params, spec.n_clusters)
        if raw.normalised and result.extra.get("normalised_input") is not True:  # never normalise twice silently
            raise SencaError("--normalised: this senca's preprocess cannot skip normalisation yet", spec.data)
        paths = write_preprocess(result, Path(outdir), params, raw.inputs, export_image=export_image)
        log.info("%s: wrote %s", spec.sample, ", ".join(p.name for p in paths.values()))
