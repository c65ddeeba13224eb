"""Measure the package's structure: the numbers issue 25's before/after table asks for.

    python scripts/structure.py                  # the static measures (no training)
    python scripts/structure.py --check          # exit 1 on a cycle or an upward import (tests)
    DLCOURSE_DATA_DIR=../shared/data python scripts/structure.py --run   # and one real run

Static: modules at the top of src/dlcourse, the largest files, functions longer than 40 lines
(from `def` to their last line, docstring included), and cycles in the import graph (every
`import dlcourse...` / `from dlcourse... import`, lazy ones inside functions included).
With --run: `dlcourse-train experiment=cnn_mnist` for one step, in this process: the dlcourse
frames on the stack at the first `optimizer.step`, how many distinct dlcourse functions ran
before it, and how often `validate_config` and `to_plain_dict` were called in the whole run.

Layers (`LAYERS`): imports point only down, commands → sweeps / course → the front door (the
modules at the top, models/, data/) → infrastructure/. `--check` prints each cycle and each
import of a higher layer, and exits 1 if there is any (tests/test_structure.py runs it).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SOURCE / "dlcourse"
LONG_FUNCTION = 40
# Each folder's place: a module may import its own layer's (no cycles) and lower layers' only.
LAYERS = {
    "dlcourse.infrastructure": 0,
    "dlcourse": 1,  # the front door: run, trainer, resume, tasks, metrics, ...; models/, data/
    "dlcourse.sweeps": 2,
    "dlcourse.course": 2,
    "dlcourse.commands": 3,
    "hydra_plugins": 3,
}


def layer(module: str) -> int:
    """The layer of the longest LAYERS prefix of `module` (dlcourse.models.cnn: the front door)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return LAYERS[".".join(parts[:end])]
    raise ValueError(f"{module} is in no layer of LAYERS")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`a → b` for each import of a module in a higher layer than the importer's."""
    return sorted(
        f"{name} → {target}"
        for name, targets in graph.items()
        for target in targets
        if target != "dlcourse" and layer(target) > layer(name)
    )


def module_name(path: Path, source: Path = SOURCE) -> str:
    parts = path.relative_to(source).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> list[Path]:
    return sorted(p for p in SOURCE.rglob("*.py") if "__pycache__" not in p.parts)


def long_functions(files: list[Path]) -> list[tuple[int, str]]:
    """(lines, module:function) of every function longer than LONG_FUNCTION lines."""
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LONG_FUNCTION:
                    found.append((length, f"{module_name(path)}:{node.name}"))
    return sorted(found, reverse=True)


def import_graph(files: list[Path], source: Path = SOURCE) -> dict[str, set[str]]:
    """Each dlcourse module and the dlcourse modules it imports (at any depth of its code)."""
    modules = {module_name(p, source) for p in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        name, targets = module_name(path, source), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def static_measures() -> list[tuple[str, str]]:
    files = source_files()
    package = [p for p in files if p.is_relative_to(PACKAGE)]
    top = [p for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    sizes = sorted(((len(p.read_text().splitlines()), module_name(p)) for p in files), reverse=True)
    longest = long_functions(files)
    graph = import_graph(package)
    loops = cycles(graph)
    return [
        ("top-level modules in src/dlcourse", str(len(top))),
        ("modules over 300 lines", str(sum(n > 300 for n, _ in sizes))),
        ("largest files", ", ".join(f"{name} {n}" for n, name in sizes[:5])),
        (f"functions over {LONG_FUNCTION} lines", str(len(longest))),
        ("longest functions", ", ".join(f"{name} {n}" for n, name in longest[:5]) or "none"),
        ("import cycles", "; ".join(" ↔ ".join(c) for c in loops) or "none"),
        ("upward imports", str(len(upward_imports(graph)))),
    ]


def run_measures() -> list[tuple[str, str]]:
    """One step of experiment=cnn_mnist through the console command, profiled."""
    import tempfile

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from dlcourse.commands import console

    calls: Counter[str] = Counter()
    before_step: set[str] = set()
    at_step: list[int] = []

    def profile(frame, event, argument) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(str(PACKAGE)):
            calls[frame.f_code.co_name] += 1
            if not at_step and not frame.f_code.co_name.startswith("<"):  # no lambdas, genexprs
                before_step.add(f"{frame.f_code.co_filename}:{frame.f_code.co_qualname}")

    def first_step(optimizer, args, kwargs) -> None:
        if not at_step:
            frames, frame = 0, sys._getframe()
            while frame is not None:
                frames += frame.f_code.co_filename.startswith(str(PACKAGE))
                frame = frame.f_back
            at_step.append(frames)

    hook = register_optimizer_step_pre_hook(first_step)
    folder = tempfile.mkdtemp(prefix="dlcourse-structure-")
    sys.argv = ["dlcourse-train", "experiment=cnn_mnist", "trainer.epochs=1",
                "trainer.limit_train_batches=1", "trainer.limit_eval_batches=1",
                "trainer.progress_bar=false", f"hydra.run.dir={folder}"]  # fmt: skip
    sys.setprofile(profile)
    try:
        console.train()
    except SystemExit as exited:
        if exited.code:
            raise
    finally:
        sys.setprofile(None)
        hook.remove()
    return [
        ("dlcourse frames at the first optimizer.step", str(at_step[0] if at_step else "none")),
        ("distinct dlcourse functions before it", str(len(before_step))),
        ("validate_config calls in the run", str(calls["validate_config"])),
        ("to_plain_dict calls in the run", str(calls["to_plain_dict"])),
    ]


def check(source: Path) -> int:
    """0 if the package under `source` has no import cycle and no upward import; else 1."""
    graph = import_graph(sorted(p for p in source.rglob("*.py") if "__pycache__" not in p.parts),
                         source)  # fmt: skip
    problems = [f"cycle: {' ↔ '.join(c)}" for c in cycles(graph)]
    problems += [f"upward import: {edge}" for edge in upward_imports(graph)]
    print("\n".join(problems) or "no cycles, no upward imports")
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="also profile one training step")
    parser.add_argument("--check", action="store_true", help="only check the import layers")
    parser.add_argument("--source", type=Path, default=SOURCE, help="the src/ folder to check")
    args = parser.parse_args()
    if args.check:
        sys.exit(check(args.source))
    measures = static_measures() + (run_measures() if args.run else [])
    print("| measure | value |\n| --- | --- |")
    for name, value in measures:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
