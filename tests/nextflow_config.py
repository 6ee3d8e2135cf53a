"""The pipeline's configuration as ``nextflow run`` resolves it, without Nextflow.

``tests/nextflow_config.groovy`` compiles every config file with Nextflow's own config front end
(nf-lang, bundled in the language server jar that ``scripts/fetch_nextflow_lsp.sh`` fetches) and runs
it against a port of Nextflow's ``ConfigDsl``: profiles applied in the order given, ``includeConfig``,
``withLabel``/``withName`` selectors, CLI params overriding config params. Each process's settings
are then resolved as Nextflow's ``ProcessConfigBuilder`` does, and directives evaluated per task as
``TaskConfig`` does (closures with ``task``, ``params``, ``workflow``), so a test can ask "what
``clusterOptions`` does TRAIN_SENCA get under ``-profile gpu,slurm``" or "what does Nextflow do when
PREPROCESS exits 127" and get Nextflow's answer. The same harness runs ``main.nf``'s plain helper
functions with the built-ins they call stubbed.

It runs on the Groovy 4 inside that jar (``java -cp language-server-all.jar groovy.ui.GroovyMain``):
nothing beyond what ``make test`` already fetches. Where Java or the jar is missing,
:class:`nextflow_lsp.LspUnavailable` says why and the tests skip.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from nextflow_render import parse_process

from nextflow_lsp import REPO, LspUnavailable, java_command, locate_jar

HARNESS = REPO / "tests" / "nextflow_config.groovy"
STAND_INS = REPO / "tests" / "groovy"  # nextflow.util.{MemoryUnit,Duration,LangHelpers}
PIPELINE_CONFIG = REPO / "nextflow.config"
WORKFLOW = "SENCA"  # processes run inside workflows/senca.nf's SENCA: their fully-qualified prefix
# What makes a task fail, by exit status, for the error-strategy tests.
RESOURCE_EXITS = (104, *range(130, 146), 175)


def harness_command(jar: Path | None = None) -> list[str]:
    """``java -cp <jar>:tests/groovy groovy.ui.GroovyMain tests/nextflow_config.groovy``; raises
    :class:`LspUnavailable` without Java or the jar."""
    java = java_command()
    jar = jar or locate_jar(fetch=True)
    return [java, "-Xmx1g", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", f"{jar}:{STAND_INS}",
            "groovy.ui.GroovyMain", str(HARNESS)]


def run_harness(request: dict[str, Any], jar: Path | None = None, timeout: float = 300) -> dict[str, Any]:
    """Send one request to the Groovy harness; return its JSON answer (``error`` raised)."""
    command = harness_command(jar)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(request, handle)
        path = Path(handle.name)
    try:
        proc = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    finally:
        path.unlink(missing_ok=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        detail = (proc.stderr or proc.stdout).strip()[-3000:]
        if "ClassNotFoundException" in detail and "groovy.ui.GroovyMain" in detail:
            raise LspUnavailable(f"the language server jar carries no Groovy runtime: {detail[:200]}")
        raise RuntimeError(f"nextflow_config.groovy failed (exit {proc.returncode}):\n{detail}")
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    if "error" in answer:
        raise RuntimeError(f"nextflow_config.groovy: {answer['error']}")
    return answer


def pipeline_processes() -> list[dict[str, Any]]:
    """Every module's process: its name, fully-qualified name in the workflow, and labels."""
    found = []
    for path in sorted((REPO / "modules" / "local").glob("*/main.nf")):
        process = parse_process(path)
        found.append({"name": process.name, "fqn": f"{WORKFLOW}:{process.name}", "labels": [process.label]})
    return found


def run_request(profiles: list[str], params: dict[str, Any] | None = None, configs: list[Path] | None = None,
                tasks: list[dict[str, Any]] | None = None, launch_dir: Path | None = None) -> dict[str, Any]:
    """One configuration to resolve: the pipeline's nextflow.config, then ``configs`` (``-c``)."""
    return {
        "configs": [str(PIPELINE_CONFIG), *(str(Path(c).resolve()) for c in configs or [])],
        "profiles": list(profiles),
        "params": dict(params or {}),
        "binding": {"projectDir": str(REPO), "launchDir": str(launch_dir or REPO)},
        "processes": pipeline_processes(),
        "tasks": list(tasks or []),
    }


def task_query(process: str, directives: list[str], *, attempt: int = 1, exit_status: int | None = None,
               engine: str | None = None, meta: dict[str, Any] | None = None, executor: str | None = None) -> dict[str, Any]:
    """A question about one task of ``process``: the value of each of ``directives`` (``decision``:
    what Nextflow does after this attempt failed with ``exit_status``)."""
    task: dict[str, Any] = {"attempt": attempt, "process": f"{WORKFLOW}:{process}", "name": f"{WORKFLOW}:{process} (S1)"}
    if exit_status is not None:
        task["exitStatus"] = exit_status
    return {"process": process, "task": task, "workflow": {"containerEngine": engine},
            "context": {"meta": meta or {"id": "S1"}}, "directives": directives}


def container_engine(config: dict[str, Any]) -> str | None:
    """The engine a resolved config enables (what ``workflow.containerEngine`` reports)."""
    for engine in ("docker", "podman", "singularity", "apptainer", "charliecloud", "sarus", "shifter"):
        if (config.get(engine) or {}).get("enabled") is True:
            return engine
    return None


# ------------------------------------------------------------------------------------------------
# `nextflow run` command lines (docs, README): what they load
# ------------------------------------------------------------------------------------------------
def cli_value(text: str) -> Any:
    """A ``--param value`` as Nextflow's CmdRun types it: booleans and numbers, else the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?", text):
        return float(text)
    return text


def parse_run_command(command: str) -> dict[str, Any]:
    """``nextflow run main.nf -profile a,b -c x.config --p v ...`` as profiles, configs, params."""
    tokens = shlex.split(command.replace("\\\n", " "))
    if tokens[:2] != ["nextflow", "run"] or len(tokens) < 3:
        raise ValueError(f"not a nextflow run command: {command!r}")
    parsed: dict[str, Any] = {"script": tokens[2], "profiles": [], "configs": [], "params": {}, "options": []}
    i = 3
    while i < len(tokens):
        token = tokens[i]
        if token == "-profile":
            parsed["profiles"] = tokens[i + 1].split(",")
            i += 2
        elif token == "-c":
            parsed["configs"].append(tokens[i + 1])
            i += 2
        elif token.startswith("--"):
            name = token[2:]
            if "=" in name:
                name, value = name.split("=", 1)
                parsed["params"][name] = cli_value(value)
                i += 1
            elif i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
                parsed["params"][name] = cli_value(tokens[i + 1])
                i += 2
            else:
                parsed["params"][name] = True
                i += 1
        elif token.startswith("-"):
            parsed["options"].append(token)
            i += 1
        else:
            raise ValueError(f"unexpected {token!r} in {command!r}")
    return parsed


# ------------------------------------------------------------------------------------------------
# main.nf's helper functions
# ------------------------------------------------------------------------------------------------
def script_functions(path: Path, names: list[str]) -> list[str]:
    """The source of each top-level ``def name(...) { ... }`` of a Nextflow script: from the ``def``
    line to the first ``}`` at the start of a line (the house layout of a top-level function)."""
    text = path.read_text(encoding="utf-8")
    sources = []
    for name in names:
        m = re.search(rf"(?m)^def\s+{re.escape(name)}\s*\(.*$", text)
        if m is None:
            raise LookupError(f"{path.name} defines no function {name}()")
        end = re.compile(r"(?m)^}\s*$").search(text, m.end())
        if end is None:
            raise LookupError(f"{path.name}: {name}() has no closing brace at the start of a line")
        sources.append(text[m.start():end.end()])
    return sources
