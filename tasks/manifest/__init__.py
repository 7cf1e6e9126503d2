"""The product's output format: the Parquet mask manifest.

:mod:`.layout` (every path under ``OUT/<episode>/``), :mod:`.schema` (tables, metadata,
summaries), :mod:`.write` (a shot's file, the episode table, ``_SUCCESS.json``),
:mod:`.read` (decoded masks), :mod:`.validate` (``celmask validate``). Readers import
no segmentation code and no model."""
