"""What people and other tools read, from a finished manifest: :mod:`.exports` (PNG,
DAVIS palette, cut-outs, and the dispatch), :mod:`.coco` (COCO / YouTube-VIS JSON),
:mod:`.preview` (overlay videos), :mod:`.report` (the static QC report)."""
