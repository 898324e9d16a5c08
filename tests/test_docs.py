"""The docs stay true to the code: README.md and docs/*.md.

- A code block whose fence says ``python run`` or ``bash run`` runs as written, in a fresh folder (Python
  in this process, bash in a subprocess with ``groundcap`` on its PATH), and must not fail.
- Every module path, dotted ``groundcap.`` name, test name and relative link they cite exists.
- docs/ARCHITECTURE.md's code layout lists exactly the modules under src/groundcap (and bench/ files that
  exist).
"""

from __future__ import annotations

import ast
import os
import re
import stat
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "groundcap"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = {"src", "tests", "bench", "docs", ".ci"}  # a path starting with one of these is relative to the repository
NOT_MODULES = {"groundcap.backends"}  # the entry-point group third-party backends register under
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def rel(doc: Path) -> str:
    return doc.relative_to(ROOT).as_posix()


def prose(doc: Path) -> str:
    """The document without its fenced code blocks."""
    return FENCE.sub("", doc.read_text(encoding="utf-8"))


def runnable() -> list[tuple[str, str, str]]:
    """(where, language, code) of every block fenced as ``python run`` or ``bash run``."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            words = m.group(1).split()
            if words[1:] == ["run"] and words[0] in ("python", "bash"):
                line = text[: m.start()].count("\n") + 1
                found.append((f"{rel(doc)}:{line}", words[0], m.group(2)))
    return found


RUNNABLE = runnable()


def test_the_docs_have_runnable_blocks():
    assert len(RUNNABLE) >= 4 and {lang for _, lang, _ in RUNNABLE} == {"python", "bash"}


@pytest.mark.parametrize(("where", "language", "code"), RUNNABLE, ids=[w for w, _, _ in RUNNABLE])
def test_runnable_block_runs(where, language, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if language == "python":
        exec(compile(code, where, "exec"), {"__name__": "__doc_block__"})
        return
    shim = tmp_path / "bin" / "groundcap"  # the command of this checkout, whatever script a venv installed
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m groundcap "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": os.pathsep.join([str(shim.parent), str(Path(sys.executable).parent),
                                                  os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, f"{where}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


# --- what the docs cite exists --------------------------------------------------------------------------------


@cache
def top_level(path: Path) -> dict[str, set[str]]:
    """A module's top-level names, each with its members when it is a class."""
    names: dict[str, set[str]] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef):
            names[node.name] = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            names[node.name] |= {t.id for n in node.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                                 for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                                 if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = set()
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id: set() for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0]: set() for a in node.names}
    return names


def dotted_problem(name: str) -> str | None:
    """Why ``groundcap.a.b.c`` names nothing: the longest module prefix, then a top-level name, then a member."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT / "src" / Path(*parts[:cut])
        module = next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)
        if module is not None:
            break
    else:
        return "no such module"
    rest = parts[cut:]
    if not rest:
        return None
    names = top_level(module)
    if rest[0] not in names:
        return f"{rest[0]} is not defined in {module.relative_to(ROOT)}"
    if len(rest) > 1 and names[rest[0]] and rest[1] not in names[rest[0]]:
        return f"{rest[0]} has no {rest[1]}"
    return None


@cache
def defined_tests() -> set[str]:
    return {m for p in (ROOT / "tests").glob("*.py") for m in re.findall(r"^def (test_\w+)", p.read_text(), re.M)}


def path_problem(token: str, folders: set[str]) -> str | None:
    """Why a cited path names nothing, or None (also for a token that is no path of this repository).

    A bare file name is looked for in src/groundcap, tests and bench, and in the folders its paragraph
    names (`qa/`: `checks.py`, ...); a path whose first folder is a package folder is relative to
    src/groundcap, as docs/ARCHITECTURE.md writes them."""
    if "/" not in token:
        bases = [PACKAGE, ROOT / "tests", ROOT / "bench"] + [b / f for f in folders for b in (PACKAGE, ROOT)]
        return None if any((b / token).is_file() for b in bases) else "no such file here or in its paragraph's folders"
    first = token.split("/")[0]
    if first in TOP:
        return None if (ROOT / token).exists() else "no such path"
    if (PACKAGE / first).is_dir() and token.endswith((".py", ".txt", ".yaml")):
        return None if (PACKAGE / token).exists() else "no such path under src/groundcap"
    return None  # a work/, release/ or reports/ path, or another project's file


def citations(doc: Path) -> list[tuple[str, str]]:
    """(token, problem) for every cited path, dotted name, test or link of ``doc`` that names nothing."""
    bad = []
    for paragraph in re.split(r"\n\s*\n", prose(doc)):
        codes = [re.sub(r"\(.*\)$", "", c.strip()) for c in re.findall(r"`([^`\n]+)`", paragraph)]
        folders = {c.rsplit("/", 1)[0] for c in codes if "/" in c}  # `qa/`: qa; `qa/claims.py`: qa
        for code in codes:
            if re.search(r"[\s{}<>*$]|\.\.\.", code):
                continue
            if "::" in code:
                path, name = code.split("::", 1)
                problem = path_problem(path, folders) or (None if name in defined_tests() else "no such test")
            elif re.fullmatch(r"test_\w+", code):
                problem = None if code in defined_tests() else "no such test"
            elif re.fullmatch(r"groundcap(\.\w+)+", code) and code not in NOT_MODULES:
                problem = dotted_problem(code)
            elif code.endswith((".py", ".sh")) or code.startswith(("src/", "tests/", "bench/")):
                problem = path_problem(code, folders)
            else:
                continue
            if problem:
                bad.append((code, problem))
        for link in re.findall(r"\]\(([^)\s]+)\)", paragraph):
            target = link.split("#")[0]
            if target and not re.match(r"[a-z]+:", target) and not (doc.parent / target).exists():
                bad.append((link, "broken link"))
    return bad


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_what_the_doc_cites_exists(doc):
    assert citations(doc) == []


def test_the_checks_catch_a_stale_citation(tmp_path):
    stale = tmp_path / "stale.md"
    stale.write_text("`src/groundcap/pipeline.py`, `groundcap.pipeline.resume.finished`, `parts.py`, "
                     "`tests/test_docs.py::test_nothing`, `test_nothing_here`, [gone](nowhere.md).\n\n"
                     "Fine: `groundcap.pipeline.resume.plan`, `stages/tag.py`, `pipeline/`: `stage.py`, "
                     "`groundcap.pipeline.order.stages()`, `work/tag/part-00000.parquet`, [a site](https://example.org)\n")
    assert [token for token, _ in citations(stale)] == [
        "src/groundcap/pipeline.py", "groundcap.pipeline.resume.finished", "parts.py",
        "tests/test_docs.py::test_nothing", "test_nothing_here", "nowhere.md"]


# --- the code layout ------------------------------------------------------------------------------------------


def layout() -> list[str]:
    """The paths the code layout of docs/ARCHITECTURE.md lists (folders end with '/')."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("\n## 12. Code layout\n", 1)[1]
    block = FENCE.search(section).group(2)
    stack: list[tuple[int, str]] = []
    listed = []
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        name = line.split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "".join(p for _, p in stack) + name
        listed.append(path)
        if name.endswith("/"):
            stack.append((indent, name))
    return listed


def test_the_code_layout_lists_every_module_and_only_what_exists():
    listed = layout()
    assert len(listed) == len(set(listed)), "listed twice"
    assert [p for p in listed if not (ROOT / p).exists()] == [], "listed but missing"
    modules = {p.relative_to(ROOT).as_posix() + ("/" if p.is_dir() else "") for p in PACKAGE.rglob("*")
               if "__pycache__" not in p.parts and (p.is_dir() or (p.suffix == ".py" and p.name != "__init__.py"))}
    assert sorted(modules - set(listed)) == [], "modules the layout does not list"
