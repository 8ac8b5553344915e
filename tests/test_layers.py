"""One-way layers and in-repo citations (docs/architecture.md §1.1 "Layers").

The layer order is read from the ``layers`` and ``forbidden`` fenced blocks of docs/architecture.md,
so the document and this test cannot drift. Every import in ctxsim/, cli/ (ctxsim.cli) and tui/
(ctxsim.tui) is parsed with ast, including imports inside functions and under TYPE_CHECKING:

- layers: a module may import its own package, any package of a lower layer and any package of its
  own layer, except what the ``forbidden`` block lists. Lazy imports count: an import deferred into
  a function is still a dependency.
- module cycles: every import counts, lazy ones and ``if TYPE_CHECKING:`` ones included (a lazy or
  type-only back-import hides a two-way dependency instead of removing it). A submodule importing
  its own package's ``__init__`` is an edge like any other.
- package cycles within one layer (e.g. losses <-> data) are refused too.

Citations: no file may cite documents outside the repository (the reference spec or the design
card by their old names); every ``reference-implementation §N`` / ``architecture §N`` must name a
numbered heading of the doc, and every ``docs/<name>.md#anchor`` an existing file and heading.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
ROOTS = {"ctxsim": REPO / "ctxsim", "ctxsim.cli": REPO / "cli", "ctxsim.tui": REPO / "tui"}

# ------------------------------------------------------------------------------------ the modules


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for prefix, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


MODULES = _modules()


def _is_package(mod: str) -> bool:
    return MODULES[mod].name == "__init__.py"


class _Imports(ast.NodeVisitor):
    """(target, line, lazy, type_only) for every import of a module, relative ones resolved."""

    def __init__(self, mod: str) -> None:
        self.mod = mod
        self.depth = 0
        self.type_only = 0
        self.found: list[tuple[str, int, bool, bool]] = []

    def _add(self, name: str, line: int) -> None:
        self.found.append((name, line, self.depth > 0, self.type_only > 0))

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_Lambda = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        tc = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        self.type_only += tc
        for n in node.body:
            self.visit(n)
        self.type_only -= tc
        for n in node.orelse:
            self.visit(n)

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self._add(a.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.mod.split(".") if _is_package(self.mod) else self.mod.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            pkg = ".".join(base + ([node.module] if node.module else []))
        else:
            pkg = node.module or ""
        for a in node.names:
            sub = f"{pkg}.{a.name}"
            self._add(sub if sub in MODULES else pkg, node.lineno)


def _resolve(name: str) -> str | None:
    """The ctxsim module an imported name lands in (longest existing prefix), None if external."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in MODULES:
            return cand
        parts.pop()
    return None


def _imports() -> dict[str, list[tuple[str, int, bool, bool]]]:
    out: dict[str, list[tuple[str, int, bool, bool]]] = {}
    for mod, path in MODULES.items():
        v = _Imports(mod)
        v.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        out[mod] = [(t, line, lazy, tc) for name, line, lazy, tc in v.found
                    if (t := _resolve(name)) is not None and t != mod]
    return out


IMPORTS = _imports()

# ------------------------------------------------------------------------- the order, from the doc


def _fenced(text: str, tag: str) -> list[str]:
    m = re.search(rf"^```{tag}\n(.*?)^```", text, re.S | re.M)
    assert m, f"docs/architecture.md has no ```{tag} block"
    return [ln.split("#", 1)[0].strip() for ln in m.group(1).splitlines() if ln.split("#", 1)[0].strip()]


def _layer_table() -> tuple[dict[str, int], dict[str, set[str]]]:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    layer: dict[str, int] = {}
    for ln in _fenced(text, "layers"):
        n, *pkgs = ln.split()
        for p in pkgs:
            layer[p] = int(n)
    forbidden: dict[str, set[str]] = defaultdict(set)
    for ln in _fenced(text, "forbidden"):
        src, _, dsts = ln.partition("->")
        forbidden[src.strip()].update(dsts.split())
    return layer, forbidden


LAYER, FORBIDDEN = _layer_table()


def _package(mod: str) -> str | None:
    """The layer-table entry a module belongs to: exact name, else longest dotted prefix
    (the bare ``ctxsim`` entry is the package __init__ only)."""
    if mod in LAYER:
        return mod
    best = None
    for p in LAYER:
        if p != "ctxsim" and mod.startswith(p + ".") and (best is None or len(p) > len(best)):
            best = p
    return best


def test_layer_table_is_sane() -> None:
    assert {"ctxsim", "ctxsim.errors", "ctxsim.train", "ctxsim.runner", "ctxsim.cli", "ctxsim.tui"} <= set(LAYER)
    assert LAYER["ctxsim.errors"] < LAYER["ctxsim.train"] < LAYER["ctxsim.registry"] < LAYER["ctxsim.cli"]
    for src, dsts in FORBIDDEN.items():
        assert src in LAYER and dsts <= set(LAYER), (src, dsts)


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in MODULES if _package(m) is None)
    assert not missing, "modules not placed in docs/architecture.md's layers block: " + ", ".join(missing)


def _violations(imports: dict[str, list[tuple[str, int, bool, bool]]] | None = None) -> list[str]:
    out = []
    for mod, imps in (IMPORTS if imports is None else imports).items():
        src = _package(mod)
        if src is None:
            continue
        for target, line, lazy, _tc in imps:
            dst = _package(target)
            if dst is None or dst == src:
                continue
            if LAYER[dst] > LAYER[src] or dst in FORBIDDEN.get(src, ()):
                how = "lazy " if lazy else ""
                out.append(f"{MODULES[mod].relative_to(REPO)}:{line}: {src} (layer {LAYER[src]}) "
                           f"{how}imports {target} (layer {LAYER[dst]})")
    return sorted(out)


def test_imports_follow_the_layer_order() -> None:
    bad = _violations()
    assert not bad, f"{len(bad)} import(s) against docs/architecture.md's layers:\n" + "\n".join(bad)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def test_no_import_cycle_between_modules() -> None:
    edges = {m: {t for t, _l, _lazy, _tc in imps} for m, imps in IMPORTS.items()}
    cyc = _cycles(edges)
    assert not cyc, "import cycles (lazy and TYPE_CHECKING imports included):\n" + "\n".join(" <-> ".join(c) for c in cyc)


def test_no_package_cycle_within_a_layer() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for mod, imps in IMPORTS.items():
        src = _package(mod)
        for target, _l, _lazy, _tc in imps:
            dst = _package(target)
            if src and dst and src != dst and LAYER[src] == LAYER[dst]:
                edges[src].add(dst)
    cyc = _cycles(edges)
    assert not cyc, "package cycles within a layer:\n" + "\n".join(" <-> ".join(c) for c in cyc)


def test_checker_sees_lazy_relative_and_type_only_imports() -> None:
    src = ("from __future__ import annotations\nfrom typing import TYPE_CHECKING\nfrom . import engine\n"
           "if TYPE_CHECKING:\n    from ctxsim.registry import db\n"
           "def f():\n    from ..runner import worker\n    import ctxsim.report.compare\n")
    v = _Imports("ctxsim.train.config")
    v.visit(ast.parse(src))
    got = {(_resolve(n), lazy, tc) for n, _l, lazy, tc in v.found if _resolve(n)}
    assert got == {("ctxsim.train.engine", False, False), ("ctxsim.registry.db", False, True),
                   ("ctxsim.runner.worker", True, False), ("ctxsim.report.compare", True, False)}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_checker_refuses_upward_forbidden_and_sideways_imports() -> None:
    fake = {
        "ctxsim.train.engine": [("ctxsim.registry.db", 1, True, False)],  # upward, lazy
        "ctxsim.runner.job": [("ctxsim.report.compare", 2, False, False)],  # lower but forbidden
        "ctxsim.tui.app": [("ctxsim.cli.main", 3, False, False)],  # same layer, forbidden
        "ctxsim.cli.main": [("ctxsim.tui.app", 4, False, False), ("ctxsim.train.engine", 5, False, False)],
    }
    bad = _violations(fake)
    assert [b.split(":")[0] for b in bad] == ["ctxsim/runner/job.py", "ctxsim/train/engine.py", "tui/app.py"]
    assert "lazy imports ctxsim.registry.db" in bad[1]


# ------------------------------------------------------------------------------------- citations

# spelled in two pieces so that this file does not cite them itself
OUTSIDE = [re.compile(p) for p in ("seed" + r"-spec", "DESIGN" + r"\s*§", "DESIGN" + r"\.md")]
SCANNED = ("ctxsim", "cli", "tui", "tests", "benchmarks", "docs")
SUFFIXES = {".py", ".md", ".tcss", ".toml", ".cfg", ".sh", ".yml", ".yaml"}
DOC_OF = {"reference-implementation": "reference-implementation.md", "architecture": "architecture.md"}
SECTION = re.compile(r"§\s*(\d+(?:\.\d+)?)(?:\s*[-–]\s*(\d+(?:\.\d+)?))?")
PREFIX = re.compile(r"\b(reference-implementation\b|architecture(?=\s*§))")
LINK = re.compile(r"docs/([\w./-]+\.md)#([\w-]+)")


def _text_files() -> list[Path]:
    files = [REPO / "README.md"] if (REPO / "README.md").exists() else []
    for d in SCANNED:
        files += sorted(p for p in (REPO / d).rglob("*") if p.is_file() and p.suffix in SUFFIXES
                        and "__pycache__" not in p.parts)
    return files


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation and symbols dropped, spaces to hyphens."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _headings(doc: Path) -> tuple[set[str], set[str]]:
    """(anchors, section numbers) of a markdown file; fenced blocks skipped."""
    anchors: set[str] = set()
    numbers: set[str] = set()
    fenced = False
    for ln in doc.read_text(encoding="utf-8").splitlines():
        if ln.startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"#{1,6}\s+(.*)", ln)
        if m:
            a = slug(m.group(1))
            assert a not in anchors, f"{doc.name}: duplicate heading anchor #{a}"
            anchors.add(a)
            if n := re.match(r"§(\d+(?:\.\d+)*)\s", m.group(1)):
                numbers.add(n.group(1))
    return anchors, numbers


def test_slug_matches_github() -> None:
    assert slug("§1.6 Worked numbers") == "16-worked-numbers"
    assert slug("§9.14 Warm-up unfreezes `BN` affine parameters") == "914-warm-up-unfreezes-bn-affine-parameters"


def test_citation_checker_flags_missing_sections_and_anchors() -> None:
    text = ("x  # reference-implementation §1.6, §9.2-3 and §77.1\n"
            "see architecture §4.2 and docs/architecture.md#42-job-lifecycle\n"
            "the architecture of §99 is prose, docs/architecture.md#no-such-anchor is not\n")
    bad = unresolved_in_text(REPO / "ctxsim" / "x.py", text)
    assert bad == ["ctxsim/x.py:1: reference-implementation §77.1",
                   "ctxsim/x.py:3: docs/architecture.md#no-such-anchor"]


def test_no_citation_of_documents_outside_the_repository() -> None:
    me = Path(__file__).resolve()
    bad = []
    for p in _text_files():
        if p.resolve() == me:
            continue
        for i, ln in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if any(r.search(ln) for r in OUTSIDE):
                bad.append(f"{p.relative_to(REPO)}:{i}: {ln.strip()[:100]}")
    assert not bad, f"{len(bad)} citation(s) of documents outside the repository:\n" + "\n".join(bad)


_HEADS: dict[str, tuple[set[str], set[str]]] = {}


def unresolved_citations(files: list[Path]) -> list[str]:
    """Citations in ``files`` that name no heading: ``<doc> §N`` (every § after a doc's name on the
    same line, ranges by their ends) and ``docs/<file>.md#anchor``."""
    return [b for p in files for b in unresolved_in_text(p, p.read_text(encoding="utf-8", errors="replace"))]


def unresolved_in_text(p: Path, text: str) -> list[str]:
    """unresolved_citations for one file whose (possibly rewritten) content is ``text``."""
    def heads(name: str) -> tuple[set[str], set[str]] | None:
        if not (DOCS / name).exists():
            return None
        if name not in _HEADS:
            _HEADS[name] = _headings(DOCS / name)
        return _HEADS[name]

    bad = []
    for i, ln in enumerate(text.splitlines(), 1):
        where = f"{p.relative_to(REPO)}:{i}"
        for m in LINK.finditer(ln):
            h = heads(m.group(1))
            if h is None or m.group(2) not in h[0]:
                bad.append(f"{where}: docs/{m.group(1)}#{m.group(2)}")
        if p.parent == DOCS and p.suffix == ".md":
            for m in re.finditer(r"\]\(([\w.-]*)#([\w-]+)\)", ln):
                h = heads(m.group(1) or p.name)
                if h is None or m.group(2) not in h[0]:
                    bad.append(f"{where}: {m.group(1)}#{m.group(2)}")
        marks = sorted([(m.start(), "doc", m.group(1)) for m in PREFIX.finditer(ln)]
                       + [(m.start(), "sec", m.groups()) for m in SECTION.finditer(ln)])
        doc = None
        for _pos, kind, val in marks:
            if kind == "doc":
                doc = val
            elif doc is not None:
                h = heads(DOC_OF[doc])
                start, end = val
                if end and "." in start and "." not in end:  # "§9.2-3" is §9.2 to §9.3
                    end = f"{start.split('.')[0]}.{end}"
                for n in (x for x in (start, end) if x):
                    if h is None or n not in h[1]:
                        bad.append(f"{where}: {doc} §{n}")
    return bad


def test_citations_name_existing_headings() -> None:
    me = Path(__file__).resolve()
    bad = unresolved_citations([p for p in _text_files() if p.resolve() != me])
    assert not bad, f"{len(bad)} citation(s) naming no heading:\n" + "\n".join(bad)


@pytest.mark.parametrize("doc", sorted(DOC_OF.values()))
def test_docs_exist_with_numbered_sections(doc: str) -> None:
    anchors, numbers = _headings(DOCS / doc)
    assert {"1", "2", "3", "4", "5", "6"} <= numbers
