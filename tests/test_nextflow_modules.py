"""The Nextflow modules against the real ``senca`` CLI, from both sides.

Nextflow cannot be installed here, so each module is rendered the way Nextflow renders it
(``tests/nextflow_render.py``: its ``script:`` block with ``ext.args`` from ``conf/modules.config``
and the params of ``nextflow.config`` + a profile) and then

* statically: the one ``senca`` command it calls, and every option it passes, must exist in the
  click CLI with a valid value; its declared outputs must be what the command documents it writes;
  the publish layout must be ``senca run``'s (docs/cli.md); resources, GPU and retry settings are
  checked on the config side;
* dynamically: every module's command line runs, exactly as rendered with the ``test`` profile,
  in a task folder of its own with its inputs staged as Nextflow stages them, on the bundled demo
  slides (legacy ST with an image, legacy ST without one, Visium outs/), chained as
  ``workflows/senca.nf`` chains them; each task must write exactly its declared outputs.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from nextflow_render import (
    REPO,
    Closure,
    FileList,
    Obj,
    Process,
    evaluate,
    output_names,
    parse_process,
    process_scope,
    read_params,
    read_process_config,
    render,
)

from senca import __version__
from senca.cli import COMMANDS, main

MODULES = REPO / "modules" / "local"
CONFIGS = [REPO / "conf" / "base.config", REPO / "conf" / "modules.config"]
DEMO_SHEET = REPO / "python" / "senca" / "data" / "demo" / "samplesheet.csv"
# Which senca command each process must call, and the inputs the workflow may pass as [] (absent).
COMMAND_OF = {"PREPROCESS": "preprocess", "EMBED_PATCHES": "embed-patches", "TRAIN_SENCA": "train-senca",
              "CLUSTER": "cluster", "MARKERS": "markers", "EVALUATE": "evaluate"}
OPTIONAL_INPUTS = {"PREPROCESS": {"image", "positions", "labels"}, "EMBED_PATCHES": {"weights"},
                   "TRAIN_SENCA": {"patches"}, "CLUSTER": {"image"}, "EVALUATE": {"beside"}}
GPU_PROCESSES = {"EMBED_PATCHES", "TRAIN_SENCA"}
# Params that switch every optional flag on, so no ext.args branch goes unchecked.
EVERYTHING_ON = {"k": 6, "weights": "random", "patch_px": 96, "input_px": 64, "combine": "sum", "no_cross_attention": True,
                 "no_hierarchical": True, "device": "cpu", "image_choice": "lowres", "normalised": True,
                 "cluster_method": "gmm", "view_weight": 2, "gmm_inits": 200, "knn_prior": 8}
PARAM_SETS = {
    "defaults": lambda: read_params(REPO / "nextflow.config"),
    "test": lambda: read_params(REPO / "nextflow.config", REPO / "conf" / "test.config"),
    "gpu": lambda: read_params(REPO / "nextflow.config", REPO / "conf" / "gpu.config"),
    "everything-on": lambda: read_params(REPO / "nextflow.config") | EVERYTHING_ON,
}


def processes() -> dict[str, Process]:
    found = {p.name: p for p in (parse_process(f) for f in sorted(MODULES.glob("*/main.nf")))}
    assert set(found) == set(COMMAND_OF), f"modules found: {sorted(found)}"
    return found


def settings(params: dict[str, Any], *extra: Path) -> dict[str, dict[str, Any]]:
    return read_process_config(*CONFIGS, *extra, params=params)


def ext_args(config: dict[str, dict[str, Any]], name: str, meta: dict[str, Any] | None) -> str | None:
    value = config.get(f"withName:{name}", {}).get("ext.args", config.get("*", {}).get("ext.args"))
    if isinstance(value, Closure):
        return value.bind(meta=meta, task=Obj(process=name))()
    return value


def staged_name(element_stage_as: str | None, filename: str) -> str:
    """Where Nextflow stages a file: ``stageAs: 'dir/*'`` puts it in dir/, else the task root."""
    if element_stage_as is None:
        return filename
    if not element_stage_as.endswith("/*"):
        raise AssertionError(f"stageAs {element_stage_as!r} outside the patterns modelled here")
    return element_stage_as[:-1] + filename


def fake_inputs(process: Process, full: bool) -> dict[str, Any]:
    """Placeholder inputs: every optional file present (``full``) or absent ([])."""
    values: dict[str, Any] = {}
    for line in process.inputs:
        for e in line:
            if e.qualifier == "val":
                values[e.name] = {"id": "S1", "n_clusters": 7} if full else {"id": "S1"}
            elif e.name in OPTIONAL_INPUTS.get(process.name, set()) and not full:
                values[e.name] = []
            elif process.name == "EVALUATE":
                values[e.name] = FileList(staged_name(e.stage_as, f"S{i}.{e.name}.x") for i in (1, 2))
            else:
                values[e.name] = staged_name(e.stage_as, f"S1.{e.name}.x")
    return values


def command_lines(script: str) -> tuple[list[list[str]], list[str]]:
    """The script's command lines (backslash continuations joined, tokenised) and heredoc bodies."""
    commands, heredocs = [], []
    lines = iter(script.replace("\\\n", " ").splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tokens = shlex.split(line)
        heredoc = re.search(r"<<-?\s*(\w+)", line)
        if heredoc:
            body = []
            for inner in lines:
                if inner.strip() == heredoc.group(1):
                    break
                body.append(inner)
            heredocs.append("\n".join(body))
        commands.append(tokens)
    return commands, heredocs


VERSIONS_COMMAND = ["cat", "<<-END_VERSIONS", ">", "versions.yml"]
# What every task exports first: torch (OpenMP), MKL/OpenBLAS and numba get the task's CPUs.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def thread_command(cpus: int) -> list[str]:
    return ["export", *(f"{name}={cpus}" for name in THREAD_VARIABLES)]


def cli_command(name: str) -> click.Command:
    try:
        command = main.get_command(click.Context(main), name)
    except ImportError as exc:  # a stage still being written by another helper
        pytest.skip(f"senca {name} does not import yet: {exc}")
    assert command is not None, f"senca has no command {name!r}"
    return command


def cli_problems(tokens: list[str]) -> list[str]:
    """What is wrong with ``senca <command> <args>`` according to the real click command."""
    if tokens[:1] != ["senca"] or len(tokens) < 2 or tokens[1] not in COMMANDS:
        return [f"not a senca command: {' '.join(tokens[:2])}"]
    command = cli_command(tokens[1])
    options = {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts + p.secondary_opts}
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    problems, given, positional = [], set(), []
    ctx = click.Context(command)
    args = tokens[2:]
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("-"):
            positional.append(token)
            i += 1
            continue
        param = options.get(token)
        if param is None:
            problems.append(f"senca {tokens[1]} has no option {token}")
            i += 1
            continue
        given.add(param.name)
        if param.is_flag:
            i += 1
            continue
        if i + 1 >= len(args) or args[i + 1].startswith("--"):
            problems.append(f"{token} needs a value")
            i += 1
            continue
        value = args[i + 1]
        if not isinstance(param.type, click.Path):
            try:
                param.type.convert(value, param, ctx)
            except click.BadParameter as exc:
                problems.append(f"{token} {value}: {exc.format_message()}")
        i += 2
    if positional and not arguments:
        problems.append(f"senca {tokens[1]} takes no arguments, got {positional}")
    missing = [p.opts[0] for p in command.params if isinstance(p, click.Option) and p.required and p.name not in given]
    problems += [f"required option {m} not passed" for m in missing]
    if "outdir" not in given:
        problems.append("--outdir not passed (outputs must land in the task folder)")
    return problems


def rendered(process: Process, params: dict[str, Any], full: bool, stub: bool = False, cpus: int = 1,
             prefix: str | None = None) -> tuple[str, dict[str, Any]]:
    config = settings(params)
    inputs = fake_inputs(process, full)
    meta = next((v for v in inputs.values() if isinstance(v, dict)), None)
    scope = process_scope(process, inputs, ext_args(config, process.name, meta), prefix=prefix, cpus=cpus)
    return render(process, scope, stub=stub), scope


# ----------------------------------------------------------------------------------------------
# Static: scripts against the CLI
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("param_set", sorted(PARAM_SETS))
@pytest.mark.parametrize("full", [True, False], ids=["all-inputs", "required-inputs"])
@pytest.mark.parametrize("name", sorted(COMMAND_OF))
def test_script_calls_one_senca_command_with_real_options(name: str, full: bool, param_set: str) -> None:
    process = processes()[name]
    script, _ = rendered(process, PARAM_SETS[param_set](), full)
    commands, heredocs = command_lines(script)
    assert len(commands) == 3 and commands[2] == VERSIONS_COMMAND, f"threads, one senca command, versions.yml:\n{script}"
    assert commands[0] == thread_command(1), script
    senca = commands[1]
    assert senca[:2] == ["senca", COMMAND_OF[name]], script
    assert cli_problems(senca) == [], script
    assert heredocs == [f'"{name}":\n    senca: $(senca --version | sed \'s/senca, version //\')'], script


def test_optional_inputs_are_rendered_only_when_given() -> None:
    procs = processes()
    for name, optional in OPTIONAL_INPUTS.items():
        with_all, _ = rendered(procs[name], PARAM_SETS["test"](), full=True)
        without, _ = rendered(procs[name], PARAM_SETS["test"](), full=False)
        for input_name in optional - {"beside"}:  # files staged only for the report, never passed
            assert f"{input_name}.x" in with_all, (name, input_name)
            assert f"{input_name}.x" not in without and "[]" not in without, (name, input_name, without)
    preprocess, _ = rendered(procs["PREPROCESS"], PARAM_SETS["test"](), full=True)
    assert "--n-clusters 7" in preprocess
    assert "--n-clusters" not in rendered(procs["PREPROCESS"], PARAM_SETS["test"](), full=False)[0]
    # cluster reads n_clusters from the spots metadata, so both runners record the same source
    assert "--n-clusters" not in rendered(procs["CLUSTER"], PARAM_SETS["test"](), full=True)[0]


def test_params_reach_the_commands() -> None:
    procs = processes()
    test = PARAM_SETS["test"]()
    embed, _ = rendered(procs["EMBED_PATCHES"], test, full=True)
    assert f"--encoder {test['encoder']}" in embed and "--encoder efficientnet-lite0" in embed
    train, _ = rendered(procs["TRAIN_SENCA"], test, full=True)
    assert f"--epochs {test['epochs']}" in train and "--lr 0.0005" in train
    everything, _ = rendered(procs["TRAIN_SENCA"], PARAM_SETS["everything-on"](), full=True)
    for flag in ("--no-cross-attention", "--no-hierarchical", "--combine sum", "--device cpu"):
        assert flag in everything
    gpu, _ = rendered(procs["EMBED_PATCHES"], PARAM_SETS["gpu"](), full=True)
    assert "--device cuda" in gpu
    preprocess, _ = rendered(procs["PREPROCESS"], PARAM_SETS["everything-on"](), full=True)
    assert "--k 6" in preprocess
    assert "--image-choice lowres" in preprocess and "--normalised" in preprocess
    cluster, _ = rendered(procs["CLUSTER"], PARAM_SETS["everything-on"](), full=True)
    assert "--method gmm" in cluster and "--view-weight 2" in cluster and "--gmm-inits 200" in cluster
    assert "--knn-prior 8" in cluster
    plain, _ = rendered(procs["CLUSTER"], test, full=True)
    assert "--method" not in plain and "--view-weight" not in plain  # unset: senca's platform defaults
    assert "--gmm-inits" not in plain and "--knn-prior" not in plain


def test_view_weight_zero_reaches_cluster() -> None:
    """--view_weight 0 (S alone, the paper) is a value, not Groovy-false: it must reach the command."""
    cluster, _ = rendered(processes()["CLUSTER"], read_params(REPO / "nextflow.config") | {"view_weight": 0}, full=True)
    assert "--view-weight 0" in cluster
    plain_mixture, _ = rendered(processes()["CLUSTER"], read_params(REPO / "nextflow.config") | {"knn_prior": 0}, full=True)
    assert "--knn-prior 0" in plain_mixture  # the same for --knn_prior 0 (the mixture's own labels)


@pytest.mark.parametrize("choice", ["hires", "lowres", "none"])
def test_image_choice_and_normalised_params_reach_preprocess(choice: str) -> None:
    """--image_choice / --normalised become preprocess's --image-choice / --normalised (auto and off: no
    flag, senca's own defaults); every rendering also asks preprocess to hand on the image it chose."""
    process = processes()["PREPROCESS"]
    defaults = PARAM_SETS["test"]()
    plain, _ = rendered(process, defaults, full=True)
    assert "--image-choice" not in plain and "--normalised" not in plain
    chosen, _ = rendered(process, defaults | {"image_choice": choice, "normalised": True}, full=False)
    senca = command_lines(chosen)[0][1]
    assert senca[senca.index("--image-choice") + 1] == choice and "--normalised" in senca
    assert cli_problems(senca) == []
    for script in (plain, chosen):
        assert "--export-image" in command_lines(script)[0][1]
    for name in sorted(set(COMMAND_OF) - {"PREPROCESS"}):  # preprocess decides; no other stage is told
        other, _ = rendered(processes()[name], defaults | {"image_choice": choice, "normalised": True}, full=True)
        assert "--image-choice" not in other and "--normalised" not in other, name


@pytest.mark.parametrize("keyword", ["hires", "lowres", "none"])
def test_samplesheet_image_keyword_reaches_preprocess_as_its_image(keyword: str) -> None:
    """main.nf puts an `image` keyword in meta.image_choice (no file is staged): PREPROCESS passes it as
    --image KEYWORD, which senca ranks above the run-wide --image-choice, as `senca run` does."""
    process = processes()["PREPROCESS"]
    params = PARAM_SETS["test"]() | {"image_choice": "none" if keyword != "none" else "hires"}
    inputs = fake_inputs(process, full=False)
    inputs["meta"] = {"id": "S1", "image_choice": keyword}
    script = render(process, process_scope(process, inputs, ext_args(settings(params), "PREPROCESS", inputs["meta"])))
    senca = command_lines(script)[0][1]
    assert senca[senca.index("--image") + 1] == keyword and cli_problems(senca) == []
    # a staged file is the image itself (main.nf never sends both)
    inputs["image"] = "image/S1.image.x"
    script = render(process, process_scope(process, inputs, ext_args(settings(params), "PREPROCESS", inputs["meta"])))
    senca = command_lines(script)[0][1]
    assert senca[senca.index("--image") + 1] == "image/S1.image.x" and senca.count("--image") == 1


@pytest.mark.parametrize("name", sorted(COMMAND_OF))
def test_task_cpus_reach_every_threaded_library(name: str) -> None:
    """The rendered thread exports, run in bash: torch, numba and the BLAS numpy links see task.cpus."""
    script, _ = rendered(processes()[name], PARAM_SETS["test"](), full=True, cpus=3)
    commands, _ = command_lines(script)
    assert commands[0] == thread_command(3), script
    if name != "TRAIN_SENCA":  # one probe is enough: the line is the same in every module
        return
    # libraries cap their pools at the cores they see, so probe with 1 (below any machine's count)
    script, _ = rendered(processes()[name], PARAM_SETS["test"](), full=True, cpus=1)
    export = next(line for line in script.splitlines() if line.startswith("export "))
    assert "${" not in export and script.index(export) < script.index("senca ")
    probe = ("import json, numpy, numba, torch, threadpoolctl; "
             "blas = [p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas']; "
             "print(json.dumps({'torch': torch.get_num_threads(), 'numba': numba.config.NUMBA_NUM_THREADS, 'blas': blas}))")
    env = {k: v for k, v in task_env().items() if k not in THREAD_VARIABLES}
    out = subprocess.run(["bash", "-c", f"{export}\n{shlex.quote(sys.executable)} -c {shlex.quote(probe)}"],
                         env=env, capture_output=True, text=True, check=True, timeout=300)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["torch"] == 1 and seen["numba"] == 1, seen
    assert seen["blas"] and set(seen["blas"]) == {1}, seen


@pytest.mark.parametrize("name", sorted(COMMAND_OF))
def test_file_names_come_from_the_sample_not_ext_prefix(name: str) -> None:
    """Every file is named by meta.id, as senca names it: an ext.prefix set in a config changes
    nothing (it used to rename PREPROCESS's files only, so later stages missed their outputs)."""
    process = processes()[name]
    plain, scope = rendered(process, PARAM_SETS["test"](), full=True)
    prefixed, prefixed_scope = rendered(process, PARAM_SETS["test"](), full=True, prefix="renamed")
    assert plain == prefixed
    assert output_names(process, scope) == output_names(process, prefixed_scope)
    assert "ext.prefix" not in process.path.read_text(encoding="utf-8")


def documented_writes(command: str) -> set[str]:
    """Files a command's own help says it writes ("Writes ..." sentence), with {s} for the sample."""
    text = " ".join((cli_command(command).help or "").split())
    sentence = re.search(r"Writes (.+?)(?:\.\s+[A-Z]|\.$)", text)
    assert sentence, f"senca {command} --help does not say what it writes"
    names = re.findall(r"(\{s\}\.[\w.]+(?:<ext>)?|\b[a-z_]+\.(?:csv|parquet|json|html|png|pt|h5ad))", sentence.group(1))
    return {n.rstrip(".") for n in names}


@pytest.mark.parametrize("name", sorted(COMMAND_OF))
def test_declared_outputs_are_what_the_command_writes(name: str) -> None:
    process = processes()[name]
    _, scope = rendered(process, PARAM_SETS["test"](), full=True)
    declared = {(out.emit, n, out.optional) for out, names in output_names(process, scope | {"meta": {"id": "{s}"}})
                for n in names}
    # a leading * is the sample ({s}); any other * stands for a part of the name (<ext>)
    names = {re.sub(r"^\*", "{s}", n) for _, n, _ in declared} - {"versions.yml"}
    required = {re.sub(r"^\*", "{s}", n) for _, n, optional in declared if not optional} - {"versions.yml"}
    writes = documented_writes(COMMAND_OF[name])
    undocumented = {n for n in required if not any(fnmatch.fnmatchcase(w, n) for w in writes)}
    assert not undocumented, f"declared but not documented as written: {sorted(undocumented)}"
    undeclared = {w for w in writes if not any(fnmatch.fnmatchcase(w, n) for n in names)}
    assert not undeclared, f"written but not declared (would never be published): {sorted(undeclared)}"
    assert ("versions", "versions.yml", False) in declared


def expand_braces(text: str) -> list[str]:
    m = re.search(r"\{([^{}]*,[^{}]*)\}", text)
    if m is None:
        return [text]
    return [x for part in m.group(1).split(",") for x in expand_braces(text[:m.start()] + part + text[m.end():])]


def senca_run_layout() -> set[str]:
    """The output layout docs/cli.md gives for `senca run` (which the pipeline must match)."""
    block = re.search(r"Output layout.*?```\n(.*?)```", (REPO / "docs" / "cli.md").read_text(), re.S)
    assert block, "docs/cli.md has no senca run output layout"
    paths = set()
    for line in block.group(1).splitlines():
        line = re.sub(r"\s+\(.*\)\s*$", "", line.strip())
        words = line.split()
        if not words:
            continue
        folder = words[0].rsplit("/", 1)[0]
        for word in words:
            word = word if "/" in word else f"{folder}/{word}"
            paths.update(p.replace("DIR/", "").replace("<sample>", "S1") for p in expand_braces(word))
    return paths


def test_publish_layout_is_senca_runs() -> None:
    params = PARAM_SETS["test"]() | {"outdir": "OUT"}
    config = settings(params)
    published, unpublished = set(), set()
    for name, process in processes().items():
        _, scope = rendered(process, params, full=True)
        rules = config.get(f"withName:{name}", {}).get("publishDir", config["*"]["publishDir"])
        assert rules["mode"] == params["publish_dir_mode"]
        meta = {"id": "S1"}
        for _out, names in output_names(process, scope):
            # the chosen image, or the marker of an image-less slide: either one, never published
            names = [n.replace(".chosen_image.*", f".chosen_image.{ext}") for n in names for ext in ("png", "none")]
            for filename in dict.fromkeys(names):
                filename = filename.replace("*", "S1")
                target = rules["saveAs"](filename)
                if filename == "versions.yml":
                    assert target is None, f"{name}: versions.yml is collected, not published"
                    continue
                if target is None:
                    unpublished.add(f"{name}:{filename}")
                    continue
                folder = rules["path"].bind(meta=meta)() if isinstance(rules["path"], Closure) else rules["path"]
                assert folder.startswith("OUT"), folder
                published.add(f"{folder}/{target}".removeprefix("OUT/"))
    layout = senca_run_layout()
    # preprocess writes {s}.image.png (for `senca run` too) only for an .h5ad carrying its image;
    # docs/cli.md's layout does not list it yet.
    extra = published - layout
    assert extra <= {"S1/S1.image.png"}, sorted(extra)
    assert layout <= published, f"in senca run's layout, not published: {sorted(layout - published)}"
    # the image preprocess hands to embed-patches is the input image again: staged, never published
    assert unpublished == {"PREPROCESS:S1.chosen_image.png", "PREPROCESS:S1.chosen_image.none"}, sorted(unpublished)


# ----------------------------------------------------------------------------------------------
# Static: resources, GPU, retries, module files
# ----------------------------------------------------------------------------------------------
def test_labels_resources_gpu_and_containers() -> None:
    params = PARAM_SETS["defaults"]()
    base = settings(params)
    gpu = read_process_config(*CONFIGS, REPO / "conf" / "gpu.config", params=params)
    for name, process in processes().items():
        assert process.label in {"process_low", "process_medium", "process_gpu"}, name
        assert f"withLabel:{process.label}" in base, f"conf/base.config has no resources for {process.label}"
        assert (process.label == "process_gpu") == (name in GPU_PROCESSES), name
    assert base["*"]["container"] == params["container"]
    assert "container" not in base["withLabel:process_gpu"], "the CUDA image only with -profile gpu"
    assert "accelerator" not in base["withLabel:process_gpu"], "accelerators only with -profile gpu"
    on_gpu = gpu["withLabel:process_gpu"]
    assert on_gpu["accelerator"] == 1
    assert on_gpu["container"] == params["container_gpu"]
    options = {engine: on_gpu["containerOptions"].bind(workflow=Obj(containerEngine=engine))()
               for engine in ("docker", "singularity", "apptainer", None)}
    assert options == {"docker": "--gpus all", "singularity": "--nv", "apptainer": "--nv", None: None}
    assert read_params(REPO / "nextflow.config", REPO / "conf" / "gpu.config")["device"] == "cuda"


@pytest.mark.parametrize(("process", "exit_status", "attempt", "expected"), [
    ("TRAIN_SENCA", 137, 1, "retry"),        # killed for memory: more memory next time
    ("TRAIN_SENCA", 140, 2, "retry"),
    ("TRAIN_SENCA", 137, 3, "finish"),       # still failing: stop cleanly, the run fails
    ("PREPROCESS", 2, 1, "ignore"),          # senca's bad-input exit: drop that slide only
    ("PREPROCESS", 1, 1, "finish"),          # a crash / CUDA out of memory: not ignored
    ("PREPROCESS", 127, 1, "finish"),        # senca not on PATH
    ("EMBED_PATCHES", 125, 1, "finish"),     # the container engine failed
    ("EVALUATE", 137, 1, "retry"),
    ("EVALUATE", 2, 1, "terminate"),         # the cohort summary must not silently vanish
])
def test_error_strategy(process: str, exit_status: int, attempt: int, expected: str) -> None:
    """The closures as this renderer reads them; tests/test_nextflow_config.py asks Nextflow's own
    config front end the same for every exit status, attempt and profile."""
    config = settings(PARAM_SETS["defaults"]())
    strategy = config.get(f"withName:{process}", {}).get("errorStrategy", config["*"]["errorStrategy"])
    assert strategy.bind(task=Obj(exitStatus=exit_status, attempt=attempt))() == expected
    assert config["*"]["maxRetries"] >= 2


def test_memory_grows_with_each_attempt() -> None:
    text = (REPO / "conf" / "base.config").read_text()
    for line in re.findall(r"memory\s*=\s*\{([^}]*)\}", text):
        assert "task.attempt" in line, line


@pytest.mark.parametrize("name", sorted(COMMAND_OF))
def test_meta_yml_and_nf_test_describe_the_module(name: str) -> None:
    process = processes()[name]
    folder = process.path.parent
    meta = yaml.safe_load((folder / "meta.yml").read_text())
    assert meta["name"] == name.lower()
    assert "senca" in {next(iter(tool)) for tool in meta["tools"]}
    declared_inputs = [[e.name for e in line] for line in process.inputs]
    yml_inputs = [[next(iter(item)) for item in (group if isinstance(group, list) else [group])] for group in meta["input"]]
    assert yml_inputs == declared_inputs
    assert set(meta["output"]) == {out.emit for out in process.outputs}
    nf_test = (folder / "tests" / "main.nf.test").read_text()
    assert f'process "{name}"' in nf_test and 'options "-stub"' in nf_test


# ----------------------------------------------------------------------------------------------
# Dynamic: run what the modules render
# ----------------------------------------------------------------------------------------------
def task_env() -> dict[str, str]:
    """PATH as a Nextflow task sees it: the pipeline's bin/ first, then the environment's senca."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(REPO / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    return env


@dataclass
class Task:
    name: str
    folder: Path
    script: str
    outputs: dict[str, list[Path]] = field(default_factory=dict)
    undeclared: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def run_task(root: Path, process: Process, meta: dict[str, Any] | None, files: dict[str, Any],
             params: dict[str, Any], stub: bool = False) -> Task:
    """Stage ``files`` as Nextflow would, render the module, run it with bash, collect outputs."""
    folder = root / f"{process.name}-{meta['id'] if meta else 'cohort'}{'-stub' if stub else ''}"
    folder.mkdir(parents=True)
    inputs: dict[str, Any] = {}
    staged: set[Path] = set()
    for line in process.inputs:
        for e in line:
            if e.qualifier == "val":
                inputs[e.name] = meta
                continue
            value = files[e.name]
            paths = value if isinstance(value, list) else [value]
            names = FileList()
            for source in paths:
                target = folder / staged_name(e.stage_as, Path(source).name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(Path(source).resolve())
                staged.add(target)
                names.append(str(target.relative_to(folder)))
            inputs[e.name] = names if isinstance(value, list) and (value or process.name == "EVALUATE") else (
                names[0] if names else [])
    scope = process_scope(process, inputs, ext_args(settings(params), process.name, meta))
    script = render(process, scope, stub=stub)
    (folder / ".command.sh").write_text(script)
    proc = subprocess.run(["bash", "-ue", ".command.sh"], cwd=folder, env=task_env(), capture_output=True, text=True,
                          timeout=600)
    (folder / ".command.err").write_text(proc.stderr)
    assert proc.returncode == 0, f"{process.name} ({folder.name}) exit {proc.returncode}:\n{script}\n{proc.stderr[-3000:]}"
    task = Task(process.name, folder, script)
    matched: set[Path] = set()
    for out, patterns in output_names(process, scope):
        hits = [p for pattern in patterns for p in sorted(folder.glob(pattern)) if p not in staged]
        if not hits and not out.optional:
            task.missing.append(f"{out.emit}: {patterns}")
        task.outputs[out.emit] = hits
        matched.update(hits)
    written = {p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".command")} - staged
    task.undeclared = sorted(str(p.relative_to(folder)) for p in written - matched
                             if not any(s in p.parents for s in staged))
    return task


def run_slide(root: Path, spec: Any, params: dict[str, Any], full: bool) -> dict[tuple[str, str], Task]:
    """One slide through the modules, chained as workflows/senca.nf chains them (``full``: every
    stage; else PREPROCESS only)."""
    procs = processes()
    meta = {"id": spec.sample} | ({"n_clusters": spec.n_clusters} if spec.n_clusters else {})
    tasks: dict[tuple[str, str], Task] = {}

    def run(name: str, files: dict[str, Any]) -> Task:
        task = run_task(root, procs[name], meta, files, params)
        tasks[(name, spec.sample)] = task
        return task

    pre = run("PREPROCESS", {"data": spec.data, "image": spec.image or [], "positions": spec.positions or [],
                             "labels": spec.labels or []})
    if not full:
        return tasks
    [chosen] = pre.outputs["chosen_image"]  # always exactly one: the image preprocess chose, or the marker
    image = None if image_less(chosen) else chosen  # workflows/senca.nf's branch
    patches: Any = []
    if image is not None:
        emb = run("EMBED_PATCHES", {"spots": pre.outputs["spots"][0], "image": image, "weights": []})
        patches = emb.outputs["patches"][0]
    train = run("TRAIN_SENCA", {"spots": pre.outputs["spots"][0], "expr": pre.outputs["expr"][0],
                                "graph": pre.outputs["graph"][0], "patches": patches})
    clu = run("CLUSTER", {"embeddings": train.outputs["embeddings"][0], "spots": pre.outputs["spots"][0],
                          "h5ad": pre.outputs["h5ad"][0], "image": image or []})
    run("MARKERS", {"clusters": clu.outputs["clusters"][0], "h5ad": pre.outputs["h5ad"][0]})
    return tasks


@pytest.fixture(scope="module")
def demo_tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Task]:
    """The modules run on the demo slides. Every stage runs for the first slide with a samplesheet
    image and the first without any image (both routes through train-senca), PREPROCESS for the
    others (the Visium slide: its image route is checked against what preprocess resolved, without
    paying for a second CNN pass), then EVALUATE over the finished slides."""
    if not DEMO_SHEET.is_file():
        pytest.skip(f"demo samplesheet {DEMO_SHEET.relative_to(REPO)} not present")
    for command in COMMAND_OF.values():
        cli_command(command)
    from concurrent.futures import ThreadPoolExecutor

    from senca.io.samplesheet import read_samplesheet
    from senca.pipeline import may_use_image

    specs = read_samplesheet(DEMO_SHEET)
    chains = {next(s.sample for s in specs if s.image is not None), next(s.sample for s in specs if not may_use_image(s))}
    params = PARAM_SETS["test"]()
    root = tmp_path_factory.mktemp("nextflow-tasks")
    tasks: dict[tuple[str, str], Task] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:  # slides are independent, as in the pipeline
        for done in pool.map(lambda spec: run_slide(root, spec, params, spec.sample in chains), specs):
            tasks.update(done)
    finished = sorted(s for (name, s) in tasks if name == "MARKERS")
    clusters = [tasks[("CLUSTER", s)].outputs["clusters"][0] for s in finished]
    beside = [p for s in finished for p in tasks[("CLUSTER", s)].outputs["figures"]]
    beside += [p for s in finished for emit in ("markers", "figure") for p in tasks[("MARKERS", s)].outputs[emit]]
    beside += [p for s in finished if ("EMBED_PATCHES", s) in tasks for p in tasks[("EMBED_PATCHES", s)].outputs["qc"]]
    versions = root / "collated_versions.yml"
    versions.write_text("".join(t.folder.joinpath("versions.yml").read_text() for t in tasks.values()))
    tasks[("EVALUATE", "cohort")] = run_task(root, processes()["EVALUATE"], None,
                                             {"clusters": clusters, "beside": beside, "versions": [versions]}, params)
    return tasks


def image_less(chosen: Path) -> bool:
    """workflows/senca.nf's routing: PREPROCESS's chosen_image is the image-less marker (the branch's test,
    read from the workflow itself)."""
    return chosen.name.endswith(workflow_marker_suffix())


@functools.cache
def workflow_marker_suffix() -> str:
    text = (REPO / "workflows" / "senca.nf").read_text(encoding="utf-8")
    m = re.search(r"imageless:\s*image\.name\.endsWith\('([^']+)'\)", text)
    assert m, "workflows/senca.nf does not branch image-less slides on the chosen_image marker's name"
    return m.group(1)


def test_chosen_image_is_always_emitted() -> None:
    """PREPROCESS's chosen_image is not optional (an image or the marker): the workflow joins it with the
    spots plainly and each slide's route is known when its own task ends, not when the cohort's does."""
    [out] = [o for o in processes()["PREPROCESS"].outputs if o.emit == "chosen_image"]
    assert not out.optional
    from senca.preprocess import CHOSEN_IMAGE, NO_IMAGE_SUFFIX

    suffix = workflow_marker_suffix()  # the name senca writes is the name the workflow branches on
    assert f"S1.{CHOSEN_IMAGE}{NO_IMAGE_SUFFIX}".endswith(suffix)
    assert not any(f"S1.{CHOSEN_IMAGE}.{ext}".endswith(suffix) for ext in ("png", "jpg", "tif", "img"))


def test_patch_image_is_the_image_preprocess_resolved(demo_tasks: dict[tuple[str, str], Task]) -> None:
    """The image embed-patches gets (PREPROCESS.out.chosen_image) is the very image preprocess scaled the
    spots into and recorded in their metadata (the same bytes, the same size), or none when it chose none."""
    from PIL import Image

    from senca.io.artifacts import read_meta
    from senca.io.samplesheet import read_samplesheet

    for spec in read_samplesheet(DEMO_SHEET):
        pre = demo_tasks[("PREPROCESS", spec.sample)]
        image = (read_meta(pre.outputs["spots"][0], "spots").get("image") or {})
        chosen = pre.outputs["chosen_image"]
        if image.get("path") is None:
            assert [p.name for p in chosen] == [f"{spec.sample}.chosen_image.none"], spec.sample
            assert image_less(chosen[0]) and ("EMBED_PATCHES", spec.sample) not in demo_tasks, spec.sample
            continue
        assert not image_less(chosen[0]), spec.sample
        assert [p.name for p in chosen] == [f"{spec.sample}.chosen_image{Path(image['path']).suffix.lower()}"]
        assert chosen[0].read_bytes() == Path(image["path"]).read_bytes(), spec.sample
        with Image.open(chosen[0]) as pixels:
            assert pixels.size == (image["width"], image["height"]), spec.sample
        if ("EMBED_PATCHES", spec.sample) in demo_tasks:
            embed = demo_tasks[("EMBED_PATCHES", spec.sample)].script
            assert f"--image image/{chosen[0].name}" in embed, embed


def blank_hires_outs(folder: Path) -> Path:
    """A Space Ranger folder whose hires image is all black (image QC rejects it) beside a good lowres."""
    from PIL import Image

    from senca.synthetic import make_synthetic_slide

    slide = make_synthetic_slide(folder, sample="vis", fmt="visium", n_rows=8, n_cols=8, n_genes=60, n_regions=2,
                                 seed=1)
    spatial = slide.data / "spatial"
    hires = Image.open(spatial / "tissue_hires_image.png")
    hires.resize((hires.width // 4, hires.height // 4)).save(spatial / "tissue_lowres_image.png")
    Image.new("RGB", hires.size, (0, 0, 0)).save(spatial / "tissue_hires_image.png")
    return slide.data


def test_embed_patches_gets_the_image_preprocess_fell_back_to(tmp_path: Path) -> None:
    """hires fails image QC, preprocess falls back to lowres and scales the spots into it: the image the
    modules hand on is that lowres, and embed-patches runs on it. (The hires that main.nf used to pick up
    front would not match the spots: embed-patches refuses an image of another size.)"""
    outs = blank_hires_outs(tmp_path / "slide")
    params = PARAM_SETS["test"]()
    procs = processes()
    meta = {"id": "vis"}
    pre = run_task(tmp_path, procs["PREPROCESS"], meta, {"data": outs, "image": [], "positions": [], "labels": []},
                   params)
    assert "falling back to tissue_lowres_image.png" in (pre.folder / ".command.err").read_text()
    assert pre.missing == [] and pre.undeclared == []
    [chosen] = pre.outputs["chosen_image"]
    assert chosen.read_bytes() == (outs / "spatial" / "tissue_lowres_image.png").read_bytes()
    emb = run_task(tmp_path, procs["EMBED_PATCHES"], meta, {"spots": pre.outputs["spots"][0], "image": chosen,
                                                            "weights": []}, params)
    assert emb.missing == [] and emb.undeclared == []
    hires = outs / "spatial" / "tissue_hires_image.png"
    wrong = run_cli_task(tmp_path / "wrong", ["senca", "embed-patches", "--spots", str(pre.outputs["spots"][0]),
                                              "--image", str(hires), "--encoder", params["encoder"], "--outdir", "."])
    assert wrong.returncode == 2 and "spot coordinates were resolved for a" in wrong.stderr


@pytest.mark.parametrize(("how", "expected"), [
    ({"params": {"image_choice": "none"}}, None),
    ({"meta": {"image_choice": "none"}}, None),
    ({"meta": {"image_choice": "hires"}, "params": {"image_choice": "none"}}, "tissue_hires_image.png"),
    ({"params": {"image_choice": "lowres"}}, "tissue_lowres_image.png"),
])
def test_explicit_image_choice_decides_what_embed_patches_gets(tmp_path: Path, how: dict[str, Any],
                                                               expected: str | None) -> None:
    """--image_choice and the samplesheet keyword (meta.image_choice; it wins) decide the image preprocess
    hands on, even an image QC rejects (asked for explicitly); `none` hands on the marker: the slide runs
    image-less, as workflows/senca.nf routes a slide whose chosen_image is the marker."""
    outs = blank_hires_outs(tmp_path / "slide")
    params = PARAM_SETS["test"]() | how.get("params", {})
    meta = {"id": "vis"} | how.get("meta", {})
    pre = run_task(tmp_path, processes()["PREPROCESS"], meta, {"data": outs, "image": [], "positions": [],
                                                               "labels": []}, params)
    assert pre.missing == [] and pre.undeclared == []
    if expected is None:
        assert [p.name for p in pre.outputs["chosen_image"]] == ["vis.chosen_image.none"]
        assert image_less(pre.outputs["chosen_image"][0])
    else:
        assert [p.read_bytes() for p in pre.outputs["chosen_image"]] == [(outs / "spatial" / expected).read_bytes()]


def run_cli_task(folder: Path, tokens: list[str]) -> subprocess.CompletedProcess[str]:
    folder.mkdir(parents=True)
    return subprocess.run(tokens, cwd=folder, env=task_env(), capture_output=True, text=True, timeout=600)


def test_demo_covers_every_route(demo_tasks: dict[tuple[str, str], Task]) -> None:
    with_image = {s for (name, s) in demo_tasks if name == "EMBED_PATCHES"}
    trained = {s for (name, s) in demo_tasks if name == "TRAIN_SENCA"}
    assert with_image and trained - with_image, "the demo must have slides with and without an image"
    for sample in trained - with_image:
        assert "--patches" not in demo_tasks[("TRAIN_SENCA", sample)].script
    for sample in with_image:
        assert "--patches" in demo_tasks[("TRAIN_SENCA", sample)].script


@pytest.mark.parametrize("name", sorted(COMMAND_OF))
def test_demo_tasks_write_exactly_their_declared_outputs(demo_tasks: dict[tuple[str, str], Task], name: str) -> None:
    runs = [t for (n, _), t in demo_tasks.items() if n == name]
    assert runs, f"{name} never ran on the demo"
    for task in runs:
        assert task.missing == [], f"{task.folder.name}: declared outputs not written: {task.missing}"
        assert task.undeclared == [], f"{task.folder.name}: written but not declared: {task.undeclared}"
        versions = yaml.safe_load((task.folder / "versions.yml").read_text())
        assert versions == {name: {"senca": __version__}}


def test_evaluate_scores_the_labelled_demo_slides(demo_tasks: dict[tuple[str, str], Task]) -> None:
    import pandas as pd

    evaluate_task = demo_tasks[("EVALUATE", "cohort")]
    summary = pd.read_csv(evaluate_task.outputs["csv"][0])
    samples = sorted({s for (n, s) in demo_tasks if n == "CLUSTER"})
    assert sorted(summary["sample"]) == samples
    metrics = {p.name.split(".")[0] for p in evaluate_task.outputs["metrics"]}
    assert metrics == set(samples)  # every demo slide has labels
    assert "nan" not in summary["ari"].astype(str).str.lower().tolist()
    report = evaluate_task.outputs["report"][0].read_text()
    assert all(s in report for s in samples) and "data:image/png;base64" in report
    assert "Software versions" in report and "TRAIN_SENCA" in report  # collated from the stage tasks


@pytest.mark.parametrize("name", sorted(COMMAND_OF))
def test_stub_writes_every_required_output(tmp_path: Path, name: str) -> None:
    process = processes()[name]
    files = {}
    for line in process.inputs:
        for e in line:
            if e.qualifier == "path":
                placeholder = tmp_path / "inputs" / f"S1.{e.name}"
                placeholder.parent.mkdir(exist_ok=True)
                placeholder.touch()
                optional = e.name in OPTIONAL_INPUTS.get(name, set())
                files[e.name] = [placeholder] if name == "EVALUATE" else ([] if optional else placeholder)
    meta = None if name == "EVALUATE" else {"id": "S1"}
    task = run_task(tmp_path, process, meta, files, PARAM_SETS["test"](), stub=True)
    assert task.missing == [] and task.undeclared == []


@pytest.mark.parametrize(("image", "meta", "params", "routed"), [
    (True, {}, {}, True),                                          # the slide's own file
    (False, {}, {}, False),                                        # none: image-less
    (True, {}, {"image_choice": "none"}, False),                   # --image_choice none beats a file
    (True, {"image_choice": "none"}, {}, False),                   # the sheet's keyword
    (False, {"image_choice": "hires"}, {"image_choice": "none"}, True),  # a cell's keyword beats the param
])
def test_preprocess_stub_routes_slides_as_a_run_would(tmp_path: Path, image: bool, meta: dict[str, Any],
                                                      params: dict[str, Any], routed: bool) -> None:
    """`-stub` runs take the same route: the stub hands on an image where a real run would choose one
    (without QC: an image file, or a Space Ranger folder's spatial/ images), and the image-less marker where
    `none` is asked or there is no image, as a real run writes it."""
    data = tmp_path / "inputs" / ("outs" if meta.get("image_choice") == "hires" else "S1.tsv.gz")
    if data.name == "outs":
        (data / "spatial").mkdir(parents=True)
    else:
        data.parent.mkdir(parents=True)
        data.touch()
    he = tmp_path / "inputs" / "S1.jpg"
    he.touch()
    files = {"data": data, "image": he if image else [], "positions": [], "labels": []}
    task = run_task(tmp_path, processes()["PREPROCESS"], {"id": "S1"} | meta, files, PARAM_SETS["test"]() | params,
                    stub=True)
    assert task.missing == [] and task.undeclared == []
    assert [p.name for p in task.outputs["chosen_image"]] == (["S1.chosen_image.png"] if routed else
                                                              ["S1.chosen_image.none"])
    assert image_less(task.outputs["chosen_image"][0]) != routed


def test_bin_senca_runs_the_installed_cli(tmp_path: Path) -> None:
    launcher = REPO / "bin" / "senca"
    assert os.access(launcher, os.X_OK)
    out = subprocess.run([str(launcher), "--version"], env=task_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"senca, version {__version__}"
    # Without an installed senca on PATH it falls back to this repository's own sources.
    env = task_env() | {"PATH": f"{REPO / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin",
                        "SENCA_PYTHON": sys.executable}
    out = subprocess.run([str(launcher), "--version"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"senca, version {__version__}"


def test_bin_senca_under_nextflows_path(tmp_path: Path) -> None:
    """Nextflow appends bin/ to a task's PATH (TaskProcessor: "$PATH:<bin>"): an installed senca
    wins, and bin/senca runs only where there is none."""
    installed = str(Path(sys.executable).parent)
    appended = f"/usr/bin{os.pathsep}/bin{os.pathsep}{installed}{os.pathsep}{REPO / 'bin'}"
    found = subprocess.run(["bash", "-c", "command -v senca"], env=task_env() | {"PATH": appended},
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(found).parent == Path(installed), found
    bare = f"/usr/bin{os.pathsep}/bin{os.pathsep}{REPO / 'bin'}"
    env = task_env() | {"PATH": bare, "SENCA_PYTHON": sys.executable}
    found = subprocess.run(["bash", "-c", "command -v senca && senca --version"], env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert Path(found[0]) == REPO / "bin" / "senca" and found[-1] == __version__
    comment = " ".join(line.lstrip("# ") for line in (REPO / "bin" / "senca").read_text().splitlines()[1:10])
    assert "appends the pipeline's bin/" in comment and "first on" not in comment


@pytest.mark.parametrize(("expression", "expected"), [
    ("params.k ? \"--k ${params.k}\" : ''", ""),                       # null is false
    ("[\"--lr ${params.lr}\", params.k ? 'x' : '', '--q'].findAll().join(' ')", "--lr 0.0005 --q"),
    ("task.ext.args ?: ''", ""),
    ("\"${meta.id}\" + '.csv'", "S1.csv"),
    ("'a' in ['a', 'b'] && 3 in (1..3)", True),
    ("\"x ${files}\"", "x a.txt b.txt"),                                  # staged lists: blank-separated
])
def test_renderer_follows_groovy(expression: str, expected: Any) -> None:
    from decimal import Decimal

    scope = {"params": {"k": None, "lr": Decimal("0.0005")}, "task": Obj(ext=Obj()), "meta": {"id": "S1"},
             "files": FileList(["a.txt", "b.txt"])}
    value = evaluate(expression, scope)
    assert (value if isinstance(value, bool) else str(value)) == expected


def test_renderer_refuses_groovy_outside_its_subset() -> None:
    from nextflow_render import GroovySubsetError

    with pytest.raises(GroovySubsetError):
        evaluate("params.x.collect { it * 2 }", {"params": {"x": [1]}})
    with pytest.raises(GroovySubsetError, match="undefined name"):
        evaluate("nope ? 1 : 2", {})
