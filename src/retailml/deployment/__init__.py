"""Layer 6: deployment (model serving, rollouts, A/B tests)."""
