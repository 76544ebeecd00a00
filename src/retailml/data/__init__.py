"""Layer 2: the canonical transaction schema, synthetic data and ingestion."""
