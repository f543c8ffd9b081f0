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
