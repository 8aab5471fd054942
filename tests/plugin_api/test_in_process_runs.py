"""``TitanRunner.run_in_process``: a job in the test's process, with a record of its hook calls.

What a plugin test relies on: a plugin written in the test (``add_plugin``) takes part in
the in-process run and is gone afterwards (its folder off ``sys.path``, its module
forgotten, the plugins scanned again), so the next runner's plugin of the same name is
its own; the record holds each call's arguments as passed (live objects); a job of two
ranks, whose hooks would run in other processes, stops before launch; and
``record_hook_calls`` watches hook calls around any in-process command, and stops
watching on exit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from titan.core.errors import PluginError
from titan.core.plugins import load_plugins
from titan.core.testing import TitanRunner, record_hook_calls, titan_in_process

PROBE = """
from titan.core import hookimpl


@hookimpl
def titan_step_end(step, metrics):
    metrics["probe"] = step * {factor}
"""


def test_a_plugin_written_in_the_test_runs_in_process_and_is_gone_after(
    titan_runner: TitanRunner, tmp_path: Path
) -> None:
    cwd = os.getcwd()
    module = titan_runner.add_plugin("probe", PROBE.format(factor=10))
    result = titan_runner.run_in_process("--plugins=probe", "--training.steps=2").assert_ok()
    ends = result.calls("titan_step_end")
    assert [c.kwargs["step"] for c in ends] == [1, 2]
    assert all("probe" in c.plugins for c in ends)
    assert [c.kwargs["metrics"]["probe"] for c in ends] == [10, 20]  # the dict the plugin got
    assert result.metric("probe") == {1: 10, 2: 20}
    assert result.hook_names.index("titan_train_start") < result.hook_names.index("titan_step_end")

    assert module not in sys.modules
    assert str(titan_runner.site) not in sys.path
    assert "probe" not in load_plugins().infos
    assert os.getcwd() == cwd

    other = TitanRunner(tmp_path / "other")
    other.add_plugin("probe", PROBE.format(factor=100))
    again = other.run_in_process("--plugins=probe", "--training.steps=1").assert_ok()
    assert again.metric("probe") == {1: 100}  # this runner's plugin, not the first one's


def test_a_job_of_two_ranks_stops_before_launch(titan_runner: TitanRunner) -> None:
    result = titan_runner.run_in_process("--nproc=2")
    assert result.returncode == 2, result.output
    assert "use TitanRunner.run for it" in result.stderr
    [check] = result.calls("titan_validate_config")
    assert check.kwargs["layout"].world_size == 2
    assert isinstance(check.error, PluginError)
    assert "titan_train_start" not in result.hook_names
    assert not result.metrics


def test_record_hook_calls_around_any_in_process_command(tmp_path: Path) -> None:
    with record_hook_calls() as calls:
        code, _, err = titan_in_process("run", "--dry-run", f"--job.dump_folder={tmp_path}")
    assert code == 0, err
    names = [c.name for c in calls]
    [check] = [c for c in calls if c.name == "titan_validate_config"]
    assert set(check.kwargs) == {"config", "active", "layout", "model_args"}
    assert check.kwargs["layout"].world_size == 1
    assert "titan_convert_model" not in names  # a dry run builds nothing

    seen = len(calls)
    load_plugins().pm.hook.titan_config_sections()
    assert len(calls) == seen  # no longer watching
