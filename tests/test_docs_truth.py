"""The docs and the code's comments name only files that exist in this repository.

A comment or doc that sends a reader to a file which is not there (renamed,
never written, or outside the repository) is worse than none. Checked: the
Markdown under docs/ and the README, and the comments and docstrings of the
Python code (tests' string literals are data, such as file names a test
creates, and are not checked). CHANGELOG.md records history and may name
files since removed.

A reference is a token like ``net/_aioquic/tuning.py`` or ``docs/PROTOCOL.md``. One
with a folder must exist relative to the referring file's folder, a folder
above it (up to the repository) or the package; a bare name (``tuning.py``) must be the
name of some file in the repository.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "p2pcp"

_REFERENCE = re.compile(r"(?<![\w/.~$-])((?:[\w-]+/)*[\w-]+\.(?:py|md|toml|c|sh))\b")
# Names of the user's files, not the repository's, that docs may mention.
USER_FILES = {"config.toml"}  # the user's, in P2PCP_HOME
# Files outside the repository that must never be cited.
_OUTSIDE = re.compile(r"\.\./shared|FACTS\.md|CONVENTIONS\.md")


def _tracked() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if listing.returncode != 0:
        pytest.skip("not a git checkout")
    return [name for name in listing.stdout.splitlines() if (ROOT / name).exists()]


def _python_prose(text: str) -> Iterator[str]:
    """The comments and docstrings of a Python source."""
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            yield token.string
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=False)
            if docstring:
                yield docstring


def _prose(name: str) -> Iterator[str]:
    text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
    if name.endswith(".py"):
        yield from _python_prose(text)
    elif name.endswith(".md") and name != "CHANGELOG.md":
        yield text


def _exists(reference: str, referrer: str, tracked: set[str], names: set[str]) -> bool:
    if "/" not in reference:
        return reference in names or reference in USER_FILES
    folders = [*Path(referrer).parents, Path(PACKAGE)]  # its folder and those above it
    return any(str(folder / reference) in tracked for folder in folders)


def _checked_files(tracked: list[str]) -> list[str]:
    return [
        name
        for name in tracked
        if name.endswith(".py")
        or (name.endswith(".md") and ("/" not in name or name.startswith("docs/")))
    ]


def test_every_file_named_in_docs_and_comments_exists() -> None:
    tracked = _tracked()
    tracked_set = {str(Path(name)) for name in tracked}
    names = {Path(name).name for name in tracked}
    missing: list[str] = []
    for name in _checked_files(tracked):
        for prose in _prose(name):
            for match in _REFERENCE.finditer(prose):
                reference = match.group(1)
                if not _exists(reference, name, tracked_set, names):
                    missing.append(f"{name}: {reference}")
    assert not missing, "files named but not in the repository:\n" + "\n".join(sorted(missing))


def test_nothing_cites_a_file_outside_the_repository() -> None:
    cited = [
        f"{name}: {match.group(0)}"
        for name in _tracked()
        if name.endswith((".py", ".md", ".toml", ".sh", ".c")) or name.startswith(".ci/")
        for match in _OUTSIDE.finditer((ROOT / name).read_text(encoding="utf-8", errors="replace"))
        if name != "tests/test_docs_truth.py"
    ]
    assert not cited, "\n".join(cited)
