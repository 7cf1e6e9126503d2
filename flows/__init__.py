"""Prefect at the edges: :mod:`.episode` (the episode and segment-shot flows),
:mod:`.nightly`, :mod:`.train`, :mod:`.deploy` (work pools and deployments),
:mod:`.embedded` (the in-process server), :mod:`.progress`, and :mod:`.cli` (``celmask``)."""
