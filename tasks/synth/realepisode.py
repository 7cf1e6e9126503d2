"""Episodes acted by real art: real cut-outs on real backgrounds, masks exact from alpha.

``celmask synth OUT --art DIR``, where DIR holds ``cutouts/`` and ``backgrounds/`` as
../shared/realart does (:mod:`celmask.tasks.trainset.realart` reads and checks them).
The generated episode of the same seed is the skeleton
(:func:`~celmask.tasks.synth.timeline.plan_timeline`): shot lengths, scenes, cuts, fades
and dissolves, timing on 2s/3s with held stills, the camera (static, pan, push or pull,
on 1s or with the drawings, shakes), flashes, subtitles, each shot's kind (empty, wide,
full, medium, close-up) and cast. Real art replaces what is drawn:

- the cast: each member is a *look* of a real character, its cut-outs in one outfit
  (expressions, gestures, body poses; :func:`looks`). Members are distinct characters
  while the art has enough, and a member keeps its ``character_id`` in every shot it
  comes back in;
- the sets: each is a real background cut to the skeleton's set size (twice the
  frame's width, 1.5 times its height), so the camera pans and pushes over it;
- the acting (:func:`restage_shot`): visual-novel sprites are cut flat at the bottom,
  so that edge stays below the lowest row the camera shows; their size follows the
  shot's kind (a close-up shows the head and chest); they hold still or slide in, out,
  across or to another spot, on the drawings (2s/3s), back to front, overlapping.
  Limited animation: a sprite's drawing is held, and in bursts of a few drawings it
  changes among its look's cut-outs, then holds again (:func:`pose_schedule`).

For the renderer (:class:`RealArt`), a character's ``px_per_unit`` is its cut-outs'
scale and pose ``p`` is cut-out ``p // 2`` of its look, mirrored when ``p`` is odd.
Drawings in which no character changes are one drawing, so ``n_drawings`` counts
distinct drawings. The truth is the usual one (:mod:`celmask.tasks.synth.truth`; a
mask is alpha >= 128 after occlusion), plus ``art.json``: the character and cut-outs of
each ``character_id`` and the background of each ``set_id``.

``split="test"`` with ``split_seed=N`` uses only the characters and sets that
:func:`celmask.tasks.trainset.realart.by_split` holds out from a detector trained with
seed N, so the episode shows it nothing it has seen. Everything is deterministic in the
seed and the art. Memory: the loaders read the whole art folder once; the episode then
keeps only its cast's cut-outs and its sets' backgrounds, and frames stream.

    truth = generate_art_episode("/tmp/ep", "../shared/realart", seed=3, duration=30.0, split="test")
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.synth.backgrounds import view_rect
from celmask.tasks.synth.render import episode_frames, write_episode
from celmask.tasks.synth.seeding import child_rng
from celmask.tasks.synth.sprites import Sprite
from celmask.tasks.synth.staging import CharacterPlan, ease, effective_time
from celmask.tasks.synth.timeline import EpisodePlan, ShotPlan, plan_timeline
from celmask.tasks.synth.truth import Truth
from celmask.tasks.trainset.realart import (
    SPLIT_SHARES,
    Background,
    Cutout,
    by_split,
    load_backgrounds,
    load_cutouts,
)

ART_NAME = "art.json"
"""Beside the truth: which real character and set each id is, and the art it came from."""
ART_SUBDIRS = ("cutouts", "backgrounds")
LOOK_SIMILARITY = 0.7
"""Cut-outs of one character are one look (outfit) when their colour histograms
intersect at least this much. On ../shared/realart expressions and poses of one outfit
measure >= 0.73, other outfits and other people of one folder <= 0.65."""
HEIGHT_IN_VIEW = {"wide": (0.45, 0.65), "full": (0.75, 1.0), "medium": (1.1, 1.5), "closeup": (1.8, 2.5)}
"""A sprite's height as a share of the view's, by shot kind."""
BUST_CLOSEUP = (1.0, 1.3)
"""Close-up height of a bust (a cut-out less than :data:`BUST_ASPECT` times as tall as wide):
it is already head and chest."""
BUST_ASPECT = 1.6
HOLD_DRAWINGS = (4, 21)
"""A pose is held this many drawings (8-60 frames on 2s/3s) between bursts."""
BURST_DRAWINGS = (3, 9)
"""A burst changes the pose on this many consecutive drawings."""
MOTIONS = {
    "closeup": {"stand": 0.8, "shift": 0.2},
    "medium": {"stand": 0.6, "shift": 0.15, "enter": 0.125, "leave": 0.125},
    "full": {"stand": 0.35, "shift": 0.2, "enter": 0.15, "leave": 0.15, "across": 0.15},
}
MOTIONS["wide"] = MOTIONS["full"]
ART_FIX = "give a folder holding cutouts/<source>/*.png and backgrounds/<source>/*.jpg (like ../shared/realart)"


@dataclass(frozen=True)
class Look:
    """One real character in one outfit: the cut-outs it acts with."""

    character: str
    """The split unit (:attr:`~celmask.tasks.trainset.realart.Cutout.character`)."""
    person: str
    """Who it shows: the character when its cut-outs are named ``character__*``; in a
    folder that is one unit (``stand.png``, ``crypko_03.png``), each look is its own person."""
    cutouts: tuple[Cutout, ...]


@dataclass(frozen=True)
class RealSet:
    """A real background cut to a set of ``width`` x ``height``; ``offset`` (0..1, 0..1)
    places the cut in the part the cover-scaled background has to spare."""

    background: Background
    width: int
    height: int
    offset: tuple[float, float]


@dataclass(frozen=True)
class RealArt:
    """An :class:`~celmask.tasks.synth.render.EpisodeArt` of real looks and sets; ids are
    ``character_id`` and ``set_id``."""

    looks: tuple[Look, ...]
    sets: tuple[RealSet, ...]

    def background(self, set_id: int) -> np.ndarray:
        s = self.sets[set_id]
        rgb = s.background.rgb
        h0, w0 = rgb.shape[:2]
        k = max(s.width / w0, s.height / h0)
        nw, nh = max(s.width, round(w0 * k)), max(s.height, round(h0 * k))
        img = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        x, y = round((nw - s.width) * s.offset[0]), round((nh - s.height) * s.offset[1])
        return np.ascontiguousarray(img[y : y + s.height, x : x + s.width])

    def sprite(self, character: CharacterPlan, pose: int) -> Sprite:
        """Cut-out ``pose // 2`` of the look (mirrored for odd ``pose``) scaled by
        ``px_per_unit``, premultiplied before resampling (no fringe from the colour
        under transparent pixels); anchored at its bottom centre."""
        rgba = self.looks[character.character_id].cutouts[pose // 2].rgba
        if pose % 2:
            rgba = rgba[:, ::-1]
        alpha = np.ascontiguousarray(rgba[..., 3])
        rgb = cv2.multiply(np.ascontiguousarray(rgba[..., :3]), cv2.merge([alpha] * 3), scale=1.0 / 255.0)
        k = character.px_per_unit
        if k != 1.0:
            size = (max(1, round(rgba.shape[1] * k)), max(1, round(rgba.shape[0] * k)))
            interp = cv2.INTER_AREA if k < 1.0 else cv2.INTER_LINEAR
            rgb, alpha = cv2.resize(rgb, size, interpolation=interp), cv2.resize(alpha, size, interpolation=interp)
        return Sprite(rgb, alpha, (alpha.shape[1] / 2.0, float(alpha.shape[0])))


# --------------------------------------------------------------------------- art


def load_art(
    art_dir: str | Path, *, split: str | None = None, split_seed: int = 0
) -> tuple[list[Cutout], list[Background]]:
    """The cut-outs and backgrounds of ``art_dir`` (all, or the ``split`` of
    :func:`~celmask.tasks.trainset.realart.by_split` with ``split_seed``, as ``celmask
    train --seed`` splits them); one-line errors for a missing or empty folder or split."""
    root = Path(art_dir)
    if not root.is_dir():
        raise CelmaskError(root, "art directory not found", ART_FIX)
    for sub in ART_SUBDIRS:
        if not (root / sub).is_dir():
            raise CelmaskError(root / sub, f"no {sub}/ folder in the art directory", ART_FIX)
    if split is not None and split not in SPLIT_SHARES:
        raise CelmaskError("--art-split", f"unknown split {split!r}", f"use one of {', '.join(SPLIT_SHARES)}")
    cutouts, backgrounds = load_cutouts(root / "cutouts"), load_backgrounds(root / "backgrounds")
    if split is not None:
        cutouts = by_split(cutouts, lambda c: c.character, split_seed)[split]
        backgrounds = by_split(backgrounds, lambda b: b.group, split_seed)[split]
        for what, items in (("cut-outs", cutouts), ("backgrounds", backgrounds)):
            if not items:
                raise CelmaskError(
                    root,
                    f"the {split} split of seed {split_seed} has no {what}",
                    "add characters and sets to the art folder, or choose another split",
                )
    return cutouts, backgrounds


def _colours(cutout: Cutout) -> np.ndarray:
    """Normalised 8x8x8 RGB histogram of the cut-out's opaque pixels."""
    px = cutout.rgba[..., :3][cutout.rgba[..., 3] >= 128] // 32
    h = np.bincount((px[:, 0].astype(np.int64) * 8 + px[:, 1]) * 8 + px[:, 2], minlength=512).astype(np.float64)
    return h / max(1.0, h.sum())


def looks(cutouts: list[Cutout]) -> list[Look]:
    """The looks of each character: in name order, a cut-out joins the first look whose
    first cut-out's colours it matches (:data:`LOOK_SIMILARITY`), else starts one."""
    by_character: dict[str, list[Cutout]] = {}
    for c in sorted(cutouts, key=lambda c: (c.character, c.source, c.name)):
        by_character.setdefault(c.character, []).append(c)
    out = []
    for character, members in by_character.items():
        groups: list[tuple[np.ndarray, list[Cutout]]] = []
        for c in members:
            h = _colours(c)
            group = next((g for g in groups if np.minimum(g[0], h).sum() >= LOOK_SIMILARITY), None)
            if group is None:
                groups.append((h, [c]))
            else:
                group[1].append(c)
        named = "/" in character  # character_of: "source/name" for named cut-outs, else the folder
        out += [
            Look(character, character if named else f"{character}/{j}", tuple(g)) for j, (_, g) in enumerate(groups)
        ]
    return out


def cast_looks(rng: np.random.Generator, all_looks: list[Look], n: int) -> list[Look]:
    """Up to ``n`` looks. The characters (split units) take turns in a seeded order, so
    one folder of many people does not fill the cast; each gives everyone it shows (in a
    seeded order, those with more cut-outs to act with first) before anyone's second outfit."""
    by_character: dict[str, dict[str, list[Look]]] = {}
    for look in all_looks:
        by_character.setdefault(look.character, {}).setdefault(look.person, []).append(look)
    names = sorted(by_character)
    firsts: list[list[Look]] = []
    others: list[list[Look]] = []
    for i in rng.permutation(len(names)):
        people = [sorted(v, key=lambda look: -len(look.cutouts)) for _, v in sorted(by_character[names[i]].items())]
        people = sorted((people[j] for j in rng.permutation(len(people))), key=lambda v: -len(v[0].cutouts))
        firsts.append([v[0] for v in people])
        others.append([look for v in people for look in v[1:]])
    picked: list[Look] = []
    for queues in (firsts, others):
        while any(queues) and len(picked) < n:
            for queue in queues:
                if queue and len(picked) < n:
                    picked.append(queue.pop(0))
    return picked


# --------------------------------------------------------------------------- acting


def pose_schedule(rng: np.random.Generator, n_cutouts: int, base: int, n_drawings: int) -> list[int]:
    """The cut-out of each drawing: ``base`` held, then bursts that change it on every
    drawing among ``base`` and one to three other cut-outs, each burst's last one held."""
    if n_cutouts < 2:
        return [base] * n_drawings
    others = [i for i in range(n_cutouts) if i != base]
    pool = [base] + [int(i) for i in rng.choice(others, size=min(len(others), int(rng.integers(1, 4))), replace=False)]
    out: list[int] = []
    cur = base
    while len(out) < n_drawings:
        out += [cur] * int(rng.integers(*HOLD_DRAWINGS))
        for _ in range(int(rng.integers(*BURST_DRAWINGS))):
            cur = pool[(pool.index(cur) + 1 + int(rng.integers(len(pool) - 1))) % len(pool)]  # always another one
            out.append(cur)
    return out[:n_drawings]


def _slide(
    rng: np.random.Generator, motion: str, x: float, view: tuple[float, float], half_w: float, total: int
) -> tuple[float, float, float, float, str]:
    """A horizontal slide: (from x, to x, start, end in effective frames, easing)."""
    vx0, vx1 = view
    off = (vx0 - half_w - 8.0, vx1 + half_w + 8.0)
    side = int(rng.random() < 0.5)
    ease_kind = ("inout", "out", "in", "sine")[int(rng.integers(4))]
    if motion == "stand":
        return x, x, 0.0, float(total), ease_kind
    if motion == "enter":
        x0, x1, m0, length = off[side], x, rng.uniform(0.0, 0.4), rng.uniform(0.3, 0.5)
    elif motion == "leave":
        x0, x1, m0, length = x, off[side], rng.uniform(0.2, 0.5), rng.uniform(0.25, 0.45)
    elif motion == "across":
        x0, x1, m0, length = off[side], off[1 - side], rng.uniform(0.0, 0.2), rng.uniform(0.6, 0.8)
    else:  # shift to another spot
        x0, x1 = x, x + float(rng.uniform(0.15, 0.35)) * (vx1 - vx0) * (1 if side else -1)
        m0, length = rng.uniform(0.1, 0.4), rng.uniform(0.2, 0.4)
    m0 = float(m0) * total
    return float(x0), float(x1), m0, max(m0 + 4.0, m0 + float(length) * total), ease_kind


def restage_shot(
    rng: np.random.Generator, shot: ShotPlan, cast: list[int], art_looks: tuple[Look, ...], width: int, height: int
) -> ShotPlan:
    """``shot`` acted by the looks ``cast`` (back to front; a person is on screen once,
    in the first of their looks) on the skeleton's drawings and camera; see the module docstring."""
    ids: list[int] = []
    for c in cast:
        if all(art_looks[i].person != art_looks[c].person for i in ids):
            ids.append(c)
    n = shot.content_end - shot.content_start
    tau = effective_time(n, shot.still_spans)
    total = max(1, int(tau[-1]) + 1)
    t_draw = [float(tau[s]) for s in shot.drawings]
    mid = shot.camera[n // 2]
    vx0, vy0, vx1, vy1 = view_rect((mid.cx, mid.cy), mid.zoom, (width, height))
    vw, vh = vx1 - vx0, vy1 - vy0
    lowest = max(c.cy + height / (2 * c.zoom) for c in shot.camera) + 2.0  # camera states include the shake
    xs = sorted(float(rng.uniform(0.12, 0.88)) for _ in ids)
    order = rng.permutation(len(ids))
    plans = []
    for slot, cid in enumerate(ids):
        cutouts = art_looks[cid].cutouts
        base = int(rng.integers(len(cutouts)))
        flip = int(rng.random() < 0.5)
        bh, bw = cutouts[base].rgba.shape[:2]
        lo, hi = BUST_CLOSEUP if shot.kind == "closeup" and bh < BUST_ASPECT * bw else HEIGHT_IN_VIEW[shot.kind]
        h_px = vh * float(rng.uniform(lo, hi))
        scale = round(h_px / bh, 6)
        if shot.kind == "closeup":  # the top of the head near the top of the frame
            y = max(lowest, vy0 + vh * float(rng.uniform(0.0, 0.1)) + h_px)
        else:
            y = lowest + vh * float(rng.uniform(0.0, 0.08))
        motions = MOTIONS[shot.kind]
        motion = str(rng.choice(list(motions), p=list(motions.values())))
        half_w = 0.5 * scale * max(c.rgba.shape[1] for c in cutouts)
        x0, x1, m0, m1, ease_kind = _slide(rng, motion, vx0 + vw * xs[order[slot]], (vx0, vx1), half_w, total)
        anchors = tuple((round(x0 + (x1 - x0) * ease((t - m0) / (m1 - m0), ease_kind), 3), round(y, 3)) for t in t_draw)
        poses = tuple(2 * i + flip for i in pose_schedule(rng, len(cutouts), base, len(t_draw)))
        plans.append(CharacterPlan(cid, scale, None, (), poses, anchors, motion))

    def state(p: CharacterPlan, d: int) -> tuple:
        return p.pose_of_drawing[d], p.anchor_of_drawing[d]

    keep = [d for d in range(len(shot.drawings)) if d == 0 or any(state(p, d) != state(p, d - 1) for p in plans)]
    return replace(
        shot,
        drawings=tuple(shot.drawings[d] for d in keep),
        characters=tuple(
            replace(
                p,
                pose_of_drawing=tuple(p.pose_of_drawing[d] for d in keep),
                anchor_of_drawing=tuple(p.anchor_of_drawing[d] for d in keep),
            )
            for p in plans
        ),
    )


# --------------------------------------------------------------------------- episodes


def plan_art_episode(
    seed: int,
    cutouts: list[Cutout],
    backgrounds: list[Background],
    *,
    frame_count: int,
    width: int,
    height: int,
    fps: Fraction,
) -> tuple[EpisodePlan, RealArt]:
    """The plan (generated skeleton, real acting; no generated cast or sets) and the art it is drawn with."""
    if not cutouts or not backgrounds:
        raise CelmaskError("art", "a real-art episode needs cut-outs and backgrounds", ART_FIX)
    skeleton = plan_timeline(seed, frame_count=frame_count, width=width, height=height, fps=fps)
    picked = cast_looks(child_rng(seed, "realart-cast"), looks(cutouts), len(skeleton.cast))
    member = [i % len(picked) for i in range(len(skeleton.cast))]  # few looks: members share them
    rng = child_rng(seed, "realart-sets")
    order = rng.permutation(len(backgrounds))
    sets = tuple(
        RealSet(backgrounds[int(order[k % len(order)])], d.width, d.height, (float(rng.random()), float(rng.random())))
        for k, d in enumerate(skeleton.sets)
    )
    art = RealArt(tuple(picked), sets)
    shots = tuple(
        restage_shot(
            child_rng(seed, "realart-shot", s.index),
            s,
            [member[c.character_id] for c in s.characters],
            art.looks,
            width,
            height,
        )
        for s in skeleton.shots
    )
    return replace(skeleton, cast=(), sets=(), shots=shots), art


def art_source(art_dir: str | Path, split: str | None, split_seed: int) -> dict:
    """What ``art.json`` records as the episode's source (compared to reuse an episode)."""
    return {"dir": str(Path(art_dir).resolve()), "split": split, "split_seed": split_seed if split else None}


def generate_art_episode(
    out_dir: str | Path,
    art_dir: str | Path,
    *,
    seed: int,
    duration: float = 60.0,
    width: int = 640,
    height: int = 360,
    fps: Fraction = Fraction(24000, 1001),
    split: str | None = None,
    split_seed: int = 0,
) -> Truth:
    """Render the real-art episode of ``seed`` into ``out_dir``: the files of
    :func:`~celmask.tasks.synth.render.generate_episode`, plus ``art.json``."""
    fps = Fraction(fps)
    frame_count = episode_frames(duration, fps)
    cutouts, backgrounds = load_art(art_dir, split=split, split_seed=split_seed)
    plan, art = plan_art_episode(
        seed, cutouts, backgrounds, frame_count=frame_count, width=width, height=height, fps=fps
    )
    record = {
        "source": art_source(art_dir, split, split_seed),
        "cast": [
            {"character_id": i, "character": look.character, "cutouts": [f"{c.source}/{c.name}" for c in look.cutouts]}
            for i, look in enumerate(art.looks)
        ],
        "sets": [
            {"set_id": k, "background": f"{s.background.source}/{s.background.name}"} for k, s in enumerate(art.sets)
        ],
    }
    return write_episode(
        out_dir, plan, art, extra={ART_NAME: (json.dumps(record, indent=1, sort_keys=True) + "\n").encode()}
    )
