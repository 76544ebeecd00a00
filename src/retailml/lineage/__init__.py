"""Lineage: OpenLineage events of every run, and queries in both directions."""
