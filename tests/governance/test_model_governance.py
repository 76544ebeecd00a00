"""Governance: approvals by every listed role, compliance checks, the tamper-evident audit log."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import text

import guide
from retailml.cli import main
from retailml.core.db import PlatformDB
from retailml.core.errors import ConfigError, StateError
from retailml.core.settings import Settings
from retailml.data.generate import GeneratorConfig, generate_transactions
from retailml.governance.model_governance import ModelGovernance
from retailml.registry.model_registry import ModelRegistry
from retailml.training._tracking import ensure_tracking
from retailml.training.model_trainer import ModelTrainer, TrainingResult

_SILVER = {
    "InvoiceNo": "invoice_no",
    "StockCode": "stock_code",
    "Quantity": "quantity",
    "InvoiceDate": "invoice_date",
    "UnitPrice": "unit_price",
    "CustomerID": "customer_id",
    "Country": "country",
    "Description": "description",
}


@pytest.fixture
def tracking(settings: Settings) -> Iterator[str]:
    yield ensure_tracking(settings)
    while mlflow.active_run() is not None:
        mlflow.end_run()


def customers(n: int = 200, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 3, n)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "recency": np.array([10, 120, 300])[group] * rng.lognormal(0, 0.2, n),
            "frequency": np.array([30, 5, 1])[group] * rng.lognormal(0, 0.2, n) + 1,
            "monetary": np.array([5000, 600, 50])[group] * rng.lognormal(0, 0.3, n),
        }
    )


def test_guide_governance_snippet_runs_as_written(settings: Settings, tracking: str) -> None:
    result = ModelTrainer(model_type="customer_segmentation", n_splits=2).train_sync(customers())
    with ModelRegistry(settings) as registry:
        registry.register_model("sales_forecast_prophet", "1.2.0", result, metadata={}, tags=[])
    namespace: dict[str, object] = {}
    guide.run(guide.block("### 4. Model Governance"), namespace)
    request = namespace["approval_request"]
    assert request.status == "pending"  # type: ignore[attr-defined]
    assert request.pending == ("lead_data_scientist", "ml_engineer", "business_owner")  # type: ignore[attr-defined]
    report = namespace["compliance_report"]
    statuses = {c.name: c.status for c in report.checks}  # type: ignore[attr-defined]
    assert statuses["data_privacy_compliance"] == "passed"
    # A registered name carries no evaluation data: the data checks say so, never pass silently.
    assert statuses["bias_detection"] == "skipped"
    assert statuses["explainability_requirements"] == "skipped"


def test_every_listed_approver_is_required_and_one_rejection_rejects(settings: Settings) -> None:
    governance = ModelGovernance()
    request = governance.request_approval(
        model_name="m",
        model_version="1.0.0",
        deployment_target="production",
        business_justification="better",
        risk_assessment={"technical_risk": "low"},
        approvers=["lead_data_scientist", "ml_engineer"],
    )
    with pytest.raises(StateError, match="waiting for lead_data_scientist, ml_engineer"):
        governance.require_approval("m", "1.0.0", "production")
    governance.approve(request.id, approver="alice", role="lead_data_scientist", comment="ok")
    assert not governance.is_approved("m", "1.0.0")
    with pytest.raises(ConfigError, match="among the request's approvers"):
        governance.approve(request.id, approver="bob", role="intern")
    with pytest.raises(StateError, match="has decided"):
        governance.approve(request.id, approver="carol", role="lead_data_scientist")
    done = governance.approve(request.id, approver="bob", role="ml_engineer", comment="lgtm")
    assert done.status == "approved" and done.pending == ()
    governance.require_approval("m", "1.0.0", "production")  # no error now
    assert [d["approver"] for d in done.decisions] == ["alice", "bob"]

    second = governance.request_approval(
        "m", "2.0.0", "production", "why not", approvers=["ml_engineer", "business_owner"]
    )
    rejected = governance.reject(second.id, "bob", "ml_engineer", comment="worse on December")
    assert rejected.status == "rejected"
    with pytest.raises(StateError, match="is rejected"):
        governance.approve(second.id, "dana", "business_owner")
    assert not governance.is_approved("m", "2.0.0")


def test_the_audit_log_detects_an_edited_and_a_deleted_entry(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    governance = ModelGovernance()
    request = governance.request_approval("m", "1.0.0", "production", "x", approvers=["a", "b"])
    governance.approve(request.id, "alice", "a")
    governance.approve(request.id, "bob", "b")
    governance.record("deployment.promoted", "m@1.0.0", {"environment": "production"})
    assert governance.verify_audit().ok
    assert governance.verify_audit().checked == 4
    assert main(["audit", "verify"]) == 0
    assert "4 entries" in capsys.readouterr().out

    db = PlatformDB.from_settings(settings)
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"))
    broken = governance.verify_audit()
    assert not broken.ok and broken.first_broken == 2 and "edited" in broken.reason
    assert main(["audit", "verify"]) == 1
    assert "BROKEN at entry 2" in capsys.readouterr().out

    with db.engine.begin() as connection:
        connection.execute(text("UPDATE audit_log SET actor = 'alice' WHERE seq = 2"))
        connection.execute(text("DELETE FROM audit_log WHERE seq = 3"))
    gap = governance.verify_audit()
    assert gap.first_broken == 3 and "missing" in gap.reason
    db.dispose()


@pytest.mark.postgres
def test_concurrent_writers_never_fork_the_chain(postgres_url: str, tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from retailml.core.audit import append_audit
            from retailml.core.db import PlatformDB
            db = PlatformDB(sys.argv[1])
            for i in range(40):
                append_audit(db, "test.write", f"writer{sys.argv[2]}-{i}")
            """
        )
    )
    PlatformDB(postgres_url).migrate()
    writers = [
        subprocess.Popen([sys.executable, str(script), postgres_url, str(n)]) for n in range(3)
    ]
    assert all(w.wait(timeout=300) == 0 for w in writers)
    settings = Settings(home=tmp_path / "ws", database_url=postgres_url)
    verdict = ModelGovernance(settings).verify_audit()
    assert verdict.ok and verdict.checked == 120


@pytest.fixture
def anomaly_result(settings: Settings, tracking: str) -> TrainingResult:
    lines = generate_transactions(GeneratorConfig(rows=20_000, seed=9, anomaly_rate=0.01))
    frame = lines.to_pandas().rename(columns=_SILVER)
    frame["invoice_date"] = pd.to_datetime(frame["invoice_date"], format="mixed")
    return ModelTrainer(model_type="anomaly_detection", n_splits=2).train_sync(frame)


def test_compliance_checks_measure_fairness_explain_and_scan_for_identifiers(
    anomaly_result: TrainingResult,
) -> None:
    governance = ModelGovernance()
    lines = generate_transactions(GeneratorConfig(rows=8_000, seed=10, anomaly_rate=0.02))
    data = lines.to_pandas().rename(columns=_SILVER)
    data["invoice_date"] = pd.to_datetime(data["invoice_date"], format="mixed")
    report = governance.run_compliance_checks(
        anomaly_result,
        [
            "fairness_assessment",
            "explainability_requirements",
            "data_privacy_compliance",
        ],
        data=data,
        group_column="country",
    )
    checks = {c.name: c for c in report.checks}
    assert checks["fairness_assessment"].status in {"passed", "failed"}
    assert "demographic_parity" in checks["fairness_assessment"].evidence
    importances = checks["explainability_requirements"].evidence
    assert set(importances) == set(anomaly_result.model.feature_names_in_)
    assert abs(sum(importances.values()) - 1) < 1e-9
    stored = MlflowClient().list_artifacts(anomaly_result.run_id, "explainability")
    assert [a.path for a in stored] == ["explainability/permutation_importance.json"]
    assert checks["data_privacy_compliance"].status == "passed"

    # A model that uses a raw identifier as a feature fails the privacy check.
    leaky = ModelTrainer(
        model_type="customer_segmentation",
        hyperparameters={"features": ["recency", "frequency", "monetary", "email"]},
        n_splits=2,
    ).train_sync(customers().assign(email=np.arange(200) % 7))
    privacy = governance.run_compliance_checks(leaky, ["data_privacy_compliance"])
    assert privacy.status == "failed"
    assert "email: identifier-like feature name" in privacy.checks[0].details
    with pytest.raises(ConfigError, match="unknown \\['gdpr'\\]"):
        governance.run_compliance_checks(leaky, ["gdpr"])
