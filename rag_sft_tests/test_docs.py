"""The documentation holds together: the site builds strictly, every relative link and #anchor of
the Markdown files resolves, every citation of a docs page's section in the code names a section
that exists, and nothing in the repository points outside it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import markdown
import pytest

ROOT = Path(__file__).resolve().parents[1]
# Folders that are never the repository's own text (environments, outputs, caches).
SKIPPED_DIRS = {".git", ".venv", ".venv-dvc", "site", "data", "__pycache__", ".dagster_home", ".dagster_home_pg",
                ".pytest_cache", ".ipynb_checkpoints", ".dvc-storage", ".rag_sft_state"}
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.S | re.M)
INLINE_CODE = re.compile(r"`+[^`\n]*`+")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# A section cited by name: `docs/training.md, "The evaluation"`, `README.md, "Tests"`, several
# names after one page (`docs/spec.md, "Rule 8: Sample weight", "Rule 9: Label weight"`), with
# double, single or JSON-escaped quotes; a name may wrap onto a comment's next line.
QUOTED = r"""(?:\\?"[^"\\\n]+(?:\n[ \t]*#?[ \t]*[^"\\\n]+)*\\?"|'[^'\n]+')"""
CITATION = re.compile(rf"(?<![\w/.-])(README(?:\.md)?|docs/[\w-]+\.md),((?:,? (?:and )?{QUOTED})+)")
NAME = re.compile(QUOTED)
PAGE = re.compile(r"(?<![\w/.-])docs/[\w-]+\.md")


def repository_files() -> list[Path]:
    """The files of the repository: what git tracks or would track (new files included); without git,
    the tree less environments and outputs."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout
        files = [ROOT / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for folder, dirs, names in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
            files += [Path(folder, name) for name in names]
    return sorted(path for path in files if path.is_file())


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def markdown_files() -> list[Path]:
    return [path for path in repository_files() if path.suffix == ".md"]


@cache
def headings(path: Path) -> dict[str, str]:
    """A Markdown file's headings as their anchors (the ids MkDocs gives them: Python-Markdown's toc)
    by their text, markup left out."""
    md = markdown.Markdown(extensions=["toc", "tables", "attr_list", "admonition", "fenced_code"])
    md.convert(path.read_text(encoding="utf-8"))
    found: dict[str, str] = {}

    def walk(tokens):
        for token in tokens:
            found[" ".join(token["name"].split())] = token["id"]
            walk(token["children"])

    walk(md.toc_tokens)
    return found


def anchors(path: Path) -> set[str]:
    return set(headings(path).values())


def prose(text: str) -> str:
    """Markdown without its code: fenced blocks and inline code are examples, not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def test_the_site_builds_strictly(tmp_path):
    """`make docs`'s build: any warning (a missing page or anchor, a page left out of nav) fails it."""
    pytest.importorskip("material", reason="mkdocs-material is in the dev extras")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = build.stdout + build.stderr
    assert build.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "spec" / "index.html").is_file()


def test_every_relative_link_and_anchor_resolves():
    """README.md, docs/*.md and every other Markdown file: each link to a file of the repository
    names one that exists, inside it, and each #anchor a heading of its target."""
    problems = []
    files = markdown_files()
    assert ROOT / "README.md" in files and ROOT / "docs" / "spec.md" in files
    for path in files:
        for target in LINK.findall(prose(path.read_text(encoding="utf-8"))):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:
                continue
            where = f"{path.relative_to(ROOT)}: ({target})"
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if ROOT not in linked.parents and linked != ROOT:
                problems.append(f"{where} leaves the repository")
            elif not linked.exists():
                problems.append(f"{where}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{where}: no heading with the anchor #{anchor} in {linked.relative_to(ROOT)}")
    assert not problems, "\n".join(problems)


def test_cited_sections_exist():
    """Code, configuration and docs cite pages (`docs/training.md`) and their sections by name
    (`docs/spec.md, "Rule 4: Confidence"`): every page cited exists and holds a heading of every
    name cited."""
    problems, cited = [], 0
    for path in repository_files():
        text = text_of(path)
        if text is None:
            continue
        for match in PAGE.finditer(text):
            if not (ROOT / match.group(0)).is_file():
                line = text.count("\n", 0, match.start()) + 1
                problems.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)} does not exist")
        for match in CITATION.finditer(text):
            page = ROOT / ("README.md" if match.group(1).startswith("README") else match.group(1))
            line = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            if not page.is_file():
                problems.append(f"{where}: {match.group(1)} does not exist")
                continue
            names = {re.sub(r"[`*_]", "", name) for name in headings(page)}
            for quoted in NAME.findall(match.group(2)):
                name = " ".join(re.sub(r"\n[ \t]*#?", " ", quoted.strip("\\\"'")).split())
                cited += 1
                if name not in names and name not in headings(page):
                    problems.append(f"{where}: {match.group(1)} has no section {name!r}")
    assert not problems, "\n".join(problems)
    assert cited > 20  # the citations are found at all


def test_nothing_refers_outside_the_repository():
    """The product's spec lives in docs/spec.md: no file cites the spec or any other file by a path
    outside the repository (a sibling checkout, a machine's own folders)."""
    forbidden = {
        "a sibling folder": re.compile(re.escape("../" + "shared")),
        "a machine's folder": re.compile(re.escape("/" + "work" + "/")),
        "the spec outside the repository": re.compile(r"\b" + "SP" + "EC" + r"\b"),  # SPECIAL_TOKENS is fine
    }
    problems = []
    for path in repository_files():
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for what, pattern in forbidden.items():
                if pattern.search(line):
                    problems.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()[:120]}")
    assert not problems, "\n".join(problems)


def test_the_readme_is_a_front_door():
    """A newcomer's page: short, the two commands as they are, and the way on into docs/."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    assert "make run    #" in readme and "make test   #" in readme
    linked = {target.partition("#")[0] for target in LINK.findall(prose(readme))}
    pages = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert pages <= linked | {"docs/index.md"}, f"pages the README does not link: {sorted(pages - linked)}"
