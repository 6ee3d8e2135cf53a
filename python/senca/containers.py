"""Build and check senca's container images through the Docker engine (docker-py).

The Nextflow pipeline runs every stage in one of two images (``containers/``): a CUDA image for the
GPU stages (embed-patches, train-senca) with the ResNet ImageNet weights baked in, and a slim CPU
image for the others. This module assembles exactly what a build needs (a small build context of
``python/`` and ``containers/``, never the user's virtualenv or data), tags images with the names
``nextflow.config`` uses by default, and checks a built image by running ``senca --version`` in it.

The functions that assemble a build are pure (tested without an engine); the ones that talk to
Docker turn "no engine here" into a :class:`SencaError` that says so, naming ``DOCKER_HOST``.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senca import __version__
from senca.errors import SencaError

IMAGE_NAME = "senca-st"
# Folders of the source tree a build needs, and what inside them never goes into an image.
CONTEXT_DIRS = ("python", "containers")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", "build", "dist", ".venv"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")


@dataclass(frozen=True)
class ImageKind:
    """One of the images: the Dockerfile that builds it and the suffix of its default tag."""

    name: str
    dockerfile: str  # relative to the repository root
    tag_suffix: str
    description: str

    @property
    def default_tag(self) -> str:
        return f"{IMAGE_NAME}:{__version__}{self.tag_suffix}"


KINDS: dict[str, ImageKind] = {
    "cuda": ImageKind("cuda", "containers/Dockerfile", "-cuda",
                      "CUDA runtime + torch: embed-patches and train-senca (ResNet weights baked in)"),
    "cpu": ImageKind("cpu", "containers/Dockerfile.cpu", "",
                     "CPU-only torch: preprocess, cluster, markers, evaluate (and everything, slowly)"),
}


def kinds_for(choice: str) -> list[ImageKind]:
    """``cuda``, ``cpu`` or ``all`` -> the image kinds to act on."""
    if choice == "all":
        return list(KINDS.values())
    if choice not in KINDS:
        raise SencaError(f"unknown image kind {choice!r}: choose one of {', '.join(KINDS)} or all")
    return [KINDS[choice]]


def source_root(root: str | Path | None = None) -> Path:
    """The senca-st source tree to build from: ``root``, else the tree this senca was installed from."""
    candidates = [Path(root)] if root is not None else [Path(__file__).resolve().parents[2], Path.cwd()]
    for candidate in candidates:
        dockerfiles = all((candidate / kind.dockerfile).is_file() for kind in KINDS.values())
        if dockerfiles and (candidate / "python" / "pyproject.toml").is_file():
            return candidate.resolve()
    where = candidates[0] if root is not None else "this installation or the current folder"
    raise SencaError(f"no senca-st source tree at {where} (containers/Dockerfile and python/pyproject.toml): "
                     "run from a clone of the repository or pass --root")


def context_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(name in the build context, file) for everything a build needs, in a stable order."""
    for top in CONTEXT_DIRS:
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(SKIP_SUFFIXES))
            for filename in sorted(filenames):
                if filename.endswith(SKIP_SUFFIXES):
                    continue
                path = Path(dirpath) / filename
                yield path.relative_to(root).as_posix(), path


def build_context(root: Path) -> io.BytesIO:
    """A gzipped tar of :func:`context_files`: what the Docker engine receives as the build context.

    Files are stored with fixed owner and mtime so the same tree gives the same context (and the
    engine's layer cache hits).
    """
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, path in context_files(root):
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    buffer.seek(0)
    return buffer


def build_arguments(kind: ImageKind, root: Path, tag: str | None = None, base_image: str | None = None,
                    no_cache: bool = False, pull: bool = False) -> dict[str, Any]:
    """Keyword arguments for docker-py's low-level ``APIClient.build`` (the context is added by the caller)."""
    buildargs = {"SENCA_VERSION": __version__}
    if base_image:
        buildargs["BASE_IMAGE"] = base_image
    return {
        "dockerfile": kind.dockerfile,
        "tag": tag or kind.default_tag,
        "buildargs": buildargs,
        "labels": {"org.opencontainers.image.title": f"{IMAGE_NAME} ({kind.name})",
                   "org.opencontainers.image.version": __version__},
        "nocache": no_cache,
        "pull": pull,
        "rm": True,
        "forcerm": True,
        "decode": True,
        "custom_context": True,
        "encoding": "gzip",
    }


def docker_client() -> Any:
    """A docker-py client connected to a live engine, or a SencaError saying there is none."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise SencaError("the 'docker' Python package is missing: pip install docker") from None
    host = os.environ.get("DOCKER_HOST") or "unset, i.e. unix:///var/run/docker.sock"
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        reason = " ".join(str(exc).split())[:200]
        raise SencaError(f"no Docker engine reachable (DOCKER_HOST={host}): start Docker or build on a machine "
                         f"that has it ({reason})") from None
    return client


def build_image(kind: ImageKind, root: Path, tag: str | None = None, base_image: str | None = None,
                no_cache: bool = False, pull: bool = False, log: Callable[[str], None] = lambda line: None) -> str:
    """Build one image; stream the engine's log lines to ``log``; return the tag."""
    client = docker_client()
    from docker.errors import APIError

    arguments = build_arguments(kind, root, tag, base_image, no_cache, pull)
    try:
        for chunk in client.api.build(fileobj=build_context(root), **arguments):
            if "error" in chunk:
                raise SencaError(f"docker build of {arguments['tag']} ({kind.dockerfile}) failed: {chunk['error'].strip()}")
            text = chunk.get("stream", "").rstrip()
            if text:
                log(text)
    except APIError as exc:
        raise SencaError(f"docker build of {arguments['tag']} failed: {exc.explanation or exc}") from None
    return arguments["tag"]


def check_image(tag: str, gpu: bool = False) -> str:
    """Run ``senca --version`` in an image (and, with ``gpu``, check torch sees a GPU there)."""
    client = docker_client()
    from docker.errors import APIError, ContainerError, ImageNotFound
    from docker.types import DeviceRequest

    devices = [DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu else None
    expected = f"senca, version {__version__}"

    def run(command: list[str]) -> str:
        try:
            out = client.containers.run(tag, command, remove=True, stdout=True, stderr=True, device_requests=devices)
        except ImageNotFound:
            raise SencaError(f"image {tag} not found: build it first (senca containers build)") from None
        except ContainerError as exc:
            detail = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise SencaError(f"`{' '.join(command)}` failed in {tag} (exit {exc.exit_status}): {detail[0]}") from None
        except APIError as exc:
            raise SencaError(f"cannot run {tag}: {exc.explanation or exc}") from None
        return out.decode("utf-8", "replace").strip()

    version = run(["senca", "--version"])
    if version != expected:
        raise SencaError(f"{tag} answers {version!r}, expected {expected!r}: rebuild it from this source tree")
    if gpu:
        run(["python", "-c", "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'torch sees no GPU')"])
    return version
