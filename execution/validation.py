"""Checks of tenant code at upload: it parses, defines run(event, step), fits the limits.

Risky imports and calls are flagged for review, and so are calls that make run
non-deterministic outside a step (execution.nondeterminism), found in the syntax tree,
never by searching the text.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass, field

from execution.nondeterminism import nondeterministic_calls

RISKY_MODULES = {
    "socket": "opens network connections",
    "subprocess": "starts processes",
    "ctypes": "calls native code",
    "cffi": "calls native code",
    "multiprocessing": "starts processes",
    "threading": "starts threads that outlive a step",
    "signal": "changes signal handling",
    "importlib": "imports modules dynamically",
    "pickle": "deserialises arbitrary objects",
    "marshal": "loads code objects",
    "urllib": "opens network connections",
    "http": "opens network connections",
    "ssl": "opens network connections",
    "asyncio": "runs an event loop",
}
NO_RUN = "the module defines no run(event, step) function at the top level"
RISKY_CALLS = {
    "eval": "evaluates a string as code",
    "exec": "executes a string as code",
    "compile": "compiles a string to code",
    "__import__": "imports modules dynamically",
    "os.system": "runs a shell command",
    "os.popen": "runs a shell command",
    "os.fork": "starts processes",
    "os.execv": "replaces the process",
    "os.execve": "replaces the process",
    "os.kill": "sends signals",
    "os._exit": "exits the process without cleanup",
}


@dataclass
class CodeProblem:
    line: int
    column: int
    message: str

    def as_dict(self) -> dict:
        return {"line": self.line, "column": self.column, "message": self.message}


@dataclass
class ValidationReport:
    errors: list[CodeProblem] = field(default_factory=list)
    flags: list[CodeProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "errors": [e.as_dict() for e in self.errors],
            "flags": [f.as_dict() for f in self.flags],
        }


def validate_code(code: str, *, max_bytes: int) -> ValidationReport:
    """Every problem found: the size, the first syntax error (Python stops there) and run.

    Code that does not parse is still searched, token by token, for a top-level
    `def run`, so one answer tells both what to fix in the syntax and what is missing.
    """
    report = ValidationReport()
    size = len(code.encode(errors="surrogatepass"))
    if size > max_bytes:
        report.errors.append(
            CodeProblem(1, 0, f"the code is {size} bytes; the limit is {max_bytes} bytes")
        )
    tree = _parse(code, report)
    if tree is None:
        if report.errors and not _defines_run_token(code):
            report.errors.append(
                CodeProblem(
                    1, 0, "the module defines no run(event, step) function at the top level"
                )
            )
        return report
    _check_run(tree, report)
    try:
        report.flags.extend(_risky_uses(tree))
        report.flags.extend(
            CodeProblem(f.line, f.column, f.message) for f in nondeterministic_calls(tree)
        )
    except RecursionError:
        report.errors.append(CodeProblem(1, 0, "the code is nested too deeply to check"))
    return report


def _parse(code: str, report: ValidationReport) -> ast.Module | None:
    """The syntax tree, or None with the reason in the report.

    compile() after ast.parse finds what only the compiler checks ('return' outside
    a function, 'nonlocal' at module level); it compiles, it never runs anything.
    """
    try:
        tree = ast.parse(code, filename="workflow.py")
        compile(tree, "workflow.py", "exec", dont_inherit=True)
    except SyntaxError as exc:
        report.errors.append(
            CodeProblem(exc.lineno or 1, max((exc.offset or 1) - 1, 0), f"syntax error: {exc.msg}")
        )
        return None
    except (ValueError, UnicodeError) as exc:  # e.g. null bytes in the source
        report.errors.append(CodeProblem(1, 0, str(exc)))
        return None
    except (RecursionError, MemoryError):
        report.errors.append(CodeProblem(1, 0, "the code is nested too deeply to parse"))
        return None
    return tree


def _defines_run_token(code: str) -> bool:
    """Whether code that does not parse has `def run` at the top level, by its tokens."""
    previous = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.string == "run" and previous and previous[:2] == ("def", 0):
                return True
            if token.type not in (tokenize.NL, tokenize.COMMENT):
                previous = (token.string, token.start[1])
    except tokenize.TokenError:
        return False  # raised at the end of the text: every token was seen
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # The tokenizer stopped part way: whether a run follows is unknown, and
        # saying nothing is better than a wrong error.
        return True
    return False


def _check_run(tree: ast.Module, report: ValidationReport) -> None:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "run":
            if isinstance(node, ast.AsyncFunctionDef):
                report.errors.append(
                    CodeProblem(node.lineno, node.col_offset, "run must be a plain def, not async")
                )
            elif len(node.args.args) + len(node.args.posonlyargs) < 2 and not node.args.vararg:
                report.errors.append(
                    CodeProblem(node.lineno, node.col_offset, "run must take (event, step)")
                )
            return
    line = (len(tree.body) and tree.body[-1].end_lineno) or 1
    report.errors.append(CodeProblem(line, 0, NO_RUN))


def _risky_uses(tree: ast.Module) -> list[CodeProblem]:
    flags = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root in RISKY_MODULES:
                    flags.append(_flag(node, f"imports {alias.name}: {RISKY_MODULES[root]}"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in RISKY_MODULES:
                flags.append(_flag(node, f"imports from {node.module}: {RISKY_MODULES[root]}"))
            elif root == "os":
                for alias in node.names:
                    name = f"os.{alias.name}"
                    if name in RISKY_CALLS:
                        flags.append(_flag(node, f"imports {name}: {RISKY_CALLS[name]}"))
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in RISKY_CALLS:
                flags.append(_flag(node, f"calls {name}: {RISKY_CALLS[name]}"))
    return flags


def _flag(node: ast.AST, message: str) -> CodeProblem:
    return CodeProblem(node.lineno, node.col_offset, message)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""
