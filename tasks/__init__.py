"""The pipeline as plain functions on plain data, one subpackage per stage.

    video -> shots -> segment -> manifest -> cast -> outputs        (run/ is what the flows call)

- :mod:`~celmask.tasks.core`: the shared vocabulary every stage and model adapter may use;
- :mod:`~celmask.tasks.video`: probing and streaming frames out of ffmpeg;
- :mod:`~celmask.tasks.shots`: shot boundaries and held drawings;
- :mod:`~celmask.tasks.segment`: one shot's masks: detection, tracks, keyframes, propagation, refinement;
- :mod:`~celmask.tasks.manifest`: the Parquet mask manifest: its layout on disk, schema, writer, readers, validator;
- :mod:`~celmask.tasks.cast`: the episode's cast: one character_id per character across shots;
- :mod:`~celmask.tasks.outputs`: what people and other tools read: exports, the QC report;
- :mod:`~celmask.tasks.run`: an episode's plan, one shot's run, finishing, the inbox;
- :mod:`~celmask.tasks.eval`: scoring shots and masks against truth;
- :mod:`~celmask.tasks.synth`: generated episodes with ground truth;
- :mod:`~celmask.tasks.trainset`: the detector's training pictures (real art and generated).

The layering, enforced by import-linter (``pyproject.toml``, run by ``.ci/run``)::

    core <- models <- video <- shots <- segment <- manifest <- cast <- outputs <- run <- flows

``eval``, ``synth`` and ``trainset`` sit beside the pipeline and may use any layer below
``run``; nothing in the pipeline imports them. No module here imports Prefect: the
``@task`` wrappers live in :mod:`celmask.flows`.
"""
