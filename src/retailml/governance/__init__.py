"""Governance: approvals, compliance checks and the audit log."""
