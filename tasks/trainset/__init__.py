"""The detector's training pictures: :mod:`.realart` (real cut-outs and backgrounds,
split by character) and :mod:`.composites` (pastes and generated frames written as a
YOLO-seg dataset)."""
