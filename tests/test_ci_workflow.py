"""The documented GitHub Actions workflow (docs/ci/onnx-gate.yml): its `run:` blocks, executed as bash
scripts the way Actions runs them, in a user's project folder, so that the workflow cannot rot.

Not run here: the `Install` step (no network in tests) and the `uses:` actions (GitHub's and the action
authors' code). The cheap steps (compare, the comment, the verdict, the dashboard file) run in `make test`
on recorded runs; the ones that run a whole gate are in the slow tier (tests/conftest.py says how to run it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import SMALL_LOCALIZATION_NET

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "docs" / "ci" / "onnx-gate.yml"
DATA = Path(__file__).parent / "data" / "bench"
NOT_RUN = {"Install"}  # needs the network
EXPRESSION = re.compile(r"\$\{\{\s*([^}]+?)\s*\}\}")


def workflow_steps() -> list[dict]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["gate"]["steps"]


def run_steps(event: str) -> list[dict]:
    """The steps with a `run:` block that Actions runs on ``event``, in order."""
    wanted = {"pull_request": "github.event_name == 'pull_request'", "push": "github.event_name == 'push'"}[event]
    return [s for s in workflow_steps() if "run" in s and s.get("name") not in NOT_RUN
            and (s.get("if") is None or wanted in s["if"])]


@dataclass
class Runner:
    """Runs workflow steps as Actions does: `bash --noprofile --norc -eo pipefail`, GITHUB_OUTPUT per step."""

    folder: Path
    env: dict[str, str]
    secrets: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)

    def resolve(self, text: str) -> str:
        def value(match: re.Match[str]) -> str:
            scope, *rest = match.group(1).split(".")
            if scope == "steps":
                return self.outputs.get(rest[0], {}).get(rest[2], "")
            if scope == "secrets":
                return self.secrets[rest[0]]
            raise AssertionError(f"the test does not know the expression {match.group(0)!r}")

        return EXPRESSION.sub(value, text)

    def run(self, step: dict) -> subprocess.CompletedProcess[str]:
        output_file = self.folder / f".github-output-{len(self.outputs)}"
        output_file.write_text("")
        script = self.folder / ".step.sh"
        script.write_text(self.resolve(step["run"]))
        env = {**self.env, **{k: self.resolve(str(v)) for k, v in step.get("env", {}).items()},
               "GITHUB_OUTPUT": str(output_file)}
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=self.folder,
                              env=env, capture_output=True, text=True, timeout=900)
        lines = [line.split("=", 1) for line in output_file.read_text().splitlines() if "=" in line]
        self.outputs[step.get("id", f"step{len(self.outputs)}")] = dict(lines)
        return done


def _runner(folder: Path, **secrets: str) -> Runner:
    workflow_env = yaml.safe_load(WORKFLOW.read_text()).get("env", {})
    env = {**os.environ, **{k: str(v) for k, v in workflow_env.items()},
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GATE_OPTIONS": "--gate-config gate.toml --gate-bench-quick --hypothesis-profile=smoke"}
    return Runner(folder, env, secrets)


def _project(folder: Path, *history_runs: dict) -> None:
    (folder / "gate.toml").write_text(SMALL_LOCALIZATION_NET % {"exporter": "torchscript"} + "\n[bench]\nbatches = [1, 4]\n")
    shutil.copy(Path(__file__).parent / "user_models.py", folder / "user_models.py")
    history = folder / "reports" / "history"
    history.mkdir(parents=True, exist_ok=True)
    for document in history_runs:
        (history / f"{document['onnx_gate']['run_id']}.json").write_text(json.dumps(document))


def _recorded(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def _unbeatable_main_run() -> dict:
    """A recorded run with PyTorch 1000x slower: any real run of the same model is a regression against it."""
    document = _recorded("base")
    section = document["onnx_gate"]
    section["run_id"] = "20000101T000000Z-main"  # older than any run the test makes
    for record in section["records"]:
        if record["backend"] == "pytorch":
            record["samples"] = [s * 1000 for s in record["samples"]]
            record["median"] *= 1000
    section["speedups"]["cpu"] = {b: v * 1000 for b, v in section["speedups"]["cpu"].items()}
    return document


def _step(name: str, event: str = "pull_request") -> dict:
    return next(s for s in run_steps(event) if s.get("name") == name)


def test_every_run_block_of_the_workflow_is_exercised_by_these_tests():
    names = [s.get("name") for s in workflow_steps() if "run" in s]
    exercised = {"Gate (pull request)", "Compare with main", "Verdict", "Gate and publish (main)", "Dashboard file (main)"}
    assert set(names) == exercised | NOT_RUN, names  # a new step needs a test here


@pytest.mark.checks
def test_the_pull_request_steps_post_a_regression_first_and_fail_the_job(tmp_path):
    main_run = _recorded("base")
    main_run["onnx_gate"]["run_id"] = "20000101T000000Z-main"
    _project(tmp_path, main_run, _recorded("slow"))  # the recorded slowdown stands in for the PR's gate run
    runner = _runner(tmp_path)
    runner.outputs["gate"] = {"status": "0", "run": "20261130T000020Z-slow"}
    compared = runner.run(_step("Compare with main"))
    assert compared.returncode == 0, compared.stderr  # the step records the status, the Verdict step fails
    assert runner.outputs["compare"]["status"] == "1"
    comment = (tmp_path / "comment.md").read_text()
    assert comment.startswith("### ❌ onnx-gate benchmarks: REGRESSED | ") and "<details>" in comment
    verdict = runner.run(_step("Verdict"))
    assert verdict.returncode != 0 and "gate exit status 0, compare exit status 1" in verdict.stdout


@pytest.mark.checks
def test_the_first_pull_request_has_nothing_to_compare_says_so_and_passes(tmp_path):
    _project(tmp_path, _recorded("noise"))  # only the PR's own run: no main run in the cache yet
    runner = _runner(tmp_path)
    runner.outputs["gate"] = {"status": "0", "run": "20261130T000010Z-noise"}
    assert runner.run(_step("Compare with main")).returncode == 0
    comment = (tmp_path / "comment.md").read_text()
    assert comment.startswith("### onnx-gate benchmarks: no comparison") and "need 2 benchmark run(s)" in comment
    assert runner.run(_step("Verdict")).returncode == 0


def test_the_main_dashboard_step_writes_custom_smaller_is_better_json(tmp_path):
    _project(tmp_path, _recorded("base"))
    done = _runner(tmp_path).run(_step("Dashboard file (main)", "push"))
    assert done.returncode == 0, done.stderr
    entries = json.loads((tmp_path / "bench-results.json").read_text())
    assert entries and all({"name", "unit", "value"} <= set(e) for e in entries)


@pytest.mark.slow
def test_the_pull_request_job_runs_the_gate_compares_with_main_and_fails_on_a_regression(tmp_path):
    _project(tmp_path, _unbeatable_main_run())
    runner = _runner(tmp_path)
    results = {s["name"]: runner.run(s) for s in run_steps("pull_request")}
    assert runner.outputs["gate"]["status"] == "0", results["Gate (pull request)"].stdout[-3000:]
    run_id = runner.outputs["gate"]["run"]
    assert (tmp_path / "reports" / run_id / "summary.md").is_file()  # what upload-artifact uploads
    assert (tmp_path / "reports" / "compare" / "latest" / "compare.json").is_file()
    assert runner.outputs["compare"]["status"] == "1"
    assert (tmp_path / "comment.md").read_text().startswith("### ❌ onnx-gate benchmarks: REGRESSED")
    assert results["Verdict"].returncode != 0


@pytest.mark.slow
def test_the_main_job_publishes_to_the_real_stack_and_writes_the_dashboard_file(tmp_path, stack):
    _, environment = stack
    _project(tmp_path)
    runner = _runner(tmp_path, **environment)
    for step in run_steps("push"):
        done = runner.run(step)
        assert done.returncode == 0, f"{step['name']}: {done.stdout[-3000:]}{done.stderr[-2000:]}"
    document = json.loads(next((tmp_path / "reports").glob("*/gate.json")).read_text())
    assert document["publish"]["status"] == "published" and document["publish"]["version"] == "1"
    assert json.loads((tmp_path / "bench-results.json").read_text())
