"""The README's commands, executed (with a tiny preset: small --steps, tiny policies)."""

import re
import shlex
from pathlib import Path

import pytest

from genworld.cli import main

README = Path(__file__).parents[1] / "README.md"
TINY_STEPS = "300"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def _tiny(argv: list[str]) -> list[str]:
    if argv[:2] == ["train", "world-model"]:
        argv = [a for i, a in enumerate(argv) if a != "--scale" and argv[i - 1] != "--scale"]
        argv += ["--scale", "tiny", "--quiet"]
    if argv[:2] == ["data", "build"]:
        argv = [a for i, a in enumerate(argv) if a != "--steps" and argv[i - 1] != "--steps"]
        argv += ["--steps", TINY_STEPS, "--quiet"]
    if argv[:1] in (["ablate"], ["sweep"], ["unseen"], ["table"]):
        drop = {"--scale", "--seeds", "--qualities", "--envs", "--values"}
        argv = [a for i, a in enumerate(argv) if a not in drop and argv[i - 1] not in drop]
        argv += ["--scale", "tiny", "--seeds", "1", "--quiet"]
        if argv[0] != "unseen":
            argv += ["--qualities", "medium", "--envs", "hopper"]
        if argv[0] == "sweep":
            argv += ["--values", "0,1"]
    if argv[:1] == ["bench"]:
        json_out = argv[argv.index("--json") : argv.index("--json") + 2] if "--json" in argv else []
        argv = ["bench", "matmul_peak", "--quick", *json_out]  # the suite itself: -m bench
    if argv[:2] in (
        ["train", "agnostic-iql"],
        ["train", "agnostic-transfer"],
        ["train", "agnostic-ablations"],
    ):
        argv = [a for i, a in enumerate(argv) if a != "--scale" and argv[i - 1] != "--scale"]
        argv += ["--scale", "tiny", "--quiet"]
    if argv[:1] == ["table"] and "--executor" in argv:  # Ray is optional: the local pool
        argv = [a for i, a in enumerate(argv) if a != "--executor" and argv[i - 1] != "--executor"]
        argv += ["--executor", "local"]
    if argv[:1] == ["run"]:
        argv = [a for i, a in enumerate(argv) if a != "--scale" and argv[i - 1] != "--scale"]
        argv += ["--scale", "tiny", "--quiet"]
    return argv


@pytest.mark.integration
def test_readme_quick_start_and_data_commands(all_tiny_policies, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    assert commands[:2] == ["make run", "make test"]
    ran = 0
    for command in commands:
        if command == "make run":  # the Makefile's run target is `genworld run`
            assert "$(BIN)/genworld run" in (README.parent / "Makefile").read_text()
            command = "genworld run"
        if not command.startswith("genworld "):
            continue  # make test / pytest / ruff: this very suite and the linter
        assert main(_tiny(shlex.split(command)[1:])) == 0, command
        ran += 1
    assert ran >= 6
    out = capsys.readouterr().out
    assert "genworld/hopper/medium-v0: OK" in out


def test_readme_python_example_runs(all_tiny_policies, tmp_path, monkeypatch, capsys):
    """The README's Python API example, executed as written (it uses the tiny scale)."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks and "import genworld.api" in blocks[0]
    exec(compile(blocks[0], "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert float(printed[0]) == float(printed[0])  # a score, not NaN
    assert (tmp_path / "runs" / "api_run" / "report.json").exists()
    assert (tmp_path / "runs" / "api_table" / "table.json").exists()
