"""Layer 4 (with training): the guide's predictive engine.

The public face is :mod:`retailml.analytics.predictive_engine` (the guide's
``src.ml.analytics.predictive_engine``).
"""
