"""What every stage and every model adapter may import: plain types (:mod:`.types`),
detections (:mod:`.instances`), mask arithmetic (:mod:`.masks`), COCO RLE (:mod:`.rle`),
the one error idea (:mod:`.errors`), atomic files (:mod:`.atomic`) and settings
(:mod:`.config`). Imports nothing else of celmask."""
