"""``senca train-senca``: train SENCA-st on one slide (self-supervised) and write its shared embedding S."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from senca.commands.common import (
    device_option,
    outdir_option,
    quiet_option,
    seed_option,
    setup_logging,
    user_errors,
)

log = logging.getLogger("senca")
_FILE = click.Path(dir_okay=False, path_type=Path)


class _Defaults:
    """senca.train.TrainConfig's defaults, repeated so `--help` needs no torch (a test keeps them equal)."""

    epochs = 10
    lr = 5e-4
    lambda_mse = 40.0
    temperature = 0.5
    hidden_dim = 256
    rna_dim = 128
    shared_dim = 64
    combine = "concat"
    batch_spots = 128


_DEFAULTS = _Defaults


@click.command("train-senca")
@click.option("--spots", "spots_path", required=True, type=_FILE, help="{s}.spots.parquet from `senca preprocess`.")
@click.option("--expr", "expr_path", required=True, type=_FILE, help="{s}.expr.parquet (HVG matrix) from `senca preprocess`.")
@click.option("--graph", "graph_path", required=True, type=_FILE, help="{s}.graph.parquet (kNN edges) from `senca preprocess`.")
@click.option("--patches", "patches_path", type=_FILE, default=None,
              help="{s}.patches.parquet from `senca embed-patches`; absent: image-less slide (docs/method.md).")
@click.option("--epochs", type=int, default=_DEFAULTS.epochs, show_default=True, help="Passes over the slide (every spot in one mini-batch per epoch).")
@click.option("--lr", type=float, default=_DEFAULTS.lr, show_default=True, help="Adam learning rate.")
@click.option("--lambda-mse", type=float, default=_DEFAULTS.lambda_mse, show_default=True,
              help="Weight of the reconstruction term MSE(E, D) in eq. 1.")
@click.option("--temperature", type=float, default=_DEFAULTS.temperature, show_default=True, help="NT-Xent temperature.")
@click.option("--hidden-dim", type=int, default=_DEFAULTS.hidden_dim, show_default=True, help="Graph transformer hidden width.")
@click.option("--rna-dim", type=int, default=_DEFAULTS.rna_dim, show_default=True, help="Width of R and H.")
@click.option("--shared-dim", type=int, default=_DEFAULTS.shared_dim, show_default=True, help="Width of the shared embedding S.")
@click.option("--combine", type=click.Choice(["concat", "sum"]), default=_DEFAULTS.combine, show_default=True,
              help="How spot i's two cross-attention rows are combined before the encoder.")
@click.option("--k", type=int, default=None,
              help="Neighbours per spot (paper table 5)  [default: the graph's own k from preprocess]")
@click.option("--no-cross-attention", is_flag=True, help="Ablation: uniform neighbourhood weights instead of attention.")
@click.option("--no-hierarchical", is_flag=True, help="Ablation: per-spot NT-Xent instead of windowed + pooled terms.")
@click.option("--batch-spots", type=int, default=_DEFAULTS.batch_spots, show_default=True,
              help="Most spots per mini-batch (whole spatial cells from across the slide, plus their halo); "
                   "bounds memory whatever the slide size.")
@click.option("--gene-scale", type=click.Choice(["none", "zscore"]), default=None,
              help="Per-gene z-score of the HVGs before training [default: none for legacy ST (paper), zscore for "
                   "Visium; docs/method.md].")
@click.option("--reconstruct", default=None,
              type=click.Choice(["branches", "views", "encoder_input", "expression", "smoothed_expression"]),
              help="What D reconstructs from S: branches = spot i's [R_i, H_i]; views = [R_i, the image branch's "
                   "standardised input]; expression = spot i's own HVG expression (as GraphST's decoder); "
                   "smoothed_expression = the HVGs averaged over i's window (docs/method.md, round 9); "
                   "encoder_input = E (eq. 1 literally) [default: by platform; docs/method.md].")
@click.option("--substitute-hops", type=int, default=None,
              help="Image-less slides: times the expression is averaged over each spot's neighbourhood to make the "
                   "image branch's substitute view [default: by platform; docs/method.md].")
@click.option("--input-pcs", type=int, default=None,
              help="The RNA branch reads this many principal components of the (scaled) HVGs instead of the HVGs "
                   "(0: the HVGs, the paper) [default: 0 for legacy ST, 200 for Visium; docs/method.md, rounds 7 "
                   "and 12].")
@click.option("--image-pcs", type=int, default=None,
              help="With H&E: PCA the patch features to this width before the image head (0: the raw features, "
                   "the paper) [default: by platform; docs/method.md].")
@click.option("--image-with-substitute/--image-only", default=None,
              help="With H&E: the image head reads [substitute view, patch features] instead of the patch features "
                   "alone (the paper) [default: by platform; docs/method.md].")
@click.option("--image-weight", type=float, default=None,
              help="With --image-with-substitute: the patch features' scale relative to the substitute view's "
                   "[default: by platform; docs/method.md].")
@click.option("--image-hops", type=int, default=0, show_default=True,
              help="With H&E: average the patch features over each spot and its graph neighbours this many times "
                   "before the image head (0: the paper; measured in docs/method.md, round 6).")
@click.option("--reference-spots", type=click.IntRange(min=0), default=0, show_default=True,
              help="A slide with fewer spots trains for epochs x this / its spots (rounded up), so it gets the "
                   "optimisation steps a slide of this size gets in --epochs (0: --epochs on every slide, the paper; "
                   "3600, a DLPFC section, measured in docs/method.md, round 27).")
@click.option("--graph-contrast", type=float, default=0.0, show_default=True,
              help="Weight of a corrupted-graph (DGI-style, as GraphST) contrast on R added to eq. 1 (0: the paper; "
                   "measured in docs/method.md, round 6).")
@seed_option
@device_option
@outdir_option
@quiet_option
@user_errors
def train_senca(spots_path: Path, expr_path: Path, graph_path: Path, patches_path: Path | None, epochs: int, lr: float,
                lambda_mse: float, temperature: float, hidden_dim: int, rna_dim: int, shared_dim: int, combine: str,
                k: int | None, no_cross_attention: bool, no_hierarchical: bool, batch_spots: int, gene_scale: str | None,
                reconstruct: str | None, substitute_hops: int | None, input_pcs: int | None, image_pcs: int | None,
                image_with_substitute: bool | None, image_weight: float | None, image_hops: int,
                reference_spots: int, graph_contrast: float, seed: int, device: str, outdir: str,
                quiet: bool) -> None:
    """Train the SENCA-st model on one slide, without labels.

    Writes {s}.model.pt (state dict + config, loadable with weights_only=True), {s}.embeddings.parquet
    (the shared embedding S per spot) and {s}.train_log.parquet (every loss term per step).
    """
    setup_logging(quiet)
    from senca.train import TrainConfig, platform_train_defaults, read_training_inputs, write_training_outputs
    from senca.train import train_senca as run_training

    inputs = read_training_inputs(spots_path, expr_path, graph_path, patches_path)
    platform = platform_train_defaults(inputs.defaults_platform)
    given = {"gene_scale": gene_scale, "reconstruct": reconstruct, "substitute_hops": substitute_hops,
             "image_pcs": image_pcs, "image_with_substitute": image_with_substitute, "image_weight": image_weight,
             "input_pcs": input_pcs}
    chosen = {key: platform[key] if value is None else value for key, value in given.items()}
    config = TrainConfig(**chosen, epochs=epochs, lr=lr, lambda_mse=lambda_mse, temperature=temperature, hidden_dim=hidden_dim,
                         rna_dim=rna_dim, shared_dim=shared_dim, combine=combine, k=k,
                         cross_attention=not no_cross_attention, hierarchical=not no_hierarchical,
                         batch_spots=batch_spots, image_hops=image_hops, graph_contrast=graph_contrast,
                         reference_spots=reference_spots, seed=seed,
                         device=device)
    config.validate()
    if inputs.image_features is None:
        log.warning("%s: no --patches: image-less slide (image: none); the image branch gets the expression averaged "
                    "over each spot's neighbourhood (%d hops, PCA to %d) instead of H&E features",
                    inputs.sample, config.substitute_hops, config.substitute_dim)
    log.info("%s: training on %d spots x %d genes (%s)", inputs.sample, len(inputs.spot_ids), inputs.expr.shape[1],
             "image: patches" if inputs.image_features is not None else "image: none")
    result = run_training(inputs.expr, inputs.coords, inputs.source, inputs.target, inputs.distance,
                          inputs.image_features, config, quiet=quiet)
    paths = write_training_outputs(result, inputs, config, outdir)
    final = ", ".join(f"{name} {value:.4g}" for name, value in result.summary["final_losses"].items())
    log.info("%s: %d epochs, %d steps on %s in %.1f s; last epoch %s; S variance %.3g -> %s", inputs.sample,
             result.summary["epochs"], result.summary["steps"], result.summary["device"], result.summary["train_seconds"], final,
             result.summary["embedding_var"], paths["embeddings"])
