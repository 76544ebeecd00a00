"""Test helper: a real, approved governance request, as production deployments require.

Import it as ``from governance.approvals import approve`` (``tests`` is on ``sys.path``,
as for ``registry.conftest``).
"""

from __future__ import annotations

from retailml.core.db import PlatformDB
from retailml.core.settings import Settings
from retailml.governance.model_governance import ApprovalRequest, ModelGovernance

#: The approvers every test approval lists (the guide's three roles).
APPROVERS = ("lead_data_scientist", "ml_engineer", "business_owner")


def approve(
    settings: Settings,
    model_name: str,
    version: str,
    *,
    db: PlatformDB | None = None,
    target: str = "production",
) -> ApprovalRequest:
    """Request approval to deploy ``version`` to ``target`` and approve it for every role.

    Production deployments, rollouts, promotions and A/B tests are refused without it.
    """
    governance = ModelGovernance(settings, db=db)
    request = governance.request_approval(
        model_name, version, target, "approved by the test suite", {}, APPROVERS
    )
    for role in APPROVERS:
        request = governance.approve(request.id, f"test-{role}", role, "ok for the test")
    assert request.status == "approved"
    return request
