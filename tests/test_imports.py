"""The package's import graph: no cycle, and no low module importing the package root (Style 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import c2s_cli

ROOT = Path(c2s_cli.__file__).parent


def modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every c2s_cli module ``name`` imports, at any depth of the file (functions too), except under
    ``if TYPE_CHECKING:``; ``from pkg import sub`` counts as importing ``pkg.sub`` (not ``pkg``) when ``sub`` is
    a module."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, ast.If) and "TYPE_CHECKING" in ast.unparse(ch.test):
                continue
            if isinstance(ch, ast.Import):
                found.update(a.name for a in ch.names)
            elif isinstance(ch, ast.ImportFrom):
                base = pkg.rsplit(".", ch.level - 1)[0] if ch.level > 1 else pkg
                mod = (base + ("." + ch.module if ch.module else "")) if ch.level else (ch.module or "")
                subs = [f"{mod}.{a.name}" for a in ch.names if f"{mod}.{a.name}" in known]
                found.update(subs)
                if len(subs) < len(ch.names):
                    found.add(mod)
            visit(ch)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {n: imports_of(n, p, set(mods)) for n, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            strong(v)
    return out


def test_the_walker_finds_a_cycle_when_there_is_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package() -> None:
    g = graph()
    assert len(g) > 40 and "c2s_cli.noise.policy" in g["c2s_cli.api"]
    assert cycles(g) == []


def test_no_module_imports_the_package_root() -> None:
    """The root re-exports the API lazily; a module importing it back (``from c2s_cli import __version__``) would
    close a loop through it."""
    g = graph()
    assert [m for m, deps in g.items() if "c2s_cli" in deps] == []


def test_noise_choices_live_in_the_noise_package() -> None:
    """One noise policy: outside c2s_cli.noise no module estimates a σ, estimates a map or fits a domain of its own;
    they all go through c2s_cli.noise.policy."""
    calls = ("estimate_noise(", "estimate_sigma_map(", "estimate_sigma_map_series(", "NoiseDomain.fit(")
    offenders = [f"{m}: {c}" for m, p in modules().items() if not m.startswith("c2s_cli.noise")
                 for c in calls if c in p.read_text()]
    assert offenders == []
    assert not [m for m, deps in graph().items() if "c2s_cli.noise.sigma_map" in deps and not m.startswith("c2s_cli.noise")]


def test_one_backward_pass_in_the_code() -> None:
    """Issue 30: one training loop takes objectives; the only ``.backward(`` outside the tests is its update step
    (c2s_cli.loop.optimizer_step), which the research code calls too."""
    repo = ROOT.parent
    hits = [f"{p.relative_to(repo)}:{i}" for folder in ("c2s_cli", "c2s_bench", "scripts")
            for p in (repo / folder).rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
            if ".backward(" in line]
    assert hits == ["c2s_cli/loop.py:" + hits[0].split(":")[1]] and len(hits) == 1


def test_research_code_is_apart() -> None:
    """Issue 30: research code lives in c2s_bench, which imports the product; the product never imports it (at any
    depth, functions included), and no Python file of the repository edits ``sys.path`` to reach another folder."""
    repo = ROOT.parent
    offenders = []
    for p in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{p.relative_to(repo)}: {n}" for n in names if n.split(".")[0] == "c2s_bench"]
    assert offenders == []
    edits = []
    for folder in ("c2s_cli", "c2s_bench", "scripts", "tests"):
        for p in (repo / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in ("insert", "append", "extend") and \
                        ast.unparse(node.value) == "sys.path":
                    edits.append(f"{p.relative_to(repo)}:{node.lineno}")
    assert edits == []
    assert (repo / "c2s_bench" / "harness.py").is_file() and (repo / "c2s_bench" / "models").is_dir()
