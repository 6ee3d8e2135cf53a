"""``senca containers build|check``: the pipeline's container images, through the Docker engine."""

from __future__ import annotations

import click

from senca.commands.common import log, quiet_option, setup_logging, user_errors
from senca.errors import SencaError

_KIND = click.option("--kind", type=click.Choice(["cuda", "cpu", "all"]), default="all", show_default=True,
                     help="cuda: the GPU image (containers/Dockerfile); cpu: the slim image (containers/Dockerfile.cpu).")
_TAG = click.option("--tag", default=None,
                    help="Image tag (one --kind only)  [default: senca-st:<version>-cuda / senca-st:<version>, "
                         "the names nextflow.config uses]")


def _tags(kinds: list, tag: str | None) -> list[tuple]:
    if tag is not None and len(kinds) != 1:
        raise SencaError("--tag names one image: give --kind cuda or --kind cpu with it")
    return [(kind, tag or kind.default_tag) for kind in kinds]


@click.group("containers")
def containers() -> None:
    """Build or check the senca container images (needs a running Docker engine).

    Build from a clone of the repository; push the tags to your registry, or convert them for
    Singularity/Apptainer (docs/nextflow.md).
    """


@containers.command("build")
@_KIND
@_TAG
@click.option("--base-image", default=None,
              help="Override the Dockerfile's pinned base image (e.g. a digest-pinned mirror of it).")
@click.option("--no-cache", is_flag=True, help="Rebuild every layer.")
@click.option("--pull", is_flag=True, help="Pull a newer base image first.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="senca-st source tree  [default: the one this senca is installed from, else the current folder]")
@quiet_option
@user_errors
def build(kind: str, tag: str | None, base_image: str | None, no_cache: bool, pull: bool, root: str | None,
          quiet: bool) -> None:
    """Build the images (build context: python/ and containers/ only)."""
    setup_logging(quiet)
    from senca.containers import build_image, docker_client, kinds_for, source_root

    tree = source_root(root)
    targets = _tags(kinds_for(kind), tag)
    docker_client()  # fail before anything else when there is no engine
    for image_kind, image_tag in targets:
        log.info("building %s from %s", image_tag, image_kind.dockerfile)
        built = build_image(image_kind, tree, image_tag, base_image, no_cache, pull, log=log.info)
        click.echo(built)


@containers.command("check")
@_KIND
@_TAG
@click.option("--gpu", is_flag=True, help="Also check torch sees a GPU (cuda image; needs the NVIDIA container toolkit).")
@quiet_option
@user_errors
def check(kind: str, tag: str | None, gpu: bool, quiet: bool) -> None:
    """Run `senca --version` in each image; it must be this senca's version."""
    setup_logging(quiet)
    from senca.containers import check_image, kinds_for

    for image_kind, image_tag in _tags(kinds_for(kind), tag):
        version = check_image(image_tag, gpu=gpu and image_kind.name == "cuda")
        click.echo(f"{image_tag}: {version}")
