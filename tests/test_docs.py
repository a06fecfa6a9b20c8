"""The docs are tested: the site builds (strict, offline), its references are generated from the
code, its results tables are what ``bench/tables.py`` writes from the recorded JSON, no measured
number in the prose is typed by hand, and every code block runs or says why it cannot."""

from __future__ import annotations

import dataclasses
import html
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md") if "generated" not in p.relative_to(ROOT / "docs").parts)
DOCUMENTS = [README, *PAGES]
README_MAX_LINES = 200


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def bench(name: str):
    """``bench/NAME.py`` as a module; the bench scripts import their siblings from bench/."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    return importlib.import_module(name)


def load_tables():
    return bench("tables")


# ------------------------------------------------------------------------------------ the build
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """``mkdocs build --strict`` into a temporary directory: any warning (a broken link, a missing
    reference, a snippet file that is not there) fails it. No network: HF_HUB_OFFLINE is set and
    no plugin fetches anything."""
    if importlib.util.find_spec("mkdocs") is None:  # a failure, not a skip: the README's test command installs it
        pytest.fail("the docs extra is not installed: pip install -e '.[test,docs]'")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def page_text(site: Path, page: str) -> str:
    """The text of a built page's article, tags removed."""
    source = (site / page / "index.html").read_text()
    article = source[source.index("<article"):source.index("</article>")]
    return html.unescape(re.sub(r"<[^>]+>", "", article))


def test_site_builds_strict_offline(site):
    for page in PAGES:
        name = rel(page)[len("docs/"):-len(".md")]
        built = site / ("" if name == "index" else name.removesuffix("/index")) / "index.html"
        assert built.exists(), name
    assert "<!-- generated:" not in (site / "reference" / "config" / "index.html").read_text()


def test_cli_reference_shows_every_command_as_help_prints_it(site):
    from pnpovss.cli import main

    text = page_text(site, "reference/cli")

    def normal(help_text: str) -> str:  # wrapping may differ (the page's width, breaks after hyphens); words may not
        return " ".join(re.sub(r"-\s+", "-", help_text).split())

    for name, command in [("", main), *sorted(main.commands.items())]:
        res = CliRunner().invoke(main, [*([name] if name else []), "--help"], terminal_width=80)
        assert res.exit_code == 0
        options = res.output[res.output.index("Options:"):].split("\nCommands:")[0]  # a group lists its commands apart
        assert normal(options) in normal(text), f"pnpovss {name} --help differs from the CLI reference"
        for param in command.params:
            for opt in param.opts:
                assert opt in text, (name, opt)


def test_config_reference_lists_every_field(site):
    from pnpovss.config import PipelineConfig
    from pnpovss.fields import FIELDS

    text = page_text(site, "reference/config")
    rows = {line.split("|")[1].strip().strip("`") for line in
            load_reference().config_table().splitlines()[2:]}
    assert rows == {f.name for f in dataclasses.fields(PipelineConfig)} >= set(FIELDS)
    for name in rows:
        assert re.search(rf"\b{name}\b", text), name


def load_reference():
    sys.path.insert(0, str(ROOT)) if str(ROOT) not in sys.path else None
    from tools.docs import reference

    return reference


def test_config_table_has_type_range_default_and_a_column_is_one_line():
    reference = load_reference()
    table = reference.config_table().splitlines()
    assert table[0] == "| field | type | range | default | stage | meaning |"
    row = next(line for line in table if line.startswith("| `threshold` |"))
    assert row.startswith("| `threshold` | float | [0, 1) | `0.15` | postprocess |")
    assert next(line for line in table if line.startswith("| `image_size` |")).startswith(
        "| `image_size` | int | >= 16, or `null` | `null` | input |")
    extra = reference.config_table([*reference.CONFIG_COLUMNS, ("kind", lambda f: f.spec.kind.upper())])
    assert extra.splitlines()[0].endswith("| kind |") and "| FLOAT |" in extra


def test_layout_table_lists_every_module_with_its_docstring():
    reference = load_reference()
    table = reference.layout_table()
    modules = [p for base in reference.LAYOUT_ROOTS for p in (ROOT / base).rglob("*.py") if p.name != "__main__.py"]
    assert len(table.splitlines()) == 2 + len(modules)
    row = next(line for line in table.splitlines() if line.startswith("| `pnpovss/fields.py` |"))
    assert "The field table" in row


def test_api_reference_renders_the_segmenter(site):
    text = page_text(site, "reference/api")
    for name in ("Segmenter", "from_pretrained", "segment_batch", "SegmentationResult", "PipelineConfig"):
        assert name in text, name


# ----------------------------------------------------------------------------- generated tables
def test_generated_tables_are_what_bench_tables_writes():
    """Every table under docs/generated/ and the README's marked block equal the output of
    ``python bench/tables.py`` on the committed JSON (rerun it after recording a benchmark)."""
    tables = load_tables()
    for path, text in tables.expected_files().items():
        assert path.read_text() == text, f"{rel(path)} is stale: run python bench/tables.py"
    included = {m for page in PAGES for m in re.findall(r'^--8<-- "docs/generated/([\w-]+)\.md"$', page.read_text(), re.M)}
    assert included | {tables.README_TABLE} == set(tables.TABLES), "a generated table no page includes"
    assert f"<!-- generated: {tables.README_TABLE} -->" in README.read_text()


def test_quoted_values_are_computed_from_the_records(site, tmp_path, monkeypatch):
    """Every ``{{name}}`` a page quotes is one of bench/quoted.py's values, and the built page
    shows the value, not the name."""
    quoted, records = bench("quoted"), bench("records")
    values = quoted.values()
    for page in PAGES:
        for name in re.findall(r"\{\{\s*([\w.-]+)\s*\}\}", page.read_text()):
            assert name in values, f"{rel(page)}: {{{{{name}}}}} is not in bench/quoted.py's values()"
    text = page_text(site, "results/precision")
    assert "{{" not in text and f"scores {values['toy.full_bf16']} mIoU against {values['toy.full']}" in " ".join(text.split())
    toy = json.loads((records.RESULTS / records.TOY).read_text())
    toy["options"]["full_bf16"]["miou"] = 12.345
    for path in records.RESULTS.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / records.TOY).write_text(json.dumps(toy))
    monkeypatch.setattr(records, "RESULTS", tmp_path)
    assert quoted.values()["toy.full_bf16"] == "12.3"


def test_tables_read_their_numbers_from_the_json(tmp_path, monkeypatch):
    tables, records = load_tables(), bench("records")
    toy = json.loads((records.RESULTS / records.TOY).read_text())
    toy["rows"]["full"]["miou"] = 12.345
    (tmp_path / records.TOY).write_text(json.dumps(toy))
    monkeypatch.setattr(records, "RESULTS", tmp_path)
    assert "| `full` (default pipeline) | 12.3 |" in tables.toyworld_stages()
    assert "| **the default pipeline** (labels given) (`full`) | 12.3 |" in tables.readme_results()


# ------------------------------------------------------------------------- hand-typed numbers
MEASURED = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?(?:%|x\b)|\d+\.\d+)")
"""What counts as a measured number: a decimal (``68.6``), a percentage (``45%``) or a factor
(``3.2x``). Integers (image sizes, counts, seeds, settings such as T = 4) do not."""
HAND_COPIED = re.compile(r"<!-- hand-copied from (?P<sources>[^>]*?) -->(?P<body>.*?)<!-- /hand-copied -->", re.S)


def prose(text: str) -> str:
    """What of a Markdown text is prose a reader takes numbers from: without fenced and inline
    code, generated blocks, hand-copied blocks (checked apart), HTML comments, link targets and
    ``{{name}}`` values (computed from the records at build time)."""
    text = re.sub(r"^(\s*)(```|~~~).*?^\1\2[ \t]*$", "", text, flags=re.S | re.M)
    text = HAND_COPIED.sub("", text)
    text = re.sub(r"<!-- generated: .*?<!-- /generated -->", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"(`+).+?\1", "", text, flags=re.S)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"\{\{[^}]*\}\}", "", text)  # a value bench/tables.py computes, put in at build time
    return re.sub(r"Python ≥ \d+\.\d+", "", text)


def typed_numbers(text: str) -> list[str]:
    """Measured numbers in the prose of ``text``; the defaults of ``PipelineConfig``'s float
    fields are settings, not measurements, and pass."""
    from pnpovss.config import PipelineConfig

    defaults = {f.default for f in dataclasses.fields(PipelineConfig) if isinstance(f.default, float)}
    return [n for n in MEASURED.findall(prose(text)) if not (n[-1].isdigit() and float(n) in defaults)]


def test_the_number_rule_flags_typed_numbers_only():
    assert typed_numbers("mIoU 68.6 against 45% of pixels, 3.2x faster") == ["68.6", "45%", "3.2x"]
    assert typed_numbers("threshold 0.15, a 24x24 grid, T = 4, seed 7, Python ≥ 3.10") == []
    assert typed_numbers("`68.6` and\n```text\n68.6\n```\n[a](x/1.2.md)") == []
    assert typed_numbers("<!-- hand-copied from bench/results/x.json -->\n68.6\n<!-- /hand-copied -->") == []
    assert typed_numbers("scores {{toy.full}} (+{{toy.full_bf16.vs-full}})") == []


HISTORY = ROOT / "docs" / "history.md"
"""The one page where notes copied by hand may stay: superseded records, kept as they were."""


@pytest.mark.parametrize("path", DOCUMENTS, ids=rel)
def test_no_number_is_typed_by_hand(path):
    """A measured number in README or docs prose comes from a generated table or a quoted value;
    notes still copied by hand are allowed on History only, fenced and naming their records."""
    text = path.read_text()
    assert typed_numbers(text) == [], f"{rel(path)}: measured numbers typed by hand"
    prose_and_comments = re.sub(r"(`+).+?\1", "", text, flags=re.S)
    if path != HISTORY:
        assert "<!-- hand-copied" not in prose_and_comments, \
            f"{rel(path)}: a hand-copied note outside docs/history.md; quote its numbers (bench/quoted.py) instead"
    for block in HAND_COPIED.finditer(prose_and_comments):
        sources = [s.strip() for s in block.group("sources").split(",")]
        assert sources and all((ROOT / s).is_file() for s in sources), sources


# ----------------------------------------------------------------------------------- code blocks
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
NOT_RUN = {
    "install": "installs packages (the README's test command is what .ci/run runs)",
    "needs-checkpoints": "downloads a real checkpoint or needs a real dataset",
    "needs-gpu": "needs one or more GPUs",
    "long": "a benchmark, the test suite itself or a training run: minutes to hours",
    "server": "starts the demo server or needs one running",
    "output": "what a command prints",
}
"""Classes that mark a code block as not run by the test suite, and why."""


def code_blocks(path: Path) -> list[tuple[int, str, set[str], str]]:
    """(line, language, classes, code) of every fenced block."""
    text = path.read_text()
    blocks = []
    for m in FENCE.finditer(text):
        info = m.group("info").strip()
        lang = info.split("{")[0].strip()
        classes = set(re.findall(r"\.([\w-]+)", info[len(lang):]))
        body = "\n".join(line[len(m.group("indent")):] for line in m.group("body").splitlines())
        blocks.append((text[:m.start()].count("\n") + 1, lang, classes, body))
    return blocks


def block_kind(lang: str, classes: set[str]) -> str:
    """``python`` or ``run`` (the suite runs it), or the reason it is not run; ``unmarked`` fails."""
    marked = classes & set(NOT_RUN)
    if marked:
        return NOT_RUN[sorted(marked)[0]]
    if lang == "python":
        return "python"
    if "run" in classes:
        return "run"
    return "unmarked"


@pytest.mark.parametrize("path", DOCUMENTS, ids=rel)
def test_every_code_block_runs_or_says_why_not(path):
    for line, lang, classes, _ in code_blocks(path):
        assert block_kind(lang, classes) != "unmarked", (
            f"{rel(path)}:{line}: mark the block {{.run}} (the suite runs it) or one of "
            f"{', '.join('.' + c for c in NOT_RUN)}")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working directory that sees the repository's examples/ and tools/, as a user's
    checkout does."""
    for name in ("examples", "tools"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


PYTHON_PAGES = [p for p in DOCUMENTS if any(block_kind(lang, c) == "python" for _, lang, c, _ in code_blocks(p))]


@pytest.mark.parametrize("path", PYTHON_PAGES, ids=rel)
def test_python_blocks_run(path, workdir):
    """A page's Python blocks run in order in one namespace, on the toy model, in a fresh directory."""
    namespace: dict = {"__name__": "__docs__"}
    for line, lang, classes, code in code_blocks(path):
        if block_kind(lang, classes) == "python":
            exec(compile(code, f"{rel(path)}:{line}", "exec"), namespace)


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    return [c for c in (line.split(" #")[0].strip() for line in joined.splitlines()) if c and not c.startswith("#")]


SHELL_BLOCKS = [(p, line, code) for p in DOCUMENTS for line, lang, c, code in code_blocks(p) if block_kind(lang, c) == "run"]


@pytest.mark.parametrize("path,line,code", SHELL_BLOCKS, ids=[f"{rel(p)}:{n}" for p, n, _ in SHELL_BLOCKS])
def test_shell_blocks_run(path, line, code, workdir):
    """A runnable shell block's commands succeed in a fresh directory: ``pnpovss ...`` through the
    CLI in this process (the same click command the console script calls), anything else through
    the shell with this interpreter as ``python``."""
    from pnpovss.cli import main

    bindir = workdir / ".bin"
    bindir.mkdir()
    (bindir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # a symlink would lose the venv
    (bindir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    for command in shell_commands(code):
        argv = shlex.split(command)
        if argv[0] == "pnpovss":
            res = CliRunner().invoke(main, argv[1:], catch_exceptions=False)
            assert res.exit_code == 0, f"{rel(path)}:{line}: {command}\n{res.output}"
        else:
            res = subprocess.run(command, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, f"{rel(path)}:{line}: {command}\n{res.stdout}{res.stderr}"


def test_shell_command_parsing():
    assert shell_commands("a --x 1 \\\n    --y 2   # note\n# only a comment\n\nb") == ["a --x 1 --y 2", "b"]


# ------------------------------------------------------------------------------------ the README
def test_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    text = "\n".join(lines)
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / target).exists(), target


def readme_test_command() -> str:
    """The README's test command: its install block that runs pytest."""
    blocks = [code.strip() for _, lang, c, code in code_blocks(README) if "install" in c and "pytest" in code]
    assert len(blocks) == 1, "the README has one test command"
    return blocks[0]


def test_ci_runs_exactly_the_readme_test_command():
    command = readme_test_command()
    assert '".[test,docs]"' in command, "the test command installs the docs extra (the docs build is a test)"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci, ".ci/run does not run the README's test command"
    assert [line for line in ci if "pytest" in line and not line.startswith("#")] == [command]


def test_outputs_page_lists_every_key_of_the_segment_record(workdir):
    from pnpovss.cli import main

    res = CliRunner().invoke(main, ["segment", "examples/shapes.png", "--model", "toy", "--classes", "circle,star",
                                    "--out", "out"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    record = json.loads((workdir / "out" / "shapes.json").read_text())
    page = (ROOT / "docs" / "reference" / "outputs.md").read_text()
    section = page[page.index("`NAME.json` (a test"):page.index("A run also writes")]
    documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert documented == list(dict.fromkeys(documented)) and set(documented) == set(record)


def test_api_page_names_every_stable_name():
    """The API page's stable-API paragraph lists exactly what ``pnpovss`` exports."""
    import pnpovss

    text = (ROOT / "docs" / "reference" / "api.md").read_text()
    paragraph = text[text.index("**Stable API.**"):].split("\n\n")[0]
    named = set(re.findall(r"`(\w+)`", paragraph)) - {"pnpovss", "__all__"}
    methods = {"from_pretrained", "segment", "segment_batch", "segment_stream", "detect_classes", "set_image"}
    assert named - methods == set(pnpovss.__all__)
    assert all(callable(getattr(pnpovss.Segmenter, m)) for m in methods)
