"""The documentation runs: every fenced code block of README.md and docs/*.md is executed here
(bash in a temp folder with this environment's `lort` first on PATH, python with this
interpreter), or carries a marker comment just above it saying why not
(``<!-- not run: needs a GPU -->``). Links between the pages lead somewhere, docs/cli.md is
what tools/cli_reference.py writes, and the README's install brings what its examples use."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ARCHIVE_VAR, cifar_archive

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- not run( here)?: (?P<why>\S.*?) -->")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")
RUNS = ("bash", "python")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    why_not: str | None  # the marker's reason; None when unmarked

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, each with the marker on the last non-blank line above it."""
    lines = page.read_text().split("\n")
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent = opening["indent"]
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        code = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end]) + "\n"
        above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.fullmatch(above.strip())
        found.append(Block(page, i + 1, opening["lang"], code, marker and marker["why"]))
        i = end + 1
    return found


ALL = [b for page in PAGES for b in blocks(page)]
RUN = [b for b in ALL if b.why_not is None and b.lang in RUNS]


def test_every_block_is_run_or_says_why() -> None:
    unmarked = [b.name for b in ALL if b.why_not is None and b.lang not in RUNS]
    assert not unmarked, f"blocks neither run nor marked <!-- not run: WHY -->: {unmarked}"
    for b in ALL:  # a reason that names a test names one that exists
        for test in re.findall(r"tests/\w+\.py", b.why_not or ""):
            assert (ROOT / test).is_file(), (b.name, test)
    assert len(RUN) >= 4, "the pages should keep some examples that run"


def test_blocks_are_found_as_a_reader_sees_them(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n<!-- not run: output -->\n```\nout\n```\n\n```bash\necho hi\n```\n"
        "- item\n\n  ```python\n  print(1)\n  ```\n"
    )
    found = blocks(page)
    assert [(b.lang, b.why_not, b.code) for b in found] == [
        ("", "output", "out\n"),
        ("bash", None, "echo hi\n"),
        ("python", None, "print(1)\n"),
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.mark.parametrize("block", RUN, ids=[b.name for b in RUN])
def test_block_runs(block: Block, tmp_path: Path) -> None:
    if block.lang == "bash":
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    else:
        command = [sys.executable, "-c", block.code]
    done = subprocess.run(
        command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{block.name} failed:\n{done.stdout}\n{done.stderr}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in page.read_text().split("\n"):
        if FENCE.match(line) or line.strip() == "```":
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        slug = _slug(line.lstrip("#"))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def test_relative_links_lead_somewhere() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_index() -> None:
    index = (ROOT / "docs" / "index.md").read_text()
    missing = [p.name for p in PAGES[1:] if p.name != "index.md" and f"]({p.name})" not in index]
    assert not missing, f"pages the index does not link: {missing}"


def test_the_cli_reference_is_generated_from_the_code() -> None:
    tool_file = ROOT / "tools" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("cli_reference", tool_file)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    page = (ROOT / "docs" / "cli.md").read_text()
    assert page == tool.render(), "docs/cli.md is stale: run python tools/cli_reference.py"
    for flag in ("--stage1-loss", "--seed", "--smooth", "--protocol", "--top-k"):
        assert f"`{flag}`" in page


def test_the_readme_is_short_and_its_test_command_is_ci() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"^exec (.+)$", ci, flags=re.M)
    assert command is not None
    assert f"```bash\n{command[1]}\n```" in readme


# What a block needs beyond what it imports: (a text in the block, the distribution).
NEEDS = [("to_pandas(", "pandas"), ("--format onnx", "onnx"), ("--log tensorboard", "tensorboard")]


def _needed(code: str, lang: str) -> set[str]:
    """Top-level modules a block imports (python) and distributions its calls need."""
    needed = {dist for text, dist in NEEDS if text in code}
    if lang == "python":
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                needed |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                needed.add(node.module.split(".")[0])
    return needed


def _distribution(name: str) -> str:
    import importlib.metadata

    dists = importlib.metadata.packages_distributions().get(name, [name])
    return dists[0].lower().replace("_", "-")


def installed_by(extras: list[str]) -> set[str]:
    """The distributions (lower case) that pyproject.toml's lort with EXTRAS brings directly."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    specs = project["dependencies"] + [d for e in extras for d in optional[e]]
    names = {"lort"}
    for spec in specs:
        dist = re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]
        names.add(dist.lower().replace("_", "-"))
    return names


def test_the_readme_install_brings_what_the_examples_use() -> None:
    readme = (ROOT / "README.md").read_text()
    install = re.search(r'pip install "\.\[(?P<extras>[\w,-]+)\]"', readme)
    assert install is not None, "the README's install line"
    have = installed_by(install["extras"].split(","))
    examples = RUN + [b for b in ALL if b.why_not and b.why_not.startswith("tests/test_api.py")]
    lacking = {}
    for b in examples:
        for module in _needed(b.code, b.lang):
            if module in sys.stdlib_module_names:
                continue
            dist = _distribution(module)
            if dist not in have:
                lacking[b.name] = dist
    assert not lacking, f"examples that need more than the README installs: {lacking}"


def test_install_check_sees_pandas() -> None:
    code = "table = run.compare()\nframe = table.to_pandas()\nimport numpy as np\n"
    assert _needed(code, "python") == {"pandas", "numpy"}
    assert "pandas" not in installed_by(["train"])


def test_the_cifar_archive_is_found_where_the_variable_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "c10.tar.gz"
    monkeypatch.setenv(ARCHIVE_VAR, str(archive))
    with pytest.raises(pytest.skip.Exception, match=ARCHIVE_VAR):
        cifar_archive()  # absent: the skip names the variable
    archive.write_bytes(b"")
    assert cifar_archive() == archive
