"""Layer 7: automation that closes the loop.

* :mod:`retailml.automation.retraining`: ``AutoRetrainingPipeline`` (triggers,
  retrain jobs under a lease, champion/challenger comparison, governed
  deployment); the guide imports it from ``retailml.training.model_trainer``.
* :mod:`retailml.automation.scheduler`: the schedules ``retailml scheduler`` runs.
* :mod:`retailml.automation.maintenance`: data freshness and the model cleanup policy.

Import from those modules; the package itself loads nothing, so using one
part does not pay for the others.
"""
