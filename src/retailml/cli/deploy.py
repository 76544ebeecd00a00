"""``retailml register``, ``deploy``, ``promote``, ``rollback`` and ``ab``: the deployment path."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from retailml.cli._console import err, out
from retailml.core.errors import ConfigError, problem
from retailml.core.io import read_yaml_mapping
from retailml.core.settings import get_settings

STRATEGIES = ("direct", "canary", "blue-green")
TARGETS = ("local", "kubernetes")

ab_app = typer.Typer(
    help="A/B tests of competing models: create, read results, conclude.",
    no_args_is_help=True,
)


def _choice(value: str, valid: tuple[str, ...], option: str) -> str:
    if value not in valid:
        raise ConfigError(
            problem(f"one of {', '.join(valid)}", repr(value), "pick one of those", subject=option)
        )
    return value


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def _server(environment: str) -> Any:
    from retailml.deployment.model_server import ModelServer

    return ModelServer(_choice(environment, ("staging", "production"), "--environment"))


def _split(text: str) -> dict[str, float]:
    blue, _, green = text.partition("/")
    try:
        return {"blue": float(blue), "green": float(green)}
    except ValueError:
        pass
    raise ConfigError(
        problem("BLUE/GREEN percentages such as 90/10", repr(text), "pass e.g. --split 90/10")
    )


def _thresholds(
    pairs: list[str] | None, window: float | None, min_requests: int | None
) -> dict[str, float]:
    thresholds: dict[str, float] = {}
    for text in pairs or []:
        name, sep, value = text.partition("=")
        try:
            thresholds[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ConfigError(
                problem(
                    "NAME=NUMBER such as error_rate=0.01 or latency_p95=1000",
                    repr(text),
                    "correct the --threshold",
                    subject="--threshold",
                )
            )
    if window is not None:
        thresholds["window_seconds"] = window
    if min_requests is not None:
        thresholds["min_requests"] = min_requests
    return thresholds


def _print_deployment(deployment: Any) -> None:
    colour = {"active": "green", "failed": "red"}.get(deployment.status, "yellow")
    out.print(
        f"deployment {deployment.id}: {deployment.model_name} {deployment.version} -> "
        f"{deployment.environment}: [{colour}]{deployment.status}[/{colour}] "
        f"({deployment.replicas} replica(s))"
    )
    for check in deployment.health.get("checks", []):
        mark = "skipped" if check.get("skipped") else ("ok" if check["ok"] else "FAILED")
        out.print(f"  {check['name']:<17} {mark:<8} {escape(str(check['detail']))}")
    if deployment.reason:
        out.print(f"  reason: {escape(deployment.reason)}")


def _print_rollout(rollout: Any) -> None:
    colour = {"promoted": "green", "rolled_back": "red"}.get(rollout.state, "yellow")
    split = rollout.traffic_split
    out.print(
        f"rollout {rollout.id} ({rollout.strategy}): {rollout.model_name} "
        f"{rollout.current_version} (blue, {split['blue']:g}%) -> {rollout.new_version} "
        f"(green, {split['green']:g}%) in {rollout.environment}: "
        f"[{colour}]{rollout.state}[/{colour}]"
    )
    for arm in ("blue", "green"):
        stats = rollout.observed.get(arm)
        if stats and stats["requests"]:
            out.print(
                f"  {arm:<5} {stats['requests']:>7,} requests  error_rate {stats['error_rate']:.4f}"
                f"  latency_p95 {stats['latency_p95']:.1f} ms"
            )
    if rollout.reason or rollout.observed.get("decision"):
        out.print(f"  {escape(str(rollout.reason or rollout.observed['decision']))}")


def _print_outcome(outcome: Any, as_json: bool) -> None:
    """Print a Deployment or Rollout; exit 1 when it failed or was rolled back."""
    if as_json:
        _print_json(outcome.to_dict())
    elif hasattr(outcome, "state"):
        _print_rollout(outcome)
    else:
        _print_deployment(outcome)
    if getattr(outcome, "status", None) == "failed" or getattr(outcome, "state", None) == (
        "rolled_back"
    ):
        raise typer.Exit(code=1)


# --- register ---------------------------------------------------------------------------------


def register(
    model_path: Annotated[
        Path, typer.Option(help="A model directory written by `retailml train` (or its `latest`).")
    ],
    name: Annotated[
        str | None, typer.Option(help="Registered model name (default: the trained model's).")
    ] = None,
    version: Annotated[str, typer.Option(help="Semantic version, e.g. 1.2.0.")] = "",
    tag: Annotated[
        list[str] | None, typer.Option(help="A tag (repeatable), e.g. production_ready.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the version as JSON.")] = False,
) -> None:
    """Register a trained model as a new version in the model registry (digest recorded).

    Example: retailml register --model-path artifacts/models/latest --name segments --version 1.2.0
    """
    from retailml.deployment.model_server import ModelRegistry
    from retailml.training.model_trainer import TrainingResult

    if not version:
        raise ConfigError(
            problem("--version", "none", "pass e.g. --version 1.2.0", subject="register")
        )
    result = TrainingResult.load(model_path)
    metadata = {
        "model_type": result.model_type,
        "algorithm": result.algorithm,
        "performance_metrics": result.metrics,
        "run_id": result.run_id,
        "source_path": str(model_path.resolve()),
    }
    with ModelRegistry(get_settings()) as registry:
        registered = registry.register_model(
            name or result.model_name, version, result, metadata=metadata, tags=tag or []
        )
    if as_json:
        data = {
            key: getattr(registered, key)
            for key in ("model_name", "version", "mlflow_version", "status", "digest", "model_uri")
        }
        _print_json(data)
        return
    out.print(
        f"registered {registered.model_name} {registered.version} "
        f"(MLflow version {registered.mlflow_version}, sha256 {registered.digest[:12]})"
    )
    out.print(
        f"next: retailml deploy --environment staging --model {registered.model_name} "
        f"--version {registered.version}"
    )


# --- deploy -----------------------------------------------------------------------------------


def deploy(
    environment: Annotated[str, typer.Option(help="staging or production.")],
    model: Annotated[str | None, typer.Option(help="Registered model name.")] = None,
    version: Annotated[str | None, typer.Option(help="Version (or alias) to deploy.")] = None,
    replicas: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes (pods on Kubernetes); default 1."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="YAML deployment config (model_name, model_version, replicas, resources, "
            "auto_scaling); the options above override it.",
        ),
    ] = None,
    strategy: Annotated[
        str,
        typer.Option(help="direct, canary or blue-green (from the active version)."),
    ] = "direct",
    split: Annotated[str, typer.Option(help="Traffic BLUE/GREEN of a rollout.")] = "90/10",
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            help="A rollback threshold NAME=LIMIT (repeatable): error_rate, latency_p95 "
            "(ms), performance_drop. Default 0.01, 1000, 0.05."
        ),
    ] = None,
    window: Annotated[
        float | None, typer.Option(help="Seconds a rollout must stay healthy (default 300).")
    ] = None,
    min_requests: Annotated[
        int | None, typer.Option(min=1, help="Green requests needed before judging (default 50).")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Watch a rollout until it is promoted or rolled back.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="Stop watching after this many seconds.")
    ] = None,
    target: Annotated[
        str, typer.Option(help="local (this machine) or kubernetes (write manifests).")
    ] = "local",
    output: Annotated[
        Path | None, typer.Option(help="Directory for the Kubernetes manifests.")
    ] = None,
    image: Annotated[str, typer.Option(help="Container image of the manifests.")] = (
        "retailml:latest"
    ),
    namespace: Annotated[str, typer.Option(help="Namespace of the manifests.")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Deploy a registered model version, health-checked; or roll it out gradually.

    --strategy direct: the version is loaded (digest verified) and predicts its
    input example; if that passes it serves the environment (exit 1 if not).
    --strategy canary/blue-green: it takes --split of the traffic beside the
    active version and is rolled back automatically when a --threshold is
    crossed, or promoted after --window healthy seconds (--wait watches).
    --target kubernetes writes validated Deployment, Service and HPA manifests
    to --output and changes nothing else.

    Production needs an approved governance request for the version (see
    `retailml governance request`); without one the deploy is refused (exit 1).

    Example: retailml deploy --environment staging --model segments --version 1.2.0 --replicas 2
    """
    _choice(strategy, STRATEGIES, "--strategy")
    _choice(target, TARGETS, "--target")
    cfg: dict[str, Any] = {}
    if config is not None:
        cfg = read_yaml_mapping(
            config, subject="--config", shape="a deployment config (model_name, model_version, ...)"
        )
    if model:
        cfg["model_name"] = model
    if version:
        cfg["model_version"] = version
    if replicas is not None:
        cfg["replicas"] = replicas
    for key, flag in (("model_name", "--model"), ("model_version", "--version")):
        if not cfg.get(key):
            raise ConfigError(problem(flag, "none", f"pass {flag} (or {key} in --config)"))
    server = _server(environment)
    with server:
        if target == "kubernetes":
            _kubernetes(server, cfg, output, image, namespace, as_json)
            return
        if strategy == "direct":
            outcome = asyncio.run(server.deploy_model(config=cfg))
            if not as_json and outcome.active:
                err.print(
                    f"serve it: RETAILML_SERVE_ENVIRONMENT={environment} "
                    f"RETAILML_SERVE_WORKERS={outcome.replicas} retailml serve"
                )
            _print_outcome(outcome, as_json)
            return
        active = server.active_deployment(cfg["model_name"])
        if active is None:
            raise ConfigError(
                problem(
                    f"a version serving {environment} to roll out from",
                    "none",
                    "deploy the first version with --strategy direct",
                    subject="--strategy",
                )
            )
        rollout = asyncio.run(
            server.blue_green_deploy(
                cfg["model_name"],
                cfg["model_version"],
                active.version,
                _split(split),
                _thresholds(threshold, window, min_requests),
                strategy="canary" if strategy == "canary" else "blue_green",
            )
        )
        if wait and rollout.running:
            err.print(f"watching rollout {rollout.id} (Ctrl-C stops watching, not the rollout)")
            rollout = asyncio.run(server.watch_rollout(rollout.id, timeout_s=timeout))
        _print_outcome(rollout, as_json)


def _kubernetes(
    server: Any,
    cfg: dict[str, Any],
    output: Path | None,
    image: str,
    namespace: str,
    as_json: bool,
) -> None:
    from retailml.deployment.model_server import (
        parse_deployment_config,
        render_manifests,
        write_manifests,
    )

    if output is None:
        raise ConfigError(
            problem("--output DIR", "none", "pass --output k8s/", subject="--target kubernetes")
        )
    checked = parse_deployment_config(cfg)
    checked["model_version"] = server.registry.get_model_version(
        checked["model_name"], checked["model_version"]
    ).version
    if server.environment == "production":
        # Manifests are applied outside retailml: only an approved version gets them.
        from retailml.governance.model_governance import ModelGovernance

        ModelGovernance(server.settings, db=server.db).require_approval(
            checked["model_name"], checked["model_version"], "production"
        )
    manifests = render_manifests(
        checked, image=image, namespace=namespace, environment=server.environment
    )
    paths = write_manifests(manifests, output)
    if as_json:
        _print_json({"manifests": [str(p) for p in paths]})
        return
    for path, manifest in zip(paths, manifests, strict=True):
        out.print(f"wrote {path}  ({manifest['kind']} {manifest['metadata']['name']}, validated)")
    out.print(f"apply: kubectl apply -f {output}")


# --- promote and rollback ---------------------------------------------------------------------


def promote(
    model: Annotated[str, typer.Option(help="Registered model name.")],
    version: Annotated[
        str | None, typer.Option(help="Version serving staging (default: the staging one).")
    ] = None,
    split: Annotated[str, typer.Option(help="Traffic BLUE/GREEN of the canary.")] = "90/10",
    threshold: Annotated[
        list[str] | None, typer.Option(help="A rollback threshold NAME=LIMIT (repeatable).")
    ] = None,
    window: Annotated[
        float | None, typer.Option(help="Seconds the canary must stay healthy (default 300).")
    ] = None,
    min_requests: Annotated[
        int | None, typer.Option(min=1, help="Canary requests needed before judging.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Watch the canary until it is decided.")] = True,
    timeout: Annotated[
        float | None, typer.Option(help="Stop watching after this many seconds.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Promote the version serving staging to production.

    The version needs an approved governance request for production
    (`retailml governance request` / `approve`); without one it is refused.
    With nothing in production yet it is deployed directly (health-checked);
    otherwise it goes out as a canary beside the production version, watched
    against the rollback thresholds until promoted to 100 % or rolled back
    (exit 1).

    Example: retailml promote --model sales_forecast --version 1.2.0
    """
    with _server("staging") as staging:
        active = staging.active_deployment(model)
        if active is None or (version is not None and active.version != version):
            raise ConfigError(
                problem(
                    f"version {version or '(any)'} of {model!r} serving staging",
                    f"{active.version if active else 'nothing'!r} serving staging",
                    f"retailml deploy --environment staging --model {model} "
                    f"--version {version or 'VERSION'} first",
                    subject="promote",
                )
            )
        version = active.version
    with _server("production") as production:
        outcome = asyncio.run(
            production.promote(
                model,
                version,
                traffic_split=_split(split),
                rollback_threshold=_thresholds(threshold, window, min_requests),
                wait=wait,
                timeout_s=timeout,
            )
        )
        _print_outcome(outcome, as_json)


def rollback(
    model: Annotated[str, typer.Option(help="Registered model name.")],
    reason: Annotated[str, typer.Option(help="Why (recorded with who ran it).")],
    environment: Annotated[str, typer.Option(help="staging or production.")] = "production",
    actor: Annotated[
        str | None, typer.Option(help="Who rolls back (default: the OS user).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Restore the previous version in one step (the guide's emergency rollback).

    A running rollout is stopped (the current version keeps all traffic);
    otherwise the version before the active one serves again. Running it
    again does nothing more and says so.

    Example: retailml rollback --model sales_forecast --environment production --reason "errors"
    """
    with _server(environment) as server:
        result = server.rollback(model, reason=reason, actor=actor)
    if as_json:
        _print_json(result.to_dict())
        return
    head = "rolled back" if result.changed else "nothing to do"
    out.print(f"{head}: {escape(result.message)}")


# --- A/B tests --------------------------------------------------------------------------------


def _arm(text: str, option: str) -> dict[str, Any]:
    parts = text.split(":")
    try:
        if len(parts) == 3 and parts[0] and parts[1]:
            return {"name": parts[0], "version": parts[1], "traffic_percentage": float(parts[2])}
    except ValueError:
        pass
    raise ConfigError(
        problem(
            "NAME:VERSION:PERCENT such as sales_forecast_prophet:1.2.0:70",
            repr(text),
            "correct it",
            subject=option,
        )
    )


@ab_app.command("create")
def ab_create(
    name: Annotated[str, typer.Option(help="Unique test name.")],
    control: Annotated[str, typer.Option(help="Control arm NAME:VERSION:PERCENT.")],
    treatment: Annotated[str, typer.Option(help="Treatment arm NAME:VERSION:PERCENT.")],
    metrics: Annotated[
        str, typer.Option(help="Success metrics, comma-separated, primary first.")
    ] = "mape",
    days: Annotated[int, typer.Option(min=1, help="Planned duration in days.")] = 14,
    as_json: Annotated[bool, typer.Option("--json", help="Print the test as JSON.")] = False,
) -> None:
    """Start an A/B test of two model versions (sticky assignment per entity).

    Example: retailml ab create --name prophet_vs_xgboost --control prophet:1.2.0:70
    --treatment xgboost:1.0.0:30 --metrics mape,mae --days 14
    """
    from retailml.deployment.ab_testing import ABTestManager

    arms = {"control": _arm(control, "--control"), "treatment": _arm(treatment, "--treatment")}
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    with ABTestManager(get_settings()) as manager:
        test = asyncio.run(manager.create_test(name, arms, names, days))
    if as_json:
        _print_json(test.to_dict())
        return
    shares = ", ".join(
        f"{a.arm} {a.model_name} {a.model_version} {a.traffic_percentage:g}%" for a in test.arms
    )
    out.print(f"A/B test {test.name} running until {test.ends_at:%Y-%m-%d %H:%M} UTC: {shares}")


@ab_app.command("results")
def ab_results(
    name: Annotated[str, typer.Argument(help="The test.")],
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999)] = 0.95,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Per arm and metric statistics, comparisons with the control, and the winner so far.

    Example: retailml ab results prophet_vs_xgboost
    """
    from retailml.deployment.ab_testing import ABTestManager

    with ABTestManager(get_settings()) as manager:
        results = manager.get_results(name, confidence)
    if as_json:
        _print_json(results.to_dict())
        return
    table = Table(title=f"A/B test {name} (confidence {confidence:g})")
    for column in ("arm", "metric", "n", "mean", "interval"):
        table.add_column(column, justify="right" if column in ("n", "mean") else "left")
    for arm, by_metric in results.arms.items():
        for metric, stats in by_metric.items():
            mean = "-" if stats.mean is None else f"{stats.mean:.4g}"
            interval = "-" if stats.ci_low is None else f"[{stats.ci_low:.4g}, {stats.ci_high:.4g}]"
            table.add_row(arm, metric, str(stats.n), mean, interval)
    out.print(table)
    for c in results.comparisons:
        p = "-" if c.p_value_adjusted is None else f"{c.p_value_adjusted:.3g}"
        effect = "-" if c.effect is None else f"{c.effect:+.4g}"
        mark = " significant" if c.significant else ""
        out.print(f"{c.arm} vs {c.control} on {c.metric}: effect {effect}, adjusted p {p}{mark}")
    out.print(f"winner: {results.winner or 'none'} ({escape(results.reason)})")


@ab_app.command("conclude")
def ab_conclude(
    name: Annotated[str, typer.Argument(help="The test.")],
    force: Annotated[
        bool, typer.Option(help="Conclude before the planned duration has passed.")
    ] = False,
    promote_winner: Annotated[
        bool,
        typer.Option("--promote/--no-promote", help="Roll the winner out to production."),
    ] = True,
    wait: Annotated[
        bool, typer.Option(help="Watch the winner's canary until it is decided.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the conclusion as JSON.")] = False,
) -> None:
    """Conclude a test with its winner and roll the winner out to production.

    The winner goes through the deployment path (`retailml promote`'s):
    deployed directly when nothing serves production, else as a canary.

    Example: retailml ab conclude prophet_vs_xgboost
    """
    from retailml.deployment.ab_testing import ABTestManager

    settings = get_settings()
    outcomes: list[Any] = []

    async def deploy_winner(model_name: str, model_version: str) -> None:
        from retailml.deployment.model_server import ModelServer

        with ModelServer("production", settings) as server:
            outcomes.append(await server.promote(model_name, model_version, wait=wait))

    with ABTestManager(settings) as manager:
        conclusion = asyncio.run(
            manager.conclude(name, deploy_winner if promote_winner else None, force=force)
        )
    if as_json:
        data = {
            "test_name": conclusion.test_name,
            "winner": conclusion.winner,
            "model_name": conclusion.model_name,
            "model_version": conclusion.model_version,
            "promoted": conclusion.promoted,
            "reason": conclusion.results.reason,
            "deployment": outcomes[0].to_dict() if outcomes else None,
        }
        _print_json(data)
        return
    if conclusion.winner is None:
        out.print(f"concluded {name}: no winner ({escape(conclusion.results.reason)})")
        return
    out.print(
        f"concluded {name}: winner {conclusion.winner} "
        f"({conclusion.model_name} {conclusion.model_version})"
    )
    for outcome in outcomes:
        _print_outcome(outcome, as_json=False)
