"""The benchmark is an app installed on demand: ``BULKOPS_BENCHMARKS=1`` adds its
commands; without it the product's ``manage.py`` knows none of them."""

import subprocess

import pytest

from benchmarks.processes import MANAGE, ROOT, current_env


def _help(command: str, *, installed: bool) -> subprocess.CompletedProcess:
    env = current_env()
    if installed:
        env["BULKOPS_BENCHMARKS"] = "1"
    return subprocess.run(
        [*MANAGE, "help", command], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


@pytest.mark.parametrize(
    ("command", "option"), [("bulkops_bench", "--small-ops"), ("seed_scale", "--owners")]
)
def test_the_toggle_installs_the_benchmark_commands(command, option):
    installed = _help(command, installed=True)
    assert installed.returncode == 0, installed.stderr
    assert option in installed.stdout

    missing = _help(command, installed=False)
    assert missing.returncode != 0
    assert f"Unknown command: '{command}'" in missing.stderr
