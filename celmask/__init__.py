"""celmask: every anime character in every frame of whole episodes.

Installed, everything lives under this one name (the repository keeps the brief's
folders at its root; ``pyproject.toml`` maps them here):

- :mod:`celmask.tasks`: the pipeline as plain functions on plain data, by stage;
- :mod:`celmask.models`: the model adapters (detectors, propagators, refiners) and
  detector training;
- :mod:`celmask.flows`: Prefect at the edges: the flows, the CLI, deployments.
"""
