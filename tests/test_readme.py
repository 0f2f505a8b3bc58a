"""The READMEs' examples run as written.

Every line of README.md's and pipelines/README.md's ```sh blocks (a heredoc, `<<'EOF'`
to `EOF`, is part of its line), every `$ ` line of their transcripts and every ```python
block (with `python -`) runs in order in a directory that mirrors the repository (its
entries linked, `out/` its own), with `.venv/bin` first on PATH as `source
.venv/bin/activate` would put it. A line fails the test when it exits non-zero; a
trailing `# prints: TEXT` (in Python, on any line of the block) and a transcript's
shown output must appear in what it prints. WIT blocks are not run, nor the python
blocks that show the example guests: README.md's must be the shipped files
(pipelines/README.md's is an excerpt of wit/). Lines (or blocks, by a first line) marked
`# not run by tests/test_readme.py: WHY` are skipped, and WHY must be one of REASONS:
something the test cannot have, never a file the README could make first.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import subprocess

import pytest

from support.repo import ROOT, xdg_cache_home

SKIP = "# not run by tests/test_readme.py:"
READMES = [ROOT / "README.md", ROOT / "pipelines" / "README.md"]
# Why a line may not run. A new reason is added here, where review sees it; a file the
# README never makes is not one (make it in the block: `cat > FILE <<'EOF'`).
REASONS = {
    "it is the test suite",
    "needs a KServe server (tests/backends/test_remote.py starts one)",
    "services on fixed ports (tests/pipeline/test_pipeline_serve.py runs this pipeline)",
    "services on fixed ports (tests/pipeline/test_dataflow_serve.py runs this graph)",
    "several machines",
}
# The example guests' sources, which the README shows and the test does not run
SHIPPED = ["guest/adder/app.py", "guest/adder-lib/app.py", "guest/adder-lib/adder.wit"]


@dataclasses.dataclass(frozen=True)
class Line:
    where: str     # README.md:12 section-heading
    command: str
    expect: tuple[str, ...]  # text the output must contain
    skip: str | None         # why it is not run


def _blocks(text: str):
    """(first line number, info string, lines, section) of each fenced block; the section
    is its heading's words joined by hyphens (`-k your-own-component` selects them)."""
    lines = text.splitlines()
    section = ""
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if m:
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            yield i + 2, m.group(1), lines[i + 1:j], section
            i = j
        elif lines[i].startswith("#"):
            section = "-".join(re.findall(r"\w+", lines[i].lower()))
        i += 1


def _split_comment(line: str) -> tuple[str, str]:
    """A shell line and its trailing comment (a `#` outside quotes, after a space)."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1] in " \t"):
            return line[:k].rstrip(), line[k:]
    return line.rstrip(), ""


def _shipped(block: list[str]) -> bool:
    return "\n".join(block) + "\n" in {(ROOT / f).read_text() for f in SHIPPED}


def readme_lines(path: pathlib.Path) -> list[Line]:
    out = []
    for start, info, block, section in _blocks(path.read_text()):
        where = lambda k: f"{path.relative_to(ROOT)}:{start + k} {section}"  # noqa: E731
        if info in ("python", "wit"):
            if info == "wit" or _shipped(block):
                continue  # test_the_readme_shows_the_example_guests_as_shipped
            shown = tuple(c.split("# prints:", 1)[1].strip() for c in block if "# prints:" in c)
            out.append(Line(where(0), "python - <<'PYTHON'\n" + "\n".join(block) + "\nPYTHON", shown, None))
        elif info == "sh":
            block_skip = block[0][len(SKIP):].strip() if block and block[0].startswith(SKIP) else None
            exports = ""  # `export NAME=...` lines hold for the rest of their block
            k = 0
            while k < len(block):
                first, command, comment = k, *_split_comment(block[k])
                while command.endswith("\\"):  # a continued line
                    k += 1
                    more, comment = _split_comment(block[k])
                    command = command[:-1] + " " + more.strip()
                k += 1
                heredoc = re.search(r"<<-?\s*'?([A-Za-z_]\w*)'?", command)
                if heredoc:  # its text, to the terminator, goes with the line
                    end = block.index(heredoc.group(1), k)
                    command = "\n".join([command, *block[k:end + 1]])
                    k = end + 1
                if command.startswith("export "):
                    exports += command + "; "
                elif command:
                    command = exports + command
                    skip = block_skip or (comment.split(SKIP, 1)[1].strip() if SKIP in comment else None)
                    shown = comment.split("# prints:", 1)[1].strip() if "# prints:" in comment else None
                    out.append(Line(where(first), command, (shown,) if shown else (), skip))
        else:  # a transcript: `$ command` and what it prints
            for k, text in enumerate(block):
                if text.startswith("$ "):
                    command, comment = _split_comment(text[2:])
                    shown = [s for s in block[k + 1:] if s.strip() and "..." not in s]
                    skip = comment.split(SKIP, 1)[1].strip() if SKIP in comment else None
                    out.append(Line(where(k), command, tuple(dict.fromkeys(shown)), skip))
    return out


ALL = [line for path in READMES for line in readme_lines(path)]


def test_the_readmes_have_command_lines_and_skip_only_what_cannot_run_here():
    assert len([line for line in ALL if not line.skip]) >= 15
    assert {line.skip for line in ALL if line.skip is not None} <= REASONS, \
        [(line.where, line.skip) for line in ALL if line.skip is not None and line.skip not in REASONS]


def test_every_wit_block_is_a_shipped_file():
    # a WIT of the user's own is written by a heredoc in a sh block, which runs
    for _, info, block, _ in _blocks((ROOT / "README.md").read_text()):
        assert info != "wit" or _shipped(block), "\n".join(block)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> pathlib.Path:
    """The repository's entries, linked, but an `out/` of its own."""
    work = tmp_path_factory.mktemp("readme")
    for entry in ROOT.iterdir():
        if entry.name not in ("out", ".git"):
            (work / entry.name).symlink_to(entry)
    return work


_RAN: set[str] = set()


@pytest.mark.parametrize("line", ALL, ids=[f"{line.where} {line.command.splitlines()[0][:60]}" for line in ALL])
def test_readme_line_runs(line: Line, workdir):
    if line.skip:
        pytest.skip(line.skip)
    if line.command in _RAN and not line.expect:
        pytest.skip("the same command ran earlier")
    _RAN.add(line.command)
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
           # the suite's cache (kept between runs: entries are keyed by content)
           "XDG_CACHE_HOME": str(xdg_cache_home()), "VIRTUAL_ENV": str(ROOT / ".venv")}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", line.command], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{line.where}: `{line.command}` exited {proc.returncode}:\n{printed[-3000:]}"
    assert "Traceback" not in printed, printed
    for text in line.expect:
        assert text.strip() in printed, f"{line.where}: expected {text.strip()!r} in:\n{printed[-3000:]}"


@pytest.mark.parametrize("shipped", SHIPPED)
def test_the_readme_shows_the_example_guests_as_shipped(shipped):
    blocks = ["\n".join(lines) + "\n" for _, info, lines, _ in _blocks((ROOT / "README.md").read_text())
              if info in ("python", "wit")]
    assert (ROOT / shipped).read_text() in blocks


def test_the_adder_model_is_what_its_script_makes():
    script = ROOT / "models" / "adder" / "make.py"
    namespace: dict = {}
    exec(compile(script.read_text(), str(script), "exec"), namespace)
    assert namespace["adder"]().SerializeToString() == (ROOT / "models" / "adder" / "model.onnx").read_bytes()
