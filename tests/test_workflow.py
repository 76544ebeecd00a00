"""The CI workflow (.github/workflows/ml-pipeline.yml): the guide's test -> train -> validate ->
deploy-to-staging pipeline, whose every command is a Makefile target that also runs locally."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import guide

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "ml-pipeline.yml"


def workflow() -> dict[str, Any]:
    loaded = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def run_steps() -> list[tuple[str, str, str]]:
    """``(job, step name, command)`` of every step that runs a command."""
    return [
        (job_name, step.get("name", ""), step["run"])
        for job_name, job in workflow()["jobs"].items()
        for step in job["steps"]
        if "run" in step
    ]


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9_.-]+):(?!=)", text, flags=re.MULTILINE))


def test_the_workflow_is_the_guides_pipeline() -> None:
    ours = workflow()
    theirs = yaml.safe_load(guide.block("### 2. CI/CD Pipeline for ML", language="yaml"))
    assert ours["name"] == theirs["name"]
    assert list(ours["jobs"]) == list(theirs["jobs"])
    for job in ("train", "deploy"):
        guide_steps = [s["name"] for s in theirs["jobs"][job]["steps"] if "run" in s]
        our_steps = [s["name"] for s in ours["jobs"][job]["steps"] if "run" in s]
        assert set(guide_steps) <= set(our_steps), job
        assert ours["jobs"][job].get("needs") == theirs["jobs"][job].get("needs")
    assert ours["jobs"]["train"]["if"] == theirs["jobs"]["train"]["if"]


def test_the_workflow_triggers_and_steps() -> None:
    loaded = workflow()
    # YAML 1.1 reads the key `on` as True.
    triggers = loaded.get("on", loaded.get(True))
    assert set(triggers) == {"push", "pull_request"}
    assert "src/retailml/**" in triggers["push"]["paths"]
    jobs = loaded["jobs"]
    assert list(jobs) == ["test", "train", "deploy"]
    assert jobs["train"]["needs"] == "test" and jobs["deploy"]["needs"] == "train"
    assert "refs/heads/main" in jobs["train"]["if"]
    names = {job: [s.get("name") for s in spec["steps"]] for job, spec in jobs.items()}
    assert {"Train model", "Validate model"} <= set(names["train"])
    assert {"Deploy to staging", "Run deployment tests"} <= set(names["deploy"])
    commands = {name: command for _, name, command in run_steps()}
    assert commands["Train model"].startswith("make train ")
    assert commands["Validate model"] == "make validate-model"
    assert commands["Deploy to staging"] == "make deploy-staging"
    assert commands["Run deployment tests"].startswith("make test-deployment")


@pytest.mark.parametrize(("job", "step", "command"), run_steps(), ids=lambda v: str(v)[:40])
def test_every_run_step_is_a_make_target_that_exists_and_dry_runs(
    job: str, step: str, command: str
) -> None:
    words = shlex.split(command.replace("${{ vars.STAGING_URL }}", ""))
    assert words[0] == "make" and "\n" not in command.strip(), (job, step, command)
    targets = [w for w in words[1:] if "=" not in w]
    assert len(targets) == 1, f"{step!r} runs {command!r}: one make target per step"
    assert targets[0] in make_targets()
    dry = subprocess.run(
        ["make", "-n", *words[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip(), f"make -n {targets[0]} would do nothing"


def test_the_pipeline_targets_run_the_retailml_cli_on_the_workspace() -> None:
    dry = subprocess.run(
        ["make", "-n", "ml-pipeline", "ML_HOME=/tmp/elsewhere", "MODEL_VERSION=1.2.3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for command in (
        "retailml train --config configs/sales_forecast.yaml --output-dir "
        "/tmp/elsewhere/artifacts/models",
        "retailml validate --model-path /tmp/elsewhere/artifacts/models/latest",
        "retailml register --model-path /tmp/elsewhere/artifacts/models/latest "
        "--name sales_forecast",
        "retailml deploy --environment staging --model sales_forecast --version 1.2.3",
        "retailml serve --environment staging",
    ):
        assert command in " ".join(dry.split()).replace("\\ ", ""), command
    assert "RETAILML_HOME=/tmp/elsewhere" in dry
