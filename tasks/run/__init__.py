"""What the flows call, as plain functions, no Prefect: :mod:`.plan` (an episode's
plan on disk), :mod:`.shot` (one shot: cache, segment, write), :mod:`.finish` (the
episode table, ``_SUCCESS.json``, the report), :mod:`.inbox` (the nightly inbox)."""
