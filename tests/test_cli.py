"""The console entry point itself: help lists every subcommand, `python -m wav2lip` works."""
import subprocess
import sys

from wav2lip.cli import SUBCOMMANDS, main


def test_module_entry_prints_help():
    out = subprocess.run([sys.executable, "-m", "wav2lip", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert name.replace("_", "-") in out.stdout


def test_no_subcommand_is_usage_error(capsys):
    assert main([]) == 2
