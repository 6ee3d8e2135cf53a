"""Render the pipeline's processes the way Nextflow would, without Nextflow.

The modules' ``script:`` blocks, ``conf/modules.config``'s ``ext.args`` closures and the
``params`` of ``nextflow.config``/``conf/*.config`` are written in a small, deliberate subset of
Groovy (string literals and GStrings, ``?:``, ``? :``, ``==``/``!=``, ``!``, ``&&``/``||``,
property access, list literals, ``join``/``findAll``/``trim``/``contains``). This module parses exactly that
subset and evaluates it with Groovy's semantics (Groovy truth, ``null``, list rendering, number
formatting), so the tests can

* check every ``senca`` command and option a module passes against the real click CLI, and
* run each module's command line exactly as it would be rendered in a task's ``.command.sh``.

Anything outside the subset raises :class:`GroovySubsetError`: a module that grows fancier Groovy
must grow this evaluator too, rather than be checked against a guess. The Nextflow language server
(``tests/nextflow_lsp.py``) is what checks the full syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class GroovySubsetError(ValueError):
    """The text uses Groovy this evaluator does not model."""


# --------------------------------------------------------------------------------------------
# Values with Groovy semantics
# --------------------------------------------------------------------------------------------
class Obj:
    """A Groovy object with properties (``task``, ``task.ext``); a missing property is ``null``."""

    def __init__(self, **props: Any):
        self.props = props

    def get(self, name: str) -> Any:
        return self.props.get(name)


class FileList(list):
    """Several staged files: Nextflow renders them blank-separated in a script."""


@dataclass
class Closure:
    """A ``{ a, b -> expr }`` closure of the subset: one expression, evaluated when called."""

    params: list[str]
    body: str
    scope: dict[str, Any]

    def bind(self, **names: Any) -> Closure:
        """The same closure seeing more names (``task``, ``meta``, ``workflow``), as Nextflow's
        task-context closures do."""
        return Closure(self.params, self.body, self.scope | names)

    def __call__(self, *args: Any) -> Any:
        if len(args) != len(self.params):
            raise GroovySubsetError(f"closure takes {self.params}, called with {len(args)} argument(s)")
        return evaluate(self.body, self.scope | dict(zip(self.params, args, strict=True)))


def truth(value: Any) -> bool:
    """Groovy truth: null, false, empty strings/collections/maps and zero are false."""
    if value is None or value is False:
        return False
    if isinstance(value, (str, list, tuple, dict)):
        return len(value) > 0
    if isinstance(value, (int, float, Decimal)):
        return value != 0
    return True


def to_text(value: Any) -> str:
    """How a value is rendered inside a GString."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, FileList):
        return " ".join(to_text(v) for v in value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "[" + ", ".join(f"{k}:{to_text(v)}" for k, v in value.items()) + "]"
    if isinstance(value, Path):
        return value.name
    return str(value)


# --------------------------------------------------------------------------------------------
# Lexer
# --------------------------------------------------------------------------------------------
@dataclass
class Token:
    kind: str  # str, gstr, num, ident, op, eof
    value: Any
    pos: int
    end: int = 0


_OPS = ("?:", "==", "!=", "<=", ">=", "&&", "||", "->", "..", "=", "<", ">", "*", "/", "%", "?", ":", "!", ".", ",", "(", ")", "[", "]", "{", "}", "+", "-")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?")


def _scan_string(text: str, start: int) -> tuple[Token, int]:
    """A '...' literal or a "..."/\"\"\"...\"\"\" GString starting at ``start``; returns (token, end)."""
    if text.startswith('"""', start):
        quote, interpolate = '"""', True
    elif text[start] == '"':
        quote, interpolate = '"', True
    elif text.startswith("'''", start):
        quote, interpolate = "'''", False
    else:
        quote, interpolate = "'", False
    i = start + len(quote)
    parts: list[Any] = []  # str pieces and ("expr", source) pieces
    buf: list[str] = []
    while True:
        if i >= len(text):
            raise GroovySubsetError(f"unterminated string starting at offset {start}")
        if text.startswith(quote, i):
            i += len(quote)
            break
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1] if i + 1 < len(text) else ""
            escapes = {"n": "\n", "t": "\t", "\\": "\\", "$": "$", '"': '"', "'": "'"}
            if nxt not in escapes:
                raise GroovySubsetError(f"unsupported escape \\{nxt} at offset {i}")
            buf.append(escapes[nxt])
            i += 2
            continue
        if interpolate and ch == "$":
            if text.startswith("${", i):
                end = _matching_brace(text, i + 1)
                parts.append("".join(buf))
                buf = []
                parts.append(("expr", text[i + 2:end]))
                i = end + 1
                continue
            m = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)").match(text, i)
            if m:
                parts.append("".join(buf))
                buf = []
                parts.append(("expr", m.group(1)))
                i = m.end()
                continue
            raise GroovySubsetError(f"bare '$' at offset {i}: escape it as \\$")
        buf.append(ch)
        i += 1
    parts.append("".join(buf))
    if not interpolate or all(isinstance(p, str) for p in parts):
        return Token("str", "".join(p for p in parts if isinstance(p, str)), start), i
    return Token("gstr", parts, start), i


def _matching_brace(text: str, open_pos: int) -> int:
    """Index of the '}' closing the '{' at ``open_pos``, skipping strings (and their ${...})."""
    depth = 0
    i = open_pos
    while i < len(text):
        ch = text[i]
        if ch in "'\"":
            _, i = _scan_string(text, i)
            continue
        if text.startswith("//", i):
            i = text.index("\n", i) if "\n" in text[i:] else len(text)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise GroovySubsetError(f"unbalanced '{{' at offset {open_pos}")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith("//", i):
            i = text.index("\n", i) if "\n" in text[i:] else len(text)
        elif ch in "'\"":
            tok, i = _scan_string(text, i)
            tok.end = i
            tokens.append(tok)
        elif ch.isdigit():
            m = _NUMBER.match(text, i)
            assert m is not None
            raw = m.group(0)
            tokens.append(Token("num", Decimal(raw) if ("." in raw or "e" in raw.lower()) else int(raw), i, m.end()))
            i = m.end()
        elif _IDENT.match(text, i):
            m = _IDENT.match(text, i)
            assert m is not None
            tokens.append(Token("ident", m.group(0), i, m.end()))
            i = m.end()
        else:
            for op in _OPS:
                if text.startswith(op, i):
                    tokens.append(Token("op", op, i, i + len(op)))
                    i += len(op)
                    break
            else:
                raise GroovySubsetError(f"unsupported character {ch!r} at offset {i} in {text!r}")
    tokens.append(Token("eof", None, len(text), len(text)))
    return tokens


# --------------------------------------------------------------------------------------------
# Parser + evaluator (evaluates while parsing; both branches of ?: are parsed, one evaluated)
# --------------------------------------------------------------------------------------------
class _Skip:
    """Marker context while parsing a branch that is not taken."""


class Evaluator:
    """Evaluate one expression of the subset against ``scope`` (name -> value)."""

    def __init__(self, text: str, scope: dict[str, Any]):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.scope = scope
        self.skipping = 0

    # token helpers
    def peek(self, value: str | None = None, kind: str | None = None) -> bool:
        tok = self.tokens[self.i]
        return (value is None or tok.value == value) and (kind is None or tok.kind == kind)

    def take(self, value: str | None = None) -> Token:
        tok = self.tokens[self.i]
        if value is not None and tok.value != value:
            raise GroovySubsetError(f"expected {value!r} at offset {tok.pos} in {self.text!r}, found {tok.value!r}")
        self.i += 1
        return tok

    def evaluate(self) -> Any:
        value = self.ternary()
        if not self.peek(kind="eof"):
            tok = self.tokens[self.i]
            raise GroovySubsetError(f"unexpected {tok.value!r} at offset {tok.pos} in {self.text!r}")
        return value

    # grammar
    def ternary(self) -> Any:
        cond = self.elvis()
        if self.peek("?"):
            self.take("?")
            take_first = truth(cond)
            first = self._branch(self.ternary, take_first)
            self.take(":")
            second = self._branch(self.ternary, not take_first)
            return first if take_first else second
        return cond

    def _branch(self, rule: Any, live: bool) -> Any:
        if live:
            return rule()
        self.skipping += 1
        try:
            rule()
        finally:
            self.skipping -= 1
        return None

    def elvis(self) -> Any:
        value = self.logic_or()
        if self.peek("?:"):
            self.take("?:")
            live = not truth(value)
            other = self._branch(self.elvis, live)
            return other if live else value
        return value

    def logic_or(self) -> Any:
        value = self.logic_and()
        while self.peek("||"):
            self.take("||")
            rhs = self._branch(self.logic_and, not truth(value))
            value = truth(value) or truth(rhs)
        return value

    def logic_and(self) -> Any:
        value = self.equality()
        while self.peek("&&"):
            self.take("&&")
            rhs = self._branch(self.equality, truth(value))
            value = truth(value) and truth(rhs)
        return value

    def equality(self) -> Any:
        value = self.range()
        while any(self.peek(op) for op in ("==", "!=", "<", "<=", ">", ">=")) or self.peek("in", "ident"):
            op = self.take().value
            rhs = self.range()
            if self.skipping:
                continue
            value = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
                     "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
                     "in": lambda a, b: a in b}[op](value, rhs)
        return value

    def range(self) -> Any:
        value = self.additive()
        if self.peek(".."):
            self.take("..")
            end = self.additive()
            return None if self.skipping else list(range(value, end + 1))
        return value

    def additive(self) -> Any:
        value = self.unary()
        while self.peek("+") or self.peek("-"):
            op = self.take().value
            rhs = self.unary()
            if self.skipping:
                continue
            if op == "+" and isinstance(value, list):
                value = value + (rhs if isinstance(rhs, list) else [rhs])
            elif op == "+":
                value = to_text(value) + to_text(rhs) if isinstance(value, str) else value + rhs
            else:
                value = value - rhs
        return value

    def unary(self) -> Any:
        if self.peek("!"):
            self.take("!")
            return not truth(self.unary())
        if self.peek("-"):
            self.take("-")
            value = self.unary()
            return None if self.skipping else -value
        return self.postfix()

    def postfix(self) -> Any:
        value = self.primary()
        while self.peek("."):
            self.take(".")
            name = self.take().value
            if self.peek("("):
                args = self.call_args()
                value = None if self.skipping else self.call(value, name, args)
            else:
                value = None if self.skipping else self.prop(value, name)
        return value

    def call_args(self) -> list[Any]:
        self.take("(")
        args: list[Any] = []
        while not self.peek(")"):
            args.append(self.ternary())
            if not self.peek(")"):
                self.take(",")
        self.take(")")
        return args

    def primary(self) -> Any:
        tok = self.take()
        if tok.kind == "str":
            return tok.value
        if tok.kind == "gstr":
            return "".join(p if isinstance(p, str) else ("" if self.skipping else to_text(self.sub(p[1])))
                           for p in tok.value)
        if tok.kind == "num":
            return tok.value
        if tok.kind == "ident":
            if tok.value in ("true", "false"):
                return tok.value == "true"
            if tok.value == "null":
                return None
            if self.skipping:
                return None
            if tok.value not in self.scope:
                raise GroovySubsetError(f"undefined name {tok.value!r} in {self.text!r}")
            return self.scope[tok.value]
        if tok.value == "(":
            value = self.ternary()
            self.take(")")
            return value
        if tok.value == "{":
            return self.closure(tok)
        if tok.value == "[" and self.peek(kind="ident") and self.tokens[self.i + 1].value == ":":
            entries: dict[str, Any] = {}
            while not self.peek("]"):
                key = self.take().value
                self.take(":")
                entries[key] = self.ternary()
                if not self.peek("]"):
                    self.take(",")
            self.take("]")
            return entries
        if tok.value == "[":
            items: list[Any] = []
            while not self.peek("]"):
                items.append(self.ternary())
                if not self.peek("]"):
                    self.take(",")
            self.take("]")
            return items
        raise GroovySubsetError(f"unexpected {tok.value!r} at offset {tok.pos} in {self.text!r}")

    def closure(self, open_tok: Token) -> Closure:
        depth = 1
        while depth:
            tok = self.take()
            if tok.kind == "eof":
                raise GroovySubsetError(f"unbalanced '{{' at offset {open_tok.pos} in {self.text!r}")
            depth += {"{": 1, "}": -1}.get(tok.value, 0) if tok.kind == "op" else 0
        source = self.text[open_tok.pos + 1:tok.pos]
        m = re.match(r"\s*([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*->", source)
        params = [p.strip() for p in m.group(1).split(",")] if m else []
        return Closure(params, source[m.end():] if m else source, self.scope)

    def sub(self, source: str) -> Any:
        return Evaluator(source, self.scope).evaluate()

    @staticmethod
    def prop(value: Any, name: str) -> Any:
        if isinstance(value, dict):
            return value.get(name)
        if isinstance(value, Obj):
            return value.get(name)
        if value is None:
            raise GroovySubsetError(f"property {name!r} of null")
        raise GroovySubsetError(f"property {name!r} of {type(value).__name__} is outside the subset")

    @staticmethod
    def call(value: Any, name: str, args: list[Any]) -> Any:
        if name == "join" and isinstance(value, list):
            return (args[0] if args else "").join(to_text(v) for v in value)
        if name == "findAll" and isinstance(value, list) and not args:
            return [v for v in value if truth(v)]
        if name == "trim" and isinstance(value, str):
            return value.strip()
        if name == "contains" and isinstance(value, (str, list)):
            return args[0] in value
        if name == "endsWith" and isinstance(value, str):
            return value.endswith(args[0])
        if name == "length" and isinstance(value, str):
            return len(value)
        if name == "substring" and isinstance(value, str):
            return value[args[0]:args[1]] if len(args) == 2 else value[args[0]:]
        if name == "toString":
            return to_text(value)
        raise GroovySubsetError(f"method {name}() on {type(value).__name__} is outside the subset")


def evaluate(text: str, scope: dict[str, Any]) -> Any:
    """Evaluate a Groovy expression of the subset."""
    return Evaluator(text, scope).evaluate()


# --------------------------------------------------------------------------------------------
# Config files: params and ext.args
# --------------------------------------------------------------------------------------------
def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return "\n".join(re.sub(r"(^|\s)//.*$", "", line) for line in text.splitlines())


def _statements(body: str) -> list[str]:
    """Split a block body into statements: one per line, continued while brackets are open."""
    statements: list[str] = []
    current = ""
    for line in body.splitlines():
        current = f"{current}\n{line}" if current else line
        try:
            depth = sum(t.value in ("(", "[") for t in tokenize(current)) - sum(t.value in (")", "]") for t in tokenize(current))
        except GroovySubsetError:
            continue  # an unterminated multi-line string: keep reading
        if depth <= 0:
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        raise GroovySubsetError(f"unterminated statement: {current.strip()[:80]!r}")
    return statements


def _blocks(text: str, header: str) -> list[str]:
    """Bodies of every ``header {`` block (e.g. ``params {``) in ``text``."""
    bodies = []
    for m in re.finditer(rf"(?m)^\s*{re.escape(header)}\s*\{{", text):
        end = _matching_brace(text, m.end() - 1)
        bodies.append(text[m.end():end])
    return bodies


def read_params(*configs: Path, project_dir: Path = REPO) -> dict[str, Any]:
    """The ``params`` the given config files set, in order (later files override earlier ones)."""
    params: dict[str, Any] = {}
    scope = {"projectDir": str(project_dir), "params": params}
    for config in configs:
        text = _strip_comments(config.read_text(encoding="utf-8"))
        assignments = [s for body in _blocks(text, "params") for s in _statements(body)]
        assignments += [m.group(1) + " = " + m.group(2)
                        for m in re.finditer(r"(?m)^\s*params\.([A-Za-z_]\w*)\s*=\s*(.+)$", text)]
        for statement in assignments:
            name, _, expr = statement.partition("=")
            params[name.strip()] = evaluate(expr.strip(), scope)
    return params


def read_process_config(*configs: Path, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``process { ... }`` settings of config files, merged in order.

    Returns {'*': {...}} for process-wide settings, {'withName:X': {...}} and {'withLabel:x': {...}}
    per selector; keys are the setting names (``publishDir``, ``ext.args``, ``errorStrategy``...).
    Plain values are evaluated; closures stay :class:`Closure`, called later with a task's scope,
    so settings whose closures use Groovy outside the subset (``8.GB * task.attempt``) can be read
    as long as they are not called.
    """
    settings: dict[str, dict[str, Any]] = {}
    for config in configs:
        text = _strip_comments(config.read_text(encoding="utf-8"))
        for body in _blocks(text, "process"):
            _settings_of(body, "*", {"params": params}, settings)
    return settings


_SELECTOR = re.compile(r"\s*(withName|withLabel):\s*'([^']+)'\s*\{")
_ASSIGN = re.compile(r"\s*([A-Za-z_][\w.]*)\s*=(?!=)\s*")


def _settings_of(body: str, owner: str, scope: dict[str, Any], settings: dict[str, dict[str, Any]]) -> None:
    i = 0
    while i < len(body):
        sel = _SELECTOR.match(body, i)
        if sel:
            end = _matching_brace(body, sel.end() - 1)
            _settings_of(body[sel.end():end], f"{sel.group(1)}:{sel.group(2)}", scope, settings)
            i = end + 1
            continue
        assign = _ASSIGN.match(body, i)
        if assign:
            end = _expression_end(body, assign.end())
            source = body[assign.end():end]
            try:  # a closure literal is only parsed here; its body is evaluated when called
                value: Any = evaluate(source, scope)
            except GroovySubsetError as exc:
                value = exc  # e.g. `8.GB`: kept as the reason, raised if a test needs the value
            settings.setdefault(owner, {})[assign.group(1)] = value
            i = end
            continue
        nl = body.find("\n", i)
        i = len(body) if nl < 0 else nl + 1


_CONTINUATION = ("?", ":", "?:", ".", "+", "-", "&&", "||", "==", "!=")


def _expression_end(text: str, start: int) -> int:
    """End offset of the expression at ``start``: the first line break outside brackets that no
    operator continues, or the ``}`` closing the enclosing block."""
    tokens = tokenize(text[start:])
    depth = 0
    for a, b in zip(tokens, tokens[1:], strict=False):
        if a.kind == "op" and a.value in ("(", "[", "{"):
            depth += 1
        elif a.kind == "op" and a.value in (")", "]", "}"):
            depth -= 1
        if b.kind == "eof":
            return len(text)
        if depth == 0 and b.kind == "op" and b.value == "}":
            return start + a.end
        if depth == 0 and "\n" in text[start + a.end:start + b.pos] and not (b.kind == "op" and b.value in _CONTINUATION):
            return start + a.end
    return len(text)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------
@dataclass
class InputElement:
    qualifier: str  # val | path
    name: str
    stage_as: str | None = None


@dataclass
class Output:
    emit: str
    patterns: list[str]  # GString sources of path(...) elements
    optional: bool = False


@dataclass
class Process:
    name: str
    path: Path
    label: str
    inputs: list[list[InputElement]]
    outputs: list[Output]
    script: list[str]  # statements before the script string
    template: str  # source of the script string (a GString literal)
    stub: list[str] = field(default_factory=list)
    stub_template: str = ""


_SECTION = re.compile(r"(?m)^\s{4}(input|output|when|script|stub|exec|shell):\s*$")


def parse_process(path: Path) -> Process:
    """Parse a module's ``process NAME { ... }`` into its sections."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r"(?m)^process\s+([A-Z_]+)\s*\{", text)
    if m is None:
        raise GroovySubsetError(f"{path}: no process definition")
    body = text[m.end():_matching_brace(text, m.end() - 1)]
    label = re.search(r"(?m)^\s*label\s+'([^']+)'", body)
    marks = list(_SECTION.finditer(body))
    sections = {mk.group(1): body[mk.end():(marks[i + 1].start() if i + 1 < len(marks) else len(body))]
                for i, mk in enumerate(marks)}
    for forbidden in ("shell", "exec"):
        if forbidden in sections:
            raise GroovySubsetError(f"{path}: a {forbidden}: section is outside the subset")
    inputs = [_parse_input_line(line) for line in sections.get("input", "").splitlines() if line.strip()]
    outputs = [_parse_output_line(line) for line in sections.get("output", "").splitlines() if line.strip()]
    statements, template = _split_script(sections["script"])
    stub_statements, stub_template = _split_script(sections["stub"]) if "stub" in sections else ([], "")
    return Process(m.group(1), path, label.group(1) if label else "", inputs, outputs, statements, template,
                   stub_statements, stub_template)


def _parse_input_line(line: str) -> list[InputElement]:
    elements = []
    for m in re.finditer(r"\b(val|path)\(\s*(\w+)\s*(?:,\s*stageAs:\s*'([^']*)')?\s*\)", line):
        elements.append(InputElement(m.group(1), m.group(2), m.group(3)))
    if not elements:
        raise GroovySubsetError(f"unparsed input declaration: {line.strip()!r}")
    return elements


def _parse_output_line(line: str) -> Output:
    emit = re.search(r"emit:\s*(\w+)", line)
    if emit is None:
        raise GroovySubsetError(f"output without emit: {line.strip()!r}")
    patterns = [m.group(1) or m.group(2) for m in re.finditer(r'path\s*\(\s*("[^"]*")\s*\)|path\s+("[^"]*")', line)]
    if not patterns:
        raise GroovySubsetError(f"output without a path: {line.strip()!r}")
    return Output(emit.group(1), patterns, bool(re.search(r"optional:\s*true", line)))


def _split_script(section: str) -> tuple[list[str], str]:
    start = section.index('"""')
    end = section.index('"""', start + 3) + 3
    if section[end:].strip():
        raise GroovySubsetError(f"text after the script string: {section[end:].strip()[:60]!r}")
    return _statements(_strip_comments(section[:start])), section[start:end]  # `//` comments between statements


def process_scope(process: Process, inputs: dict[str, Any], ext_args: str | None, prefix: str | None = None,
                  cpus: int = 1) -> dict[str, Any]:
    """The names a script block sees: its inputs, ``task`` (process, ext.args, cpus)."""
    names = {e.name for line in process.inputs for e in line}
    missing = names - set(inputs)
    if missing:
        raise GroovySubsetError(f"{process.name}: no value for input(s) {sorted(missing)}")
    ext = Obj(args=ext_args, prefix=prefix)
    return dict(inputs) | {"task": Obj(process=process.name, ext=ext, cpus=cpus, attempt=1)}


def render(process: Process, scope: dict[str, Any], stub: bool = False) -> str:
    """The task script (``.command.sh`` body) as Nextflow renders it, and ``scope`` updated with
    the script's variables (``prefix``) for the output patterns."""
    statements, template = (process.stub, process.stub_template) if stub else (process.script, process.template)
    for statement in statements:
        m = re.fullmatch(r"(?:def\s+)?([A-Za-z_]\w*)\s*=\s*(.+)", statement, flags=re.S)
        if m is None:
            raise GroovySubsetError(f"{process.name}: unsupported script statement {statement!r}")
        scope[m.group(1)] = evaluate(m.group(2), scope)
    return _dedent(evaluate(template, scope))


def output_names(process: Process, scope: dict[str, Any]) -> list[tuple[Output, list[str]]]:
    """Each output with its rendered file patterns (``prefix`` etc. substituted)."""
    return [(out, [evaluate(p, scope) for p in out.patterns]) for out in process.outputs]


def _dedent(script: str) -> str:
    """Nextflow strips the common indentation of a script string."""
    lines = script.split("\n")
    indents = [len(line) - len(line.lstrip(" ")) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(line[cut:] for line in lines).strip("\n") + "\n"
