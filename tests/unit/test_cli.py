"""The `batchpred` command: every flow it offers exists and takes the CLI's arguments."""

import importlib

import pytest

from batchpred import cli


@pytest.mark.parametrize("name", cli.FLOWS)
def test_every_flow_command_has_a_module_with_main(name):
    module = importlib.import_module(f"flows.{name}")
    assert callable(module.main)
    assert module.__doc__


def test_unknown_flow_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "nope"])
    assert "invalid choice" in capsys.readouterr().err
