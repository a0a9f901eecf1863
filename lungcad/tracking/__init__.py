"""Experiment tracking in MLflow: runs, logged models, the registry references."""
