"""Every snippet of README.md runs as written.

* Python blocks: each is executed on its own (as a reader pastes it), in a temporary working
  directory; before that, a static check finds names that a block uses but never defines or imports
  (the mistake a reader meets first).
* ``medrecon`` command lines in bash blocks (also after ``torchrun ... -m medrecon.cli.main``): parsed
  by the real parser, and their config with every ``--set`` loaded and checked as the command would
  before doing any work (running them in full takes minutes: the demo's time is measured and stated
  in the README instead).
"""

from __future__ import annotations

import ast
import builtins
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of each fenced block in ``language``."""
    out = []
    for m in re.finditer(rf"^```{language}\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE):
        out.append((README[: m.start()].count("\n") + 1, m.group(1)))
    return out


PYTHON = _blocks("python")
BASH = _blocks("bash")


def _undefined_names(code: str) -> set[str]:
    """Names loaded somewhere in ``code`` that no statement of it binds (imports, assignments, loops,
    function and class definitions, comprehension targets), and that are not builtins."""
    tree = ast.parse(code)
    bound, used = set(dir(builtins)), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
            if not isinstance(node, ast.ClassDef):
                bound |= {a.arg for a in node.args.args + node.args.kwonlyargs}
        elif isinstance(node, ast.Lambda):
            bound |= {a.arg for a in node.args.args + node.args.kwonlyargs}
        elif isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, (ast.Store, ast.Del)) else used).add(node.id)
    return used - bound


def test_readme_has_the_snippets_this_file_checks():
    assert len(PYTHON) >= 3 and len(BASH) >= 3


@pytest.mark.parametrize("line, code", PYTHON, ids=[f"line{n}" for n, _ in PYTHON])
def test_python_snippet_defines_what_it_uses(line, code):
    assert not _undefined_names(code), f"README.md line {line}: undefined {sorted(_undefined_names(code))}"


# A snippet that runs a learned prior is marked slow: the tour's 300-step flow MAP takes 15-50 s on a
# busy 2-core machine; the others take a few seconds.
_RUNS = [
    pytest.param(n, code, id=f"line{n}", marks=[pytest.mark.slow] if '"flow"' in code else [])
    for n, code in PYTHON
]


@pytest.mark.parametrize("line, code", _RUNS)
def test_python_snippet_runs(line, code, tmp_path, monkeypatch, capsys):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})  # noqa: S102 - our own README


def _commands() -> list[tuple[int, list[str]]]:
    """Each ``medrecon`` command of the bash blocks as argv (continuations joined, comments dropped)."""
    out = []
    for line, code in BASH:
        text = code.replace("\\\n", " ")
        for offset, raw in enumerate(text.splitlines()):
            raw = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#!") else ""
            if not raw:
                continue
            words = shlex.split(raw)
            if words[0] == "srun":
                words = words[1:]
            if words[0] == "medrecon":
                out.append((line + offset, words[1:]))
            elif "medrecon.cli.main" in words:
                out.append((line + offset, words[words.index("medrecon.cli.main") + 1 :]))
    return out


COMMANDS = _commands()


def test_readme_shows_both_commands():
    assert {argv[0] for _, argv in COMMANDS} >= {"reconstruct", "train"}


@pytest.mark.parametrize("line, argv", COMMANDS, ids=[f"line{n}" for n, _ in COMMANDS])
def test_cli_command_is_valid(line, argv, monkeypatch, tmp_path):
    """The command parses and its config with the overrides passes every check made before work starts."""
    from medrecon.cli.main import build_parser

    monkeypatch.chdir(REPO)
    args = build_parser().parse_args([a.replace("$SLURM_JOB_ID", "1") for a in argv])
    if args.command == "reconstruct":
        from medrecon.experiment import load_experiment_config
        from medrecon.experiment.build import check_resources

        cfg = load_experiment_config(args.config, args.overrides)
        if "cuda" not in cfg.device:
            check_resources(cfg)
    else:
        from medrecon.training.run import _load

        cfg = _load(args.config, args.overrides)
        assert cfg.model.name and cfg.train.epochs >= 1
