"""Layer 3: feature definitions, engines and the feature pipeline.

The public face is :mod:`retailml.feature_engineering.feature_pipeline` (the
guide's ``src.ml.feature_engineering.feature_pipeline``).
"""
