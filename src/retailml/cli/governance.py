"""``retailml governance`` (approvals) and ``retailml audit`` (the hash-chained log)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from retailml.cli._console import out
from retailml.core.settings import get_settings

governance_app = typer.Typer(help="Approve models for deployment.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


@governance_app.command("request")
def request(
    model: Annotated[str, typer.Option(help="Registered model name.")],
    version: Annotated[str, typer.Option(help="Its semantic version.")],
    approver: Annotated[list[str], typer.Option(help="A required approver role (repeat).")],
    justification: Annotated[str, typer.Option(help="Why it should ship.")],
    target: Annotated[str, typer.Option(help="Deployment target.")] = "production",
) -> None:
    """Request approval to deploy a model version; every listed approver must approve.

    Example: retailml governance request --model sales_forecast --version 1.2.0
    --approver ml_engineer --approver business_owner --justification "5% better MAPE"
    """
    from retailml.governance.model_governance import ModelGovernance

    made = ModelGovernance(get_settings()).request_approval(
        model, version, target, justification, {}, approver
    )
    out.print(f"request {made.id}: {made.status}, waiting for {', '.join(made.pending)}")


@governance_app.command("approve")
def approve(
    request_id: Annotated[str, typer.Argument(help="The request id.")],
    role: Annotated[str, typer.Option(help="The listed role you decide for.")],
    approver: Annotated[str, typer.Option(help="Your name.")],
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead.")] = False,
) -> None:
    """Approve (or --reject) a request for one of its roles.

    Example: retailml governance approve 3f2a... --role ml_engineer --approver bob --comment lgtm
    """
    from retailml.governance.model_governance import ModelGovernance

    governance = ModelGovernance(get_settings())
    decide = governance.reject if reject else governance.approve
    done = decide(request_id, approver, role, comment)
    waiting = f", waiting for {', '.join(done.pending)}" if done.status == "pending" else ""
    out.print(f"request {done.id}: {done.status}{waiting}")


@governance_app.command("revoke")
def revoke(
    request_id: Annotated[str, typer.Argument(help="The approved request's id.")],
    role: Annotated[str, typer.Option(help="A role the request lists, that you revoke for.")],
    approver: Annotated[str, typer.Option(help="Your name.")],
    reason: Annotated[str, typer.Option(help="Why the approval no longer holds.")],
) -> None:
    """Withdraw an approved request: the version may no longer be deployed on its strength.

    Deployments, rollouts, promotions and rollbacks to the version are refused from then on,
    until a new request is approved. A version already serving keeps serving: roll back or
    deploy another version to take it out.

    Example: retailml governance revoke 3f2a... --role business_owner --approver carol
    --reason "biased against new customers"
    """
    from retailml.governance.model_governance import ModelGovernance

    done = ModelGovernance(get_settings()).revoke(request_id, approver, role, reason)
    out.print(
        f"request {done.id}: {done.status} ({done.model_name} {done.model_version} may no "
        f"longer be deployed to {done.deployment_target} on its strength)"
    )


@governance_app.command("status")
def status(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List approval requests, newest first.

    Example: retailml governance status --model sales_forecast
    """
    from retailml.governance.model_governance import ModelGovernance

    requests = ModelGovernance(get_settings()).list_requests(model)
    if as_json:
        out.print_json(json.dumps([vars(r) for r in requests], default=str))
        return
    table = Table()
    for column in ("id", "model", "version", "target", "status", "waiting for"):
        table.add_column(column)
    for r in requests:
        table.add_row(
            r.id, r.model_name, r.model_version, r.deployment_target, r.status, ", ".join(r.pending)
        )
    out.print(table)


@audit_app.command("verify")
def verify() -> None:
    """Recompute the audit log's hash chain; exit 1 and name the first broken link if any.

    Example: retailml audit verify
    """
    from retailml.governance.model_governance import ModelGovernance

    verdict = ModelGovernance(get_settings()).verify_audit()
    out.print(str(verdict))
    if not verdict.ok:
        raise typer.Exit(code=1)


@audit_app.command("show")
def show(
    limit: Annotated[int, typer.Option(min=1, help="Entries to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the latest audit entries (approvals, deployments, rollbacks, deletions).

    Example: retailml audit show --limit 50
    """
    from retailml.governance.model_governance import ModelGovernance

    entries = ModelGovernance(get_settings()).audit_log(limit)
    if as_json:
        out.print_json(json.dumps(entries, default=str))
        return
    table = Table()
    for column in ("seq", "at", "actor", "action", "subject"):
        table.add_column(column)
    for e in entries:
        table.add_row(str(e["seq"]), e["at"][:19], e["actor"], e["action"], e["subject"])
    out.print(table)


def config_set(
    key: Annotated[str, typer.Argument(help="The setting, e.g. serve_port (see config show).")],
    value: Annotated[str, typer.Argument(help='Its value, read as YAML ("" unsets it).')],
) -> None:
    """Set one setting in the settings file (retailml.yaml), validated and audited.

    The file is the one settings are read from: ./retailml.yaml, or RETAILML_CONFIG.
    The change (old -> new, secrets masked) is appended to the audit log.

    Example: retailml config set serve_port 8001
    """
    from retailml.core.audit import append_audit
    from retailml.core.db import PlatformDB
    from retailml.core.settings import load_settings, set_config_value

    before = load_settings()
    change = set_config_value(key, value)
    # Recorded in the platform database in effect before the change (where the trail is).
    db = PlatformDB.from_settings(before)
    try:
        append_audit(
            db,
            "setting.changed",
            f"setting {change.name}",
            {"old": change.old, "new": change.new, "file": str(change.path.resolve())},
        )
    finally:
        db.dispose()
    out.print(f"{change.name}: {change.old!r} -> {change.new!r} (written to {change.path})")
    if change.overridden:
        out.print(
            f"note: {change.overridden} is set in the environment and still wins over the file"
        )
