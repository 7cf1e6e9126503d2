"""One shot's masks, as a plain function (:func:`.shot.segment_shot`).

Detection on unique drawings -> :mod:`.tracks` -> :mod:`.keyframes` -> :mod:`.propagate`
(forward and reverse from the keyframe) -> refinement; :mod:`.config` holds every
setting, :mod:`.model_sets` builds and lends the models the settings name."""
