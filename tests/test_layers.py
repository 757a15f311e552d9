"""The import arrows of ARCHITECTURE.md, checked by import-linter's contracts in
pyproject.toml: here too, because CI runs the tests and not `make lint`."""

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = "execution.sandbox.runtime"


def test_every_import_contract_is_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_runtime_imports_the_standard_library_and_itself_only():
    # A contract can forbid named packages only; the jail's interpreter has none at all.
    graph = grimp.build_graph("execution", include_external_packages=True, cache_dir=None)
    runtime = {m for m in graph.modules if m == RUNTIME or m.startswith(RUNTIME + ".")}
    # Inside the jail the runtime's own modules are top-level: `import stepwell`.
    own = {m.split(".")[3] for m in runtime if m != RUNTIME}
    imported = {
        name.split(".")[0]
        for module in runtime
        for name in graph.find_modules_directly_imported_by(module)
        if name not in runtime
    }

    assert own >= {"stepwell", "boot", "zygote", "json_codec"}
    assert imported - set(sys.stdlib_module_names) - own == set()
