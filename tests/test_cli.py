from click.testing import CliRunner

from emofuse import __version__
from emofuse.cli import cli


def test_version_and_help_list_commands() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output
