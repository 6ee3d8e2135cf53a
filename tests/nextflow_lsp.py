"""A small Language Server Protocol client that checks Nextflow code with Nextflow's own parser.

Nextflow itself cannot be installed on machines without network access to its release server, but
its language server (one jar, fetched by ``scripts/fetch_nextflow_lsp.sh``) holds the same parser
and semantic checks the ``nextflow`` launcher applies: syntax errors, undefined names, unresolved
includes, malformed configs, deprecated constructs. This module starts that server over stdio, opens
every ``.nf`` and ``.config`` file of a folder and collects the ``textDocument/publishDiagnostics``
it sends back, so pytest can fail on any error with ``file:line:column: message``.

Also a command: ``python tests/nextflow_lsp.py [ROOT]`` prints every diagnostic and exits 1 on errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parents[1]
FETCH_SCRIPT = REPO / "scripts" / "fetch_nextflow_lsp.sh"
# Folders never scanned: VCS data, Nextflow/nf-test work dirs, Python environments and caches.
EXCLUDE_DIRS = {".git", "work", ".nextflow", ".nf-test", ".venv", "node_modules", "__pycache__",
                ".pytest_cache", ".ruff_cache", "results"}
# `.config` files that are not Nextflow configs (nf-test's own DSL): the server never reports on them.
NOT_NEXTFLOW = {"nf-test.config"}
SEVERITY = {1: "error", 2: "warning", 3: "information", 4: "hint"}


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One message from the language server, with a 1-based line and column."""

    path: Path
    line: int
    column: int
    severity: int
    message: str

    @property
    def is_error(self) -> bool:
        return self.severity == 1

    def render(self, root: Path | None = None) -> str:
        path = self.path
        if root is not None:
            with contextlib.suppress(ValueError):
                path = self.path.relative_to(root)
        return f"{path}:{self.line}:{self.column}: {SEVERITY.get(self.severity, '?')}: {self.message}"


class LspUnavailable(RuntimeError):
    """The language server cannot run here (no Java, no jar): callers skip, they never pass silently."""


def find_sources(root: Path) -> list[Path]:
    """Every ``.nf`` and ``.config`` file under ``root``, skipping work dirs, VCS data and venvs."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDE_DIRS)
        found.extend(Path(dirpath) / f for f in sorted(filenames)
                     if f.endswith((".nf", ".config")) and f not in NOT_NEXTFLOW)
    return found


def locate_jar(fetch: bool = True) -> Path:
    """The language server jar: ``$SENCA_NEXTFLOW_LSP_JAR``, else the project's fetch script's cache.

    With ``fetch`` the fetch script runs (a no-op when the jar is cached); its stderr becomes the
    :class:`LspUnavailable` reason when it fails.
    """
    explicit = os.environ.get("SENCA_NEXTFLOW_LSP_JAR")
    if explicit:
        if not Path(explicit).is_file():
            raise LspUnavailable(f"SENCA_NEXTFLOW_LSP_JAR={explicit} does not exist")
        return Path(explicit)
    if not fetch:
        raise LspUnavailable("no jar given (set SENCA_NEXTFLOW_LSP_JAR or run scripts/fetch_nextflow_lsp.sh)")
    proc = subprocess.run(["bash", str(FETCH_SCRIPT)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise LspUnavailable(f"Nextflow language server unavailable: {reason}")
    return Path(proc.stdout.strip().splitlines()[-1])


def jar_or_skip(suite: str) -> Path:
    """The jar for a test suite that needs Java and the server, or a pytest skip naming ``suite`` and why."""
    import pytest

    try:
        java_command()
        return locate_jar(fetch=True)
    except LspUnavailable as exc:
        pytest.skip(f"{suite}: skipped: {exc}")


def java_command() -> str:
    """The ``java`` executable (``$JAVA_HOME/bin/java`` first); Java 17+ is what the server needs."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise LspUnavailable("no Java runtime on PATH (the Nextflow language server needs Java 17+)")
    return java


def uri_to_path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


class LanguageServer:
    """The Nextflow language server as a subprocess speaking JSON-RPC with Content-Length framing."""

    def __init__(self, jar: Path, root: Path, java: str | None = None):
        self.root = root.resolve()
        cmd = [java or java_command(), "-Xmx1g", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-jar", str(jar)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=self.root)
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr_lines: list[str] = []
        self._next_id = 0
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    # -- transport ----------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        try:
            while True:
                length = None
                while True:  # headers end with an empty line
                    line = stream.readline()
                    if not line:
                        return
                    line = line.strip()
                    if not line:
                        break
                    name, _, value = line.decode("ascii", "replace").partition(":")
                    if name.lower() == "content-length":
                        length = int(value.strip())
                if length is None:
                    continue
                body = stream.read(length)
                self.messages.put(json.loads(body.decode("utf-8")))
        finally:
            self.messages.put(None)  # end of stream

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr_lines.append(raw.decode("utf-8", "replace").rstrip())

    def _send(self, payload: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **payload}).encode("utf-8")
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self._send({"method": method, "params": params})

    def request(self, method: str, params: dict[str, Any]) -> int:
        self._next_id += 1
        self._send({"id": self._next_id, "method": method, "params": params})
        return self._next_id

    def next_message(self, timeout: float) -> dict[str, Any] | None:
        """The next message from the server, answering its own requests (capabilities, progress)."""
        try:
            msg = self.messages.get(timeout=timeout)
        except queue.Empty:
            return None
        if msg is None:
            detail = "\n".join(self.stderr_lines[-20:])
            raise RuntimeError(f"Nextflow language server exited (status {self.proc.poll()}):\n{detail}")
        if "method" in msg and "id" in msg:  # a request from the server: accept it
            self._send({"id": msg["id"], "result": None})
        return msg

    def close(self) -> None:
        try:
            shutdown = self.request("shutdown", {})
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                msg = self.next_message(timeout=0.5)
                if msg is not None and msg.get("id") == shutdown and "method" not in msg:
                    break
            self.notify("exit", {})
            self.proc.wait(timeout=5)
        except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> LanguageServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the check ----------------------------------------------------------------------------
    def initialize(self, timeout: float = 60.0) -> None:
        init = self.request("initialize", {
            "processId": os.getpid(),
            "rootUri": self.root.as_uri(),
            "workspaceFolders": [{"uri": self.root.as_uri(), "name": self.root.name}],
            "capabilities": {"textDocument": {"publishDiagnostics": {"relatedInformation": False}}},
        })
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.next_message(timeout=max(0.1, deadline - time.monotonic()))
            if msg is not None and msg.get("id") == init and "method" not in msg:
                if "error" in msg:
                    raise RuntimeError(f"initialize failed: {msg['error']}")
                break
        else:
            raise RuntimeError(f"Nextflow language server did not answer initialize within {timeout:.0f} s")
        self.notify("initialized", {})
        self.notify("workspace/didChangeConfiguration", {"settings": {"nextflow": {
            "files": {"exclude": sorted(EXCLUDE_DIRS)},
            "errorReportingMode": "paranoid",
        }}})

    def diagnose(self, files: Iterable[Path], timeout: float = 120.0, settle: float = 1.5) -> dict[Path, list[Diagnostic]]:
        """Open ``files`` and return the latest diagnostics the server published for each.

        Waits until every opened file has reported at least once and then ``settle`` seconds of
        silence (the server re-publishes as it resolves includes across files).
        """
        files = [f.resolve() for f in files]
        for path in files:
            language = "nextflow" if path.suffix == ".nf" else "nextflow-config"
            self.notify("textDocument/didOpen", {"textDocument": {
                "uri": path.as_uri(), "languageId": language, "version": 1,
                "text": path.read_text(encoding="utf-8"),
            }})
        pending = set(files)
        latest: dict[Path, list[Diagnostic]] = {}
        deadline = time.monotonic() + timeout
        last_seen = time.monotonic()
        while True:
            now = time.monotonic()
            if now > deadline:
                missing = ", ".join(str(p) for p in sorted(pending)[:5])
                raise RuntimeError(f"no diagnostics within {timeout:.0f} s for {len(pending)} file(s): {missing}")
            if not pending and now - last_seen >= settle:
                break
            msg = self.next_message(timeout=0.2)
            if msg is None or msg.get("method") != "textDocument/publishDiagnostics":
                continue
            params = msg["params"]
            path = uri_to_path(params["uri"])
            latest[path] = [_diagnostic(path, d) for d in params.get("diagnostics", [])]
            pending.discard(path)
            last_seen = time.monotonic()
        return {path: sorted(latest.get(path, [])) for path in files}


def _diagnostic(path: Path, raw: dict[str, Any]) -> Diagnostic:
    start = raw.get("range", {}).get("start", {})
    return Diagnostic(path, int(start.get("line", 0)) + 1, int(start.get("character", 0)) + 1,
                      int(raw.get("severity", 1)), " ".join(str(raw.get("message", "")).split()))


def lint(root: Path, files: Iterable[Path] | None = None, jar: Path | None = None,
         timeout: float = 120.0) -> dict[Path, list[Diagnostic]]:
    """Parse ``files`` (default: every .nf/.config under ``root``) with the Nextflow language server."""
    root = root.resolve()
    files = list(files) if files is not None else find_sources(root)
    jar = jar or locate_jar()
    with LanguageServer(jar, root) as server:
        server.initialize()
        return server.diagnose(files, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else REPO
    try:
        results = lint(root)
    except LspUnavailable as exc:
        print(f"nextflow-lint: skipped: {exc}", file=sys.stderr)
        return 3
    diagnostics = [d for ds in results.values() for d in ds]
    for d in diagnostics:
        print(d.render(root.resolve()))
    errors = sum(d.is_error for d in diagnostics)
    print(f"nextflow-lint: {len(results)} files parsed, {errors} errors, {len(diagnostics) - errors} warnings")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
