"""Calls that make `run` non-deterministic when they happen outside a step (SDK.md).

`run` is executed again on every activation and must take the same path each time:
the clock, random numbers, fresh UUIDs and I/O give a different answer on each replay
unless they happen inside a `step.do`, whose result is recorded. This finds such calls
in the syntax tree, never in the text: in module-level code (run on every import),
in `run`, and in every function that code calls or passes on, but not in what is
handed to `step.do` (a lambda, or a function named there) nor in what only those call.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass

CLOCK = "reads the clock"
RANDOM = "draws random numbers"
FRESH_ID = "makes a new random id"
IO = "does I/O"

# Fully qualified callables, and modules every callable of which is flagged.
CALLS = {
    **dict.fromkeys(
        [
            "time.time",
            "time.time_ns",
            "time.monotonic",
            "time.monotonic_ns",
            "time.perf_counter",
            "time.perf_counter_ns",
            "time.process_time",
            "time.localtime",
            "time.gmtime",
            "time.ctime",
            "time.asctime",
            "time.strftime",
            "datetime.datetime.now",
            "datetime.datetime.utcnow",
            "datetime.datetime.today",
            "datetime.date.today",
        ],
        CLOCK,
    ),
    **dict.fromkeys(["uuid.uuid1", "uuid.uuid4"], FRESH_ID),
    **dict.fromkeys(["os.urandom", "os.getrandom"], RANDOM),
    **dict.fromkeys(["open", "input", "io.open", "os.open", "os.listdir", "os.scandir"], IO),
}
MODULES = {
    "random": RANDOM,
    "secrets": RANDOM,
    "socket": IO,
    "urllib.request": IO,
    "http.client": IO,
    "requests": IO,
    "httpx": IO,
}
# Clock functions that read the clock only when given no time to convert: the position
# of that argument.
TIME_ARGUMENT = {
    "time.localtime": 0,
    "time.gmtime": 0,
    "time.ctime": 0,
    "time.asctime": 0,
    "time.strftime": 1,
}
# Seeded, a generator repeats itself on every replay.
SEEDED = {"random.Random", "random.seed"}


@dataclass(frozen=True)
class Finding:
    line: int
    column: int
    message: str


def nondeterministic_calls(tree: ast.Module) -> list[Finding]:
    """Every call outside a step that gives `run` a different answer on replay."""
    finder = Finder(tree)
    finder.run()
    return sorted(set(finder.findings), key=lambda f: (f.line, f.column))


def message(name: str, why: str) -> str:
    return (
        f"calls {name} outside a step: it {why}, so run takes a different path when it "
        f"is replayed; move it into a step.do (for example step.do('...', lambda: {name}()))"
    )


class Finder:
    def __init__(self, tree: ast.Module):
        self.tree = tree
        self.imports = imported_names(tree)
        self.functions: dict[str, list[ast.FunctionDef]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                self.functions.setdefault(node.name, []).append(node)
        self.findings: list[Finding] = []
        self.reached: set[int] = set()
        self.queue: deque[ast.FunctionDef] = deque()

    def run(self) -> None:
        self.visit_body(self.tree.body)
        self.reach("run")
        while self.queue:
            self.visit_body(self.queue.popleft().body)

    def reach(self, name: str) -> None:
        for function in self.functions.get(name, []):
            if id(function) not in self.reached:
                self.reached.add(id(function))
                self.queue.append(function)

    def visit_body(self, body: list[ast.stmt]) -> None:
        """Code that runs outside any step: a function defined here runs only if reached."""
        stack: list[ast.AST] = list(reversed(body))
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.Call):
                if self.is_step_do(node):
                    stack.extend(reversed(self.outside_parts(node)))
                    continue
                self.check(node)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                self.reach(node.id)  # called, or passed on to be called
            stack.extend(reversed(list(ast.iter_child_nodes(node))))

    @staticmethod
    def is_step_do(call: ast.Call) -> bool:
        return isinstance(call.func, ast.Attribute) and call.func.attr == "do"

    @staticmethod
    def outside_parts(call: ast.Call) -> list[ast.AST]:
        """What a step.do call evaluates outside the step: all but its function."""
        parts: list[ast.AST] = [call.func, *call.args[:1], *call.args[2:]]
        parts += [k.value for k in call.keywords if k.arg != "fn"]
        return parts

    def check(self, call: ast.Call) -> None:
        name = self.qualified(call.func)
        why = CALLS.get(name) or next(
            (why for module, why in MODULES.items() if name.startswith(module + ".")), None
        )
        if why is None or (name in SEEDED and (call.args or call.keywords)):
            return
        if name in TIME_ARGUMENT and len(call.args) > TIME_ARGUMENT[name]:
            return
        self.findings.append(Finding(call.lineno, call.col_offset, message(name, why)))

    def qualified(self, node: ast.AST) -> str:
        """The dotted name of what is called, its first part resolved through imports."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return ""
        head = self.imports.get(node.id, node.id if node.id in ("open", "input") else "")
        return ".".join([head, *reversed(parts)]) if head else ""


def imported_names(tree: ast.Module) -> dict[str, str]:
    """Each name an import binds, anywhere in the module, to what it stands for."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    names[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names
