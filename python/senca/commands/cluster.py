"""``senca cluster``: Ward clustering of the shared embedding S; clusters table, figures and the final .h5ad."""

from __future__ import annotations

from pathlib import Path

import click

from senca.cluster import cluster_slide, write_cluster_outputs
from senca.commands.common import log, outdir_option, quiet_option, seed_option, setup_logging, user_errors
from senca.plots import ensure_scanpy_image_key


@click.command("cluster")
@click.option("--embeddings", required=True, type=click.Path(dir_okay=False), help="{s}.embeddings.parquet from train-senca.")
@click.option("--spots", required=True, type=click.Path(dir_okay=False), help="{s}.spots.parquet from preprocess.")
@click.option("--h5ad", required=True, type=click.Path(dir_okay=False), help="{s}.h5ad from preprocess (all genes, log-normalised).")
@click.option("--n-clusters", type=int, default=None,
              help="Number of clusters [default: the samplesheet's n_clusters, else the number of ground-truth "
                   "labels, else the k in 2..15 with the largest silhouette of S].")
@click.option("--image", type=click.Path(dir_okay=False), default=None,
              help="H&E image for the figures and uns['spatial'] [default: the one preprocess recorded].")
@click.option("--method", type=click.Choice(["gmm", "ward"]), default=None,
              help="Flat clusters: ward = the Ward tree's cut (paper), gmm = tied Gaussian mixture on PCA 20 of what "
                   "is clustered, the most likely of --gmm-inits starts [default: ward for legacy ST, gmm for Visium]. "
                   "The Ward tree and dendrogram are written either way.")
@click.option("--view-weight", type=click.FloatRange(min=0), default=None,
              help="Cluster [S, W x substitute view] (each block at unit root mean variance; the view is the "
                   "expression's smoothed PCA that train-senca writes beside S) instead of S alone; 0: S alone "
                   "(the paper) [default: 2 for Visium, 0 for legacy ST; docs/method.md].")
@click.option("--gmm-inits", type=click.IntRange(min=1), default=None,
              help="Starts of the tied Gaussian mixture (--method gmm), searched at once; the most likely fit wins. "
                   "More starts find likelier fits (docs/method.md, round 25) [default: 400 up to 5,000 spots, "
                   "2,000,000 / spots above, at least 50].")
@click.option("--knn-prior", type=click.FloatRange(min=0), default=None,
              help="After the mixture (--method gmm), refit its labels with a Potts prior of this weight over each "
                   "spot's nearest spots in the same PCs (one per 120 spots, 5 to 30; mean-field EM), so clusters follow the data's graph "
                   "rather than the mixture's ellipsoids; 0: the mixture's own labels [default: 16 for Visium, 0 "
                   "for legacy ST; docs/method.md, round 26].")
@seed_option
@outdir_option
@quiet_option
@user_errors
def cluster(embeddings, spots, h5ad, n_clusters, image, method, view_weight, gmm_inits, knn_prior, seed, outdir,
            quiet):
    """Cluster S with agglomerative (Ward) clustering and save the dendrogram.

    Writes {s}.clusters.parquet, {s}.dendrogram.png, {s}.clusters.png, {s}.umap.png and
    {s}.senca.h5ad (clusters in obs['senca_cluster'], S in obsm['X_senca'], with --view-weight > 0
    the view and what was clustered in obsm['X_senca_view'] and obsm['X_senca_clustered'], the H&E in
    uns['spatial'] for sc.pl.spatial) into --outdir.
    """
    setup_logging(quiet)
    result = cluster_slide(Path(embeddings), Path(spots), Path(h5ad), n_clusters=n_clusters,
                           image=Path(image) if image else None, seed=seed, method=method,
                           view_weight=view_weight, gmm_inits=gmm_inits, knn_prior=knn_prior)
    ensure_scanpy_image_key(result.adata, result.sample)  # image-less: sc.pl.spatial's default call must work
    paths = write_cluster_outputs(result, Path(outdir))
    log.info("%s: %d clusters (%s); wrote %s", result.sample, result.n_clusters, result.source,
             ", ".join(p.name for p in paths.values()))
