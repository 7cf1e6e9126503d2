"""The episode's cast: one identity per character across every shot.

- :mod:`~celmask.tasks.cast.signature`: a track's colour signature and the distance between two;
- :mod:`~celmask.tasks.cast.cluster`: tracks into characters, never two of one shot;
- :mod:`~celmask.tasks.cast.enrol`: named reference characters (``--cast DIR``);
- :mod:`~celmask.tasks.cast.episode`: all of it for an episode, in its finish step.

The tables it writes are the manifest's (:mod:`celmask.tasks.manifest.cast`).
"""
