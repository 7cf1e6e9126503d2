"""Shot boundaries (:mod:`.detect`: cuts, fades, dissolves, anime-aware rules fused with a
learned second opinion, :mod:`.learned`: TransNetV2's cut probability on the same
frames) and held drawings (:mod:`.holds`: animation on 2s and 3s, long holds)."""
