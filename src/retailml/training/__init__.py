"""Layer 4: algorithms, splits, metrics, tuning, tracking, validation."""
