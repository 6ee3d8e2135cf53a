"""What `nextflow run` would configure, per profile, per documented command, per task.

Nextflow cannot run here, but its config front end can: ``tests/nextflow_config.py`` compiles the
pipeline's config files with Nextflow's own parser (the language server jar's nf-lang, on its
bundled Groovy 4) and applies Nextflow's rules for profiles, includes, ``withLabel``/``withName`` and
per-task closures. These tests ask it what a first run on a laptop, on Slurm, in the cloud and on
one GPU workstation gets: the executor, the image of each stage and whether the engine can pull
it, how the GPU is requested, the error strategy's decision for every exit status, the version
floor against the plugin pin, the submit rate; and they run ``main.nf``'s helper functions (the
samplesheet rows, the image check, the stale listing) on the same Groovy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from nextflow_config import (
    RESOURCE_EXITS,
    container_engine,
    parse_run_command,
    pipeline_processes,
    run_harness,
    run_request,
    script_functions,
    task_query,
)
from nextflow_nfschema import samplesheet_to_list

from nextflow_lsp import REPO, LspUnavailable, jar_or_skip

DOCS = REPO / "docs" / "nextflow.md"
README = REPO / "README.md"
MAIN = REPO / "main.nf"
SCHEMA = REPO / "assets" / "schema_input.json"
GPU_PROCESSES = {"EMBED_PATCHES", "TRAIN_SENCA"}
ENGINES = ("docker", "singularity", "apptainer")
DIRECTIVES = ["executor", "container", "containerOptions", "accelerator", "clusterOptions", "maxForks", "queue",
              "cpus"]
# nf-schema's minimum Nextflow per release (its build.gradle, `nextflowVersion`): 2.4.0-2.4.2 24.10.0,
# 2.5.0-2.5.1 25.04.0, 2.6.0-2.8.0 25.10.0.
NF_SCHEMA_MIN_NEXTFLOW = {"2.4": "24.10.0", "2.5": "25.04.0", "2.6": "25.10.0", "2.7": "25.10.0", "2.8": "25.10.0"}
# nf-schema 2.5.1's help flags (validation/config/HelpConfig.groovy: fullParameter, showHiddenParameter).
NF_SCHEMA_HELP_FLAGS = ("--help", "--helpFull", "--showHidden")
MAIN_FUNCTIONS = ["readSamplesheet", "imageKeyword", "resolveAgainst", "containerProblem", "pullableImage",
                  "removeStaleListing"]
PROFILE_SETS = {
    "defaults": [],
    "test": ["test"],
    "test,docker": ["test", "docker"],
    "gpu": ["gpu"],
    "slurm": ["slurm"],
    "gpu,slurm,singularity": ["gpu", "slurm", "singularity"],
    "slurm,singularity,gpu": ["slurm", "singularity", "gpu"],
    "gpu,local,docker": ["gpu", "local", "docker"],
    "local,docker,gpu": ["local", "docker", "gpu"],
}


@pytest.fixture(scope="module")
def jar() -> Path:
    return jar_or_skip("nextflow config")


# ------------------------------------------------------------------------------------------------
# The documented commands: docs/nextflow.md's "First run" section and README's Slurm one-liner
# ------------------------------------------------------------------------------------------------
def first_run_section() -> str:
    text = DOCS.read_text(encoding="utf-8")
    m = re.search(r"^## First run.*?(?=^## )", text, flags=re.S | re.M)
    assert m, "docs/nextflow.md has no '## First run' section"
    return m.group(0)


def doc_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def doc_commands(section: str) -> list[str]:
    """Every `nextflow run` command of the section's bash blocks (continuation lines joined)."""
    commands = []
    for block in doc_blocks(section, "bash"):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split(" #", 1)[0].strip()
            if command.startswith("nextflow run "):
                commands.append(" ".join(command.split()))
    return commands


def doc_configs(section: str, folder: Path) -> dict[str, Path]:
    """The section's config files (a groovy block whose first line is `// NAME.config`), written out."""
    written = {}
    for block in doc_blocks(section, "groovy"):
        first = block.splitlines()[0].strip()
        m = re.fullmatch(r"//\s*([\w.-]+\.config)", first)
        if m:
            path = folder / m.group(1)
            path.write_text(block, encoding="utf-8")
            written[m.group(1)] = path
    return written


def readme_slurm_command() -> str:
    row = next((line for line in README.read_text(encoding="utf-8").splitlines() if "Slurm with GPUs" in line), None)
    assert row, "README has no 'cohort on Slurm with GPUs' row"
    m = re.search(r"`(nextflow run [^`]+)`", row)
    assert m, row
    return m.group(1)


def engine_of(profiles: list[str]) -> str | None:
    return next((p for p in profiles if p in ENGINES), None)


def every_process_query(engine: str | None) -> list[dict[str, Any]]:
    return [task_query(p["name"], DIRECTIVES, engine=engine) for p in pipeline_processes()]


@pytest.fixture(scope="module")
def resolved(jar: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every configuration the tests look at, resolved in one JVM: {name: run}, where a run has
    ``config``, ``processes`` and ``tasks`` ({process: {directive: value}})."""
    folder = tmp_path_factory.mktemp("launch")
    section = first_run_section()
    configs = doc_configs(section, folder)
    runs: dict[str, dict[str, Any]] = {}
    for name, profiles in PROFILE_SETS.items():
        runs[name] = run_request(profiles, params={"input": "samplesheet.csv"}, tasks=every_process_query(engine_of(profiles)))
    commands = {f"docs: {c}": c for c in doc_commands(section)} | {f"README: {readme_slurm_command()}": readme_slurm_command()}
    for name, command in commands.items():
        parsed = parse_run_command(command)
        missing = [c for c in parsed["configs"] if c not in configs]
        assert not missing, f"{command}: -c {missing} not given on the page"
        runs[name] = run_request(parsed["profiles"], params=parsed["params"], launch_dir=folder,
                                 configs=[configs[c] for c in parsed["configs"]],
                                 tasks=every_process_query(engine_of(parsed["profiles"])))
        runs[name]["command"] = parsed
    # A site that overrides the GPU request in its own config (-c): its value wins.
    override = folder / "site.config"
    override.write_text("process {\n    withLabel: 'process_gpu' {\n        clusterOptions = '--gres=gpu:a100:1 --account=lab'\n    }\n}\n")
    runs["site override"] = run_request(["gpu", "slurm", "singularity"], params={"input": "samplesheet.csv"},
                                        configs=[override], tasks=every_process_query("singularity"))
    # The error strategy: every exit status, every attempt, every process, without and with -profile gpu.
    for profiles in ([], ["gpu"]):
        queries = [task_query(p["name"], ["decision"], attempt=attempt, exit_status=status)
                   for p in pipeline_processes() for status in range(256) for attempt in (1, 2, 3)]
        runs[f"errors {','.join(profiles) or 'defaults'}"] = run_request(profiles, tasks=queries)
    # nf-test's view: the pipeline config plus tests/nextflow.config
    runs["nf-test"] = run_request(["test"], configs=[REPO / "tests" / "nextflow.config"])
    names = list(runs)
    answer = harness({"runs": [{k: v for k, v in runs[n].items() if k != "command"} for n in names]}, jar)
    out = {}
    for name, result in zip(names, answer["runs"], strict=True):
        result["name"] = name
        result["command"] = runs[name].get("command")
        result["queries"] = runs[name]["tasks"]
        out[name] = result
    return out


def harness(request: dict[str, Any], jar: Path) -> dict[str, Any]:
    try:
        return run_harness(request, jar=jar)
    except LspUnavailable as exc:
        pytest.skip(f"nextflow config: skipped: {exc}")


def by_process(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert "error" not in run, f"{run['name']}: {run.get('error')}"
    return {q["process"]: answer for q, answer in zip(run["queries"], run["tasks"], strict=True)}


def call_main(jar: Path, calls: list[dict[str, Any]], rows: list[Any] | None = None) -> list[dict[str, Any]]:
    request = {"functions": {"sources": script_functions(MAIN, MAIN_FUNCTIONS),
                             "binding": {"projectDir": str(REPO), "samplesheetRows": rows or []},
                             "calls": calls}}
    return harness(request, jar)["calls"]


# ------------------------------------------------------------------------------------------------
# 1. The version floor and the plugin pin agree (config, README, docs)
# ------------------------------------------------------------------------------------------------
def version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def test_nextflow_floor_is_the_plugin_pins_minimum(resolved: dict[str, Any]) -> None:
    config = resolved["defaults"]["config"]
    floor = re.fullmatch(r"!?>=\s*(\d+\.\d+\.\d+)", config["manifest"]["nextflowVersion"])
    assert floor, config["manifest"]["nextflowVersion"]
    assert config["manifest"]["nextflowVersion"].startswith("!"), "an older Nextflow must stop, not only warn"
    [pin] = [p for p in config["plugins"] if p.startswith("nf-schema@")]
    plugin_version = pin.split("@", 1)[1]
    minimum = NF_SCHEMA_MIN_NEXTFLOW[".".join(plugin_version.split(".")[:2])]
    # The floor must be no lower than what the plugin needs (else the plugin fails to load), and not
    # higher than needed either: that is the version the docs promise.
    assert floor.group(1) == minimum, f"nf-schema {plugin_version} needs Nextflow {minimum}, manifest asks {floor.group(1)}"
    short = ".".join(minimum.split(".")[:2])
    for path in (README, DOCS):
        text = path.read_text(encoding="utf-8")
        claims = set(re.findall(r"Nextflow >= ?(\d+\.\d+(?:\.\d+)?)", text))
        assert claims, f"{path.name} states no Nextflow version"
        assert all(version(c)[:2] == version(short) for c in claims), f"{path.name}: Nextflow >= {sorted(claims)}, pin needs {minimum}"
    offline = re.findall(r"nf-schema@([\d.]+)", DOCS.read_text(encoding="utf-8"))
    assert offline and set(offline) == {plugin_version}, f"docs name nf-schema {set(offline)}, config pins {plugin_version}"


def test_version_table_matches_the_floor_rule() -> None:
    # the table drives the check above: a pin on 2.4.x would allow 24.10, on 2.6.x it needs 25.10
    assert version(NF_SCHEMA_MIN_NEXTFLOW["2.4"]) < version(NF_SCHEMA_MIN_NEXTFLOW["2.5"]) < version(NF_SCHEMA_MIN_NEXTFLOW["2.6"])


# ------------------------------------------------------------------------------------------------
# 2. GPUs are requested the way each executor takes them; 6. only -profile gpu switches images;
# 7. the local executor runs one GPU task at a time
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpu,slurm,singularity", "slurm,singularity,gpu"])
def test_slurm_gpu_stages_ask_slurm_for_the_gpu(resolved: dict[str, Any], name: str) -> None:
    tasks = by_process(resolved[name])
    for process, task in tasks.items():
        assert task["executor"] == "slurm", process
        if process in GPU_PROCESSES:
            assert task["clusterOptions"] == "--gres=gpu:1", (process, task)
            assert task["accelerator"] == 1 and task["containerOptions"] == "--nv", (process, task)
        else:
            assert task["clusterOptions"] is None and task["accelerator"] is None, (process, task)
    assert resolved[name]["config"]["params"]["device"] == "cuda"


def test_no_gpu_request_without_the_gpu_profile_or_off_slurm(resolved: dict[str, Any]) -> None:
    for name in ("slurm", "defaults", "test,docker"):
        for process, task in by_process(resolved[name]).items():
            assert task["clusterOptions"] is None and task["accelerator"] is None, (name, process, task)
    for process, task in by_process(resolved["gpu"]).items():   # local executor: no Slurm options
        assert task["clusterOptions"] is None, (process, task)
        assert task["accelerator"] == (1 if process in GPU_PROCESSES else None), (process, task)


def test_a_site_config_replaces_the_gpu_request(resolved: dict[str, Any]) -> None:
    tasks = by_process(resolved["site override"])
    for process in GPU_PROCESSES:
        assert tasks[process]["clusterOptions"] == "--gres=gpu:a100:1 --account=lab"


def test_docs_say_how_each_executor_takes_the_gpu() -> None:
    section = " ".join(first_run_section().split())
    for needle in ("accelerator = 1", "--gres=gpu:1", "maxForks = 1", "26.10", "clusterOptions"):
        assert needle in section, needle
    gpu_config = (REPO / "conf" / "gpu.config").read_text(encoding="utf-8")
    assert "Slurm executor ignores `accelerator`" in gpu_config


@pytest.mark.parametrize("name", ["defaults", "test", "test,docker", "slurm"])
def test_without_the_gpu_profile_every_stage_gets_the_cpu_image(resolved: dict[str, Any], name: str) -> None:
    params = resolved[name]["config"]["params"]
    for process, task in by_process(resolved[name]).items():
        assert task["container"] == params["container"], (name, process, task["container"])
        assert task["containerOptions"] is None, (name, process)


@pytest.mark.parametrize("name", ["gpu", "gpu,slurm,singularity", "gpu,local,docker"])
def test_the_gpu_profile_gives_only_gpu_stages_the_cuda_image(resolved: dict[str, Any], name: str) -> None:
    params = resolved[name]["config"]["params"]
    for process, task in by_process(resolved[name]).items():
        expected = params["container_gpu"] if process in GPU_PROCESSES else params["container"]
        assert task["container"] == expected, (name, process, task["container"])


@pytest.mark.parametrize("name", ["gpu,local,docker", "local,docker,gpu"])
def test_local_executor_runs_one_gpu_task_at_a_time(resolved: dict[str, Any], name: str) -> None:
    for process, task in by_process(resolved[name]).items():
        assert task["executor"] == "local"
        assert task["maxForks"] == (1 if process in GPU_PROCESSES else None), (process, task)
        if process in GPU_PROCESSES:
            assert task["containerOptions"] == "--gpus all"
    for process, task in by_process(resolved["gpu,slurm,singularity"]).items():
        assert task["maxForks"] is None, f"{process}: the GPU bound must not throttle a cluster"


# ------------------------------------------------------------------------------------------------
# The documented first-run commands resolve to a configuration that works
# ------------------------------------------------------------------------------------------------
def documented_runs(resolved: dict[str, Any]) -> list[dict[str, Any]]:
    runs = [run for name, run in resolved.items() if name.startswith(("docs: ", "README: "))]
    assert len(runs) >= 6, [r["name"] for r in runs]
    return runs


def test_documented_commands_cover_each_kind_of_first_run(resolved: dict[str, Any]) -> None:
    executors = set()
    for run in documented_runs(resolved):
        executors |= {task["executor"] for task in by_process(run).values()}
    assert {"slurm", "awsbatch", "google-batch", "local"} <= executors, executors
    assert any("local" in r["command"]["profiles"] and "gpu" in r["command"]["profiles"] for r in documented_runs(resolved)), \
        "no one-GPU-workstation command"


def test_documented_commands_resolve_and_validate(resolved: dict[str, Any]) -> None:
    from test_nextflow_schema import params_errors

    for run in documented_runs(resolved):
        assert "error" not in run, f"{run['name']}: {run.get('error')}"
        unknown = set(run["command"]["profiles"]) - set(run["declaredProfiles"])
        assert not unknown, f"{run['name']}: unknown profiles {unknown}"
        values = dict(run["config"]["params"])
        if values.get("input") is None:   # the laptop demo sets it through -profile test
            values["input"] = "samplesheet.csv"
        assert params_errors(values) == [], run["name"]


def test_documented_gpu_commands_get_a_gpu_on_their_executor(resolved: dict[str, Any]) -> None:
    for run in documented_runs(resolved):
        if "gpu" not in run["command"]["profiles"]:
            continue
        tasks = by_process(run)
        for process in GPU_PROCESSES:
            task = tasks[process]
            executor = task["executor"]
            if executor == "slurm":
                assert "--gres=gpu:" in (task["clusterOptions"] or ""), (run["name"], process, task)
            elif executor == "google-batch":
                assert isinstance(task["accelerator"], dict) and task["accelerator"].get("type"), (run["name"], task)
            elif executor == "local":
                assert task["maxForks"] == 1, (run["name"], task)
            else:
                assert task["accelerator"] in (1, {"request": 1}), (run["name"], task)
            assert task["containerOptions"] in ("--nv", "--gpus all"), (run["name"], task)


def test_documented_commands_use_images_their_engine_can_pull(jar: Path, resolved: dict[str, Any]) -> None:
    runs = documented_runs(resolved)
    calls = []
    for run in runs:
        params = run["config"]["params"]
        engine = container_engine(run["config"])
        calls.append({"fn": "containerProblem", "args": [engine, ",".join(run["command"]["profiles"]),
                                                          params["container"], params["container_gpu"]]})
    for run, answer in zip(runs, call_main(jar, calls), strict=True):
        assert answer.get("value") is None, f"{run['name']}: {answer}"
        executors = {t["executor"] for t in by_process(run).values()}
        if executors & {"awsbatch", "google-batch"}:   # a cloud service pulls from a registry too
            for image in (run["config"]["params"]["container"], run["config"]["params"]["container_gpu"]):
                assert "/" in image and "." in image.split("/")[0], (run["name"], image)


# ------------------------------------------------------------------------------------------------
# 3. The error strategy's decision for every exit status
# ------------------------------------------------------------------------------------------------
def decisions(resolved: dict[str, Any], profile: str) -> dict[tuple[str, int, int], str]:
    run = resolved[f"errors {profile}"]
    assert "error" not in run, run.get("error")
    return {(q["process"], q["task"]["exitStatus"], q["task"]["attempt"]): a["decision"]
            for q, a in zip(run["queries"], run["tasks"], strict=True)}


def expected_decision(process: str, status: int, attempt: int, gpu_profile: bool) -> str:
    if status in RESOURCE_EXITS:
        if attempt <= 2:
            return "retry"
        return "terminate" if process == "EVALUATE" else "finish"
    if process == "EVALUATE":
        return "terminate"          # the cohort summary must not silently vanish
    if status == 2 and not (gpu_profile and process in GPU_PROCESSES):
        return "ignore"             # senca's bad-input exit: that slide only
    return "finish"                 # infrastructure: stop cleanly, report failure


@pytest.mark.parametrize("profile", ["defaults", "gpu"])
def test_error_strategy_decides_by_exit_status(resolved: dict[str, Any], profile: str) -> None:
    table = decisions(resolved, profile)
    wrong = {key: got for key, got in table.items()
             if got != expected_decision(key[0], key[1], key[2], profile == "gpu")}
    assert not wrong, f"{len(wrong)} wrong decisions, e.g. {sorted(wrong.items())[:8]}"


@pytest.mark.parametrize(("status", "why"), [
    (1, "a crash or CUDA out of memory"), (125, "the container engine failed (image missing)"),
    (126, "senca not executable"), (127, "senca not on PATH"), (0, "exit 0 but outputs missing"),
])
def test_infrastructure_failures_are_never_ignored(resolved: dict[str, Any], status: int, why: str) -> None:
    for profile in ("defaults", "gpu"):
        table = decisions(resolved, profile)
        for process in {p["name"] for p in pipeline_processes()}:
            assert table[(process, status, 1)] in ("finish", "terminate"), (profile, process, status, why)


def test_only_the_bad_input_exit_is_ignored(resolved: dict[str, Any]) -> None:
    for profile in ("defaults", "gpu"):
        ignored = {status for (_p, status, _a), got in decisions(resolved, profile).items() if got == "ignore"}
        assert ignored == {2}, (profile, ignored)


def test_gpu_stage_without_a_gpu_fails_the_run(resolved: dict[str, Any]) -> None:
    # --device cuda on a node with no visible GPU: senca exits 2, and under -profile gpu that must
    # not drop the slide silently (the failure every slide on a misconfigured cluster would have)
    table = decisions(resolved, "gpu")
    for process in GPU_PROCESSES:
        assert table[(process, 2, 1)] == "finish"
    assert table[("PREPROCESS", 2, 1)] == "ignore"


# ------------------------------------------------------------------------------------------------
# 4. A bare image name under Singularity/Apptainer stops the run at start-up, naming the param
# ------------------------------------------------------------------------------------------------
def test_unpullable_images_fail_in_one_line_naming_the_param(jar: Path, resolved: dict[str, Any]) -> None:
    params = resolved["gpu,slurm,singularity"]["config"]["params"]
    calls = [
        {"fn": "containerProblem", "args": ["singularity", "gpu,slurm,singularity", params["container"], params["container_gpu"]]},
        {"fn": "containerProblem", "args": ["apptainer", "slurm,apptainer", params["container"], params["container_gpu"]]},
        {"fn": "containerProblem", "args": ["singularity", "gpu,slurm,singularity", "registry.example.org/senca/senca-st:0.1.0",
                                             params["container_gpu"]]},
        {"fn": "containerProblem", "args": ["docker", "gpu,docker", params["container"], params["container_gpu"]]},
        {"fn": "containerProblem", "args": [None, "test", params["container"], params["container_gpu"]]},
        {"fn": "containerProblem", "args": ["singularity", "gpu,singularity", "/shared/senca.sif", "docker://x/senca-st:cuda"]},
        {"fn": "containerProblem", "args": ["singularity", "singularity", "myorg/senca-st:0.1.0", "senca-st:0.1.0-cuda"]},
    ]
    both, cpu_only, gpu_only, docker, no_engine, files, namespaced = (a.get("value") for a in call_main(jar, calls))
    assert both and "\n" not in both and "--container " in both and "--container_gpu" in both, both
    assert cpu_only and "--container " in cpu_only and "--container_gpu" not in cpu_only, cpu_only  # CUDA image unused
    assert gpu_only and "--container_gpu" in gpu_only and "--container " not in gpu_only, gpu_only
    assert docker is None and no_engine is None and files is None and namespaced is None
    main = MAIN.read_text(encoding="utf-8")
    assert re.search(r"containerProblem\(workflow\.containerEngine, workflow\.profile, params\.container, params\.container_gpu\)", main)
    assert main.index("containerProblem(workflow") < main.index("SENCA(ch_slides"), "checked before any task"


def test_default_images_with_singularity_are_refused(jar: Path, resolved: dict[str, Any]) -> None:
    # what the README's old one-liner did: no --container, so docker://senca-st:0.1.0
    run = resolved["gpu,slurm,singularity"]
    params = run["config"]["params"]
    [answer] = call_main(jar, [{"fn": "containerProblem", "args": [container_engine(run["config"]), "gpu,slurm,singularity",
                                                                    params["container"], params["container_gpu"]]}])
    assert answer["value"] and "docs/nextflow.md" in answer["value"]


# ------------------------------------------------------------------------------------------------
# 5. Numeric sample ids: nf-schema makes 151673 an Integer; main.nf makes it text again
# ------------------------------------------------------------------------------------------------
def test_numeric_sample_ids_become_text_in_main_nf(jar: Path, tmp_path: Path) -> None:
    (tmp_path / "151673" / "spatial").mkdir(parents=True)
    (tmp_path / "151673" / "spatial" / "tissue_hires_image.png").write_bytes(b"")
    (tmp_path / "A1.tsv.gz").write_bytes(b"")
    (tmp_path / "A1_spots.tsv").write_text("")
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("sample,data,image,positions,labels,n_clusters\n"
                     "151673,151673,,,,7\n"
                     "A1,A1.tsv.gz,,A1_spots.tsv,,\n", encoding="utf-8")
    rows = samplesheet_to_list(sheet, SCHEMA)
    assert rows[0][0]["id"] == 151673 and rows[0][1] == 151673, "nf-schema's typing, emulated"
    [answer] = call_main(jar, [{"fn": "readSamplesheet", "args": [str(sheet)]}], rows=rows)
    slides = answer["value"]
    metas = [slide[0] for slide in slides]
    assert metas == [{"id": "151673", "n_clusters": 7}, {"id": "A1", "n_clusters": []}]
    assert slides[0][1] == {"path": str(tmp_path / "151673")}
    assert slides[0][2] == []  # no image guessed from outs/spatial: preprocess chooses it (after QC)


def test_whole_numbers_written_as_decimals_are_refused(jar: Path, tmp_path: Path) -> None:
    # 1e5 and 2. pass the schema (JSON integers) but arrive as BigDecimals whose text is 1E+5 / 2
    (tmp_path / "outs").mkdir()
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("sample,data,image,positions,labels,n_clusters\n1e5,outs,,,,\n2.,outs,,,,\n7,outs,,,,\n")
    [answer] = call_main(jar, [{"fn": "readSamplesheet", "args": [str(sheet)]}], rows=samplesheet_to_list(sheet, SCHEMA))
    assert "2 problem(s)" in answer["abort"] and answer["abort"].count("add a letter") == 2, answer


def test_image_keywords_reach_preprocess_as_meta_not_as_files(jar: Path, tmp_path: Path) -> None:
    """`image` = hires / lowres / none (any case) is the slide's own image by name: meta.image_choice for
    PREPROCESS, never a missing file; auto is an empty cell; a file is still a file, checked to exist."""
    for name in ("a", "b", "c", "d", "e", "f"):
        (tmp_path / name / "spatial").mkdir(parents=True)
    (tmp_path / "he.png").write_bytes(b"")
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("sample,data,image,positions,labels,n_clusters\n"
                     "a,a,hires,,,\nb,b,LowRes,,,\nc,c,none,,,\nd,d,auto,,,\ne,e,he.png,,,\nf,f,,,,\n", encoding="utf-8")
    rows = samplesheet_to_list(sheet, SCHEMA)
    assert [row[2] for row in rows] == ["hires", "LowRes", "none", "auto", "he.png", []], "nf-schema's typing, emulated"
    [answer] = call_main(jar, [{"fn": "readSamplesheet", "args": [str(sheet)]}], rows=rows)
    assert "abort" not in answer, answer
    slides = answer["value"]
    assert [slide[0].get("image_choice") for slide in slides] == ["hires", "lowres", "none", None, None, None]
    assert [slide[2] for slide in slides] == [[], [], [], [], {"path": str(tmp_path / "he.png")}, []]
    (tmp_path / "he.png").unlink()
    [answer] = call_main(jar, [{"fn": "readSamplesheet", "args": [str(sheet)]}], rows=rows)
    assert "1 problem(s)" in answer["abort"] and "sample e: image not found" in answer["abort"], answer


def test_main_nf_guesses_no_image_before_preprocessing() -> None:
    """The image embed-patches gets is the one preprocess chose (PREPROCESS.out.chosen_image), never one
    main.nf picked from the samplesheet or outs/spatial beforehand (QC may reject it, a choice may skip it)."""
    main = MAIN.read_text(encoding="utf-8")
    workflow = (REPO / "workflows" / "senca.nf").read_text(encoding="utf-8")
    for text in (main, workflow):
        assert "patchImage" not in text and "ch_known_images" not in text and "tissue_hires_image" not in text
    assert "SENCA(ch_slides, ch_weights)" in main
    routed = re.search(r"ch_routed = PREPROCESS\.out\.spots\s*\.join\(([^)]*)\)", workflow)
    assert routed and routed.group(1) == "PREPROCESS.out.chosen_image", routed
    assert re.search(r"EMBED_PATCHES\(ch_routed\.with_image\b", workflow)
    assert "ch_routed.with_image" in workflow.split("CLUSTER(")[0].split("ch_image_or_none")[1]


def test_every_slide_is_routed_when_its_own_preprocess_ends() -> None:
    """chosen_image is always emitted (the image, or the marker {s}.chosen_image.none), so the route joins
    the spots with it plainly, as outputs of one task, and branches on the marker's name: no remainder
    join (which hands on an unmatched key only when the whole channel completes, i.e. after the cohort's
    last preprocess) decides a slide's route."""
    from senca.preprocess import CHOSEN_IMAGE, NO_IMAGE_SUFFIX

    workflow = (REPO / "workflows" / "senca.nf").read_text(encoding="utf-8")
    module = (REPO / "modules" / "local" / "preprocess" / "main.nf").read_text(encoding="utf-8")
    [output] = [line for line in module.splitlines() if "emit: chosen_image" in line]
    assert "optional" not in output, output
    block = re.search(r"ch_routed = (.*?)\n\s*\n", workflow, re.S)
    assert block, "workflows/senca.nf has no ch_routed"
    route = block.group(1)
    assert "remainder" not in route and "null" not in route, route
    branch = re.search(r"\.branch \{ _meta, _spots, image ->\s*imageless: image\.name\.endsWith\('([^']+)'\)\s*"
                       r"with_image: true\s*\}", route)
    assert branch, route
    assert f"S1.{CHOSEN_IMAGE}{NO_IMAGE_SUFFIX}".endswith(branch.group(1))
    assert not f"S1.{CHOSEN_IMAGE}.png".endswith(branch.group(1))
    # the image-less route keeps handing CLUSTER [] and EMBED_PATCHES only real images
    assert "ch_routed.imageless.map { meta, _spots, _image -> [meta, []] }" in workflow.split("CLUSTER(")[0]
    assert "last preprocess" not in workflow and "once every preprocess" not in workflow


def test_missing_files_are_reported_together(jar: Path, tmp_path: Path) -> None:
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("sample,data,image,positions,labels,n_clusters\n1,gone.h5ad,,,,\n2,also_gone.h5ad,,,,\n")
    [answer] = call_main(jar, [{"fn": "readSamplesheet", "args": [str(sheet)]}], rows=samplesheet_to_list(sheet, SCHEMA))
    assert "2 problem(s)" in answer["abort"] and "sample 1: data not found" in answer["abort"], answer


# ------------------------------------------------------------------------------------------------
# 8. A stale incomplete_samples.txt does not survive the next run
# ------------------------------------------------------------------------------------------------
def test_stale_incomplete_listing_is_removed_at_start(jar: Path, tmp_path: Path) -> None:
    listing = tmp_path / "pipeline_info" / "incomplete_samples.txt"
    listing.parent.mkdir()
    listing.write_text("A1\n")
    removed, absent = call_main(jar, [{"fn": "removeStaleListing", "args": [str(listing)]},
                                      {"fn": "removeStaleListing", "args": [str(tmp_path / "none.txt")]}])
    assert not listing.exists() and removed["log"], removed
    assert "abort" not in absent and absent["log"] == []
    main = MAIN.read_text(encoding="utf-8")
    call = main.index('removeStaleListing("${params.outdir}/pipeline_info/incomplete_samples.txt")')
    assert call < main.index("SENCA(ch_slides") < main.index("name: 'incomplete_samples.txt'"), \
        "removed before the run writes its own listing"


# ------------------------------------------------------------------------------------------------
# Conventions: submit rate, help flags, strict-safe joins, nf-test config
# ------------------------------------------------------------------------------------------------
DURATION_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60,
                    "minutes": 60, "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}


def submit_rate(limit: str) -> float:
    """Jobs per second, as nextflow.util.RateUnit parses it: `N/duration`, or `N unit` = N per unit
    (so '10 sec' is ten a second, not one every ten seconds)."""
    def seconds(text: str) -> float:
        m = re.fullmatch(r"(\d*)\s*([a-z]+)?", text.strip())
        assert m, text
        return (int(m.group(1)) if m.group(1) else 1) * DURATION_SECONDS[m.group(2) or "sec"]

    if "/" in limit:
        count, duration = limit.split("/")
        return int(count) / seconds(duration)
    m = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", limit.strip())
    assert m, limit
    return int(m.group(1)) / seconds(m.group(2) or "sec")


def test_submit_rate_is_what_its_comment_says(resolved: dict[str, Any]) -> None:
    assert submit_rate("10 sec") == 10 and submit_rate("10/1min") == pytest.approx(1 / 6)
    limit = resolved["slurm"]["config"]["executor"]["submitRateLimit"]
    rate = submit_rate(limit)
    assert rate <= 5, f"{limit} is {rate} sbatch calls a second: too many for a shared slurmctld"
    comment = re.search(r"submitRateLimit\s*=\s*'[^']*'\s*//\s*(.*)", (REPO / "nextflow.config").read_text())
    assert comment and re.search(rf"\b{rate:g} job submissions per second", comment.group(1)), comment
    assert f"{rate:g} submitted per second" in DOCS.read_text(encoding="utf-8")


def test_docs_use_nf_schemas_help_flags() -> None:
    for path in (DOCS, MAIN):
        text = path.read_text(encoding="utf-8")
        assert "--help_full" not in text and "--show_hidden" not in text, path.name
    docs = DOCS.read_text(encoding="utf-8")
    for flag in NF_SCHEMA_HELP_FLAGS:
        assert f"`{flag}" in docs, flag


def receiver_chain(text: str, dot: int) -> tuple[str, list[str]]:
    """The head of the method chain ending just before ``text[dot]`` (a '.'), and the chain's methods:
    ``A.out.x.join(B).join(C)`` before its last '.join' is ('A.out.x', ['join'])."""
    methods: list[str] = []
    pos = dot
    while True:
        while pos > 0 and text[pos - 1].isspace():
            pos -= 1
        if text[pos - 1] in ")}":   # a call (or a closure argument): skip its arguments, read its name
            close, open_ = text[pos - 1], {")": "(", "}": "{"}[text[pos - 1]]
            depth, pos = 1, pos - 1
            while depth:
                pos -= 1
                depth += {close: 1, open_: -1}.get(text[pos], 0)
            name = re.search(r"(\w+)\s*$", text[:pos])
            assert name, text[max(0, pos - 40):dot]
            methods.append(name.group(1))
            pos = name.start()
            assert text[pos - 1] == ".", text[max(0, pos - 40):dot]
            pos -= 1
            continue
        head = re.search(r"([\w.]+)$", text[:pos])
        assert head, text[max(0, pos - 40):dot]
        return head.group(1), methods[::-1]


def join_calls(text: str) -> list[tuple[str, list[str], str]]:
    """(receiver head, receiver chain methods, join arguments) for every `.join(` of a workflow."""
    calls = []
    for m in re.finditer(r"\.join\(", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        head, methods = receiver_chain(text, m.start())
        calls.append((head, methods, text[m.end():i - 1]))
    return calls


def test_joins_are_strict_mode_safe() -> None:
    # Under strict mode a join fails on unmatched keys unless `remainder: true` (JoinOp: failOnMismatch =
    # option || (!remainder && strict), so `failOnMismatch: false` does not help). Slides drop out
    # when a task fails, so only outputs of one same task may be joined plainly.
    for path in (REPO / "workflows" / "senca.nf", MAIN):
        text = path.read_text(encoding="utf-8")
        for head, methods, args in join_calls(text):
            if "remainder: true" in args or args.strip()[:1] in ("'", '"'):   # remainder, or List.join(sep)
                continue
            assert "failOnMismatch" not in args, f"{path.name}: .join({args}): failOnMismatch does not override strict mode"
            right = re.fullmatch(r"\s*([A-Z_]+)\.out\.\w+\s*", args)
            left = re.fullmatch(r"([A-Z_]+)\.out\.\w+", head)
            assert right and left and right.group(1) == left.group(1) and set(methods) <= {"join"}, \
                f"{path.name}: plain {head}...join({args.strip()}) of different tasks' outputs: use remainder: true and drop the nulls"
    workflow = (REPO / "workflows" / "senca.nf").read_text(encoding="utf-8")
    assert workflow.count("remainder: true") >= 3 and ".filter { row -> !row.contains(null) }" in workflow


def test_a_run_with_no_finished_slide_fails() -> None:
    workflow = (REPO / "workflows" / "senca.nf").read_text(encoding="utf-8")
    assert re.search(r"\.collect\(\)\s*\.ifEmpty \{ error\(", workflow), "EVALUATE's input must fail the run when empty"


def test_nf_test_loads_the_pipeline_config_once(resolved: dict[str, Any]) -> None:
    run = resolved["nf-test"]
    assert "error" not in run, run.get("error")
    included = [Path(p).name for p in run["included"]]
    assert included.count("nextflow.config") == 2, included   # ./nextflow.config and tests/nextflow.config
    assert [p for p in run["included"] if p.endswith("/nextflow.config") and "/tests/" not in p] == [str(REPO / "nextflow.config")]
    assert "includeConfig" not in re.sub(r"(?s)/\*.*?\*/", "", (REPO / "tests" / "nextflow.config").read_text())
    nf_test = (REPO / "nf-test.config").read_text(encoding="utf-8")
    docs = DOCS.read_text(encoding="utf-8")
    assert "--profile +docker" in nf_test and "nf-test test --profile +docker" in docs
