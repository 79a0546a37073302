"""Helpers shared by the pipeline stages: params, atomic writes, datasets, errors."""
