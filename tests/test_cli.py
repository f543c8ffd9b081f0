import pytest
from click.testing import CliRunner

from emofuse import __version__
from emofuse.cli import cli


def test_version_and_help_list_commands() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_every_cli_module_command_is_reachable_by_name() -> None:
    import importlib

    from emofuse.cli import COMMAND_MODULES

    areas = sorted(set(COMMAND_MODULES.values()))
    defined = {
        command.name: area
        for area in areas
        for command in importlib.import_module(f"emofuse.cli.{area}").COMMANDS
    }
    assert defined == COMMAND_MODULES
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMAND_MODULES:
        assert f"  {name} " in result.output


def test_a_command_imports_only_its_own_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from emofuse.cli import cli; "
        "cli(['verify', '--help'], standalone_mode=False); "
        "print(sorted(m for m in ('sklearn', 'transformers', 'emofuse.extract') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


NUMBERS = [  # (command line, option): each value means nothing, and each raised a traceback or
    # was taken silently before (heads --text-dim 0 listed heads for 0-wide text)
    (["heads", "--speech-dim", "0"], "--speech-dim"),  # ZeroDivisionError
    (["heads", "--speech-dim", "-5"], "--speech-dim"),  # RuntimeError
    (["heads", "--text-layers", "-1"], "--text-layers"),
    (["heads", "--text-dim", "0"], "--text-dim"),
    (["heads", "--speaker-dim", "0"], "--speaker-dim"),
    (["heads", "--speech-layers", "0"], "--speech-layers"),
    (["heads", "--classes", "1"], "--classes"),
    (
        [
            "train",
            "--cache",
            "c.h5",
            "--split",
            "loso",
            "--head",
            "pooled",
            "--out",
            "r",
            "--seed",
            "-1",
        ],
        "--seed",
    ),  # fmt: skip
    (["corpus", "folds", "--root", "x", "--split", "loso", "--seed", "-1"], "--seed"),
    (["corpus", "synth", "--out", "s", "--seed", "-1"], "--seed"),
    (["corpus", "synth", "--out", "s", "--others-per-speaker", "-1"], "--others-per-speaker"),
    (["demo", "--out", "d", "--seed", "-1"], "--seed"),
    (["predict", "--run", "r", "--fold", "0", "a.wav"], "--fold"),
]


@pytest.mark.parametrize(
    "args, option", NUMBERS, ids=[" ".join(a[:2] + a[-2:]) for a, _ in NUMBERS]
)
def test_a_meaningless_number_is_one_usage_line_naming_the_option(
    tmp_path, monkeypatch, args, option
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: Invalid value for '{option}'"), lines[0]
    assert "Traceback" not in result.output and list(tmp_path.iterdir()) == []
