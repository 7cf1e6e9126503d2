"""Shot boundaries (:mod:`.detect`: cuts, fades, dissolves, anime-aware rules) and held
drawings (:mod:`.holds`: animation on 2s and 3s, long holds)."""
