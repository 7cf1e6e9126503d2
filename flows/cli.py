"""The ``celmask`` command line. Each command parses options and calls library
functions; no pipeline logic lives here.

Errors in the user's input (:class:`celmask.tasks.core.errors.CelmaskError`) print one line
``celmask: error: ...`` and exit 2 (1 when only some shots of an episode failed),
with no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

from celmask.flows.stopping import stop_on_signals, stopped, stopping
from celmask.tasks.core.errors import CelmaskError, output_problem
from celmask.tasks.manifest.layout import INDEX_NAME, report_dir

DEMO_EPISODE = "demo"
PROGRESS_MIN_SECONDS = 5.0
"""Show a progress bar for videos longer than this (when stderr is a terminal)."""


def _progress(total: int, duration: float, force: bool | None, desc: str):
    from tqdm import tqdm

    show = force if force is not None else (sys.stderr.isatty() and duration > PROGRESS_MIN_SECONDS)
    return tqdm(
        total=total, unit="frame", desc=desc, disable=not show, file=sys.stderr, dynamic_ncols=True, leave=False
    )


def cmd_probe(args: argparse.Namespace) -> int:
    from celmask.tasks.video import probe

    info = asdict(probe(args.video))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _shot_config(args: argparse.Namespace):
    from celmask.tasks.shots.detect import ShotConfig

    overrides = {
        k: v
        for k, v in (
            ("cut_threshold", args.cut_threshold),
            ("min_shot_frames", args.min_shot_frames),
            ("learned", args.learned),
        )
        if v is not None
    }
    try:
        return ShotConfig(**overrides)
    except ValueError as error:
        raise CelmaskError("shot options", str(error), "see `celmask shots --help`") from None


def shot_report(video: str | Path, args: argparse.Namespace) -> dict:
    """Probe and detect shots of ``video``; return the JSON-able report."""
    from celmask.tasks.shots.detect import detect_shots
    from celmask.tasks.video import probe

    config = _shot_config(args)
    info = probe(video)
    with _progress(info.frame_count, info.duration, args.progress, Path(video).name) as bar:
        result = detect_shots(video, config, info=info, on_frame=lambda _: bar.update())
    return {
        "video": str(video),
        "fingerprint": info.fingerprint,
        "fps": info.fps,
        "frame_count": result.frame_count,
        "unique_drawings": int(result.drawing_ids[-1] + 1) if result.frame_count else 0,
        "config": asdict(config),
        "learned": result.learned,
        "shots": [
            {
                k: shot.to_dict()[k]
                for k in (
                    "index",
                    "start",
                    "end",
                    "start_time",
                    "end_time",
                    "transition",
                    "transition_start",
                    "transition_end",
                )
            }
            for shot in result.shots
        ],
    }


def print_shot_table(report: dict) -> None:
    print(f"{'shot':>5} {'start':>7} {'end':>7} {'start_s':>9} {'end_s':>9}  transition")
    for s in report["shots"]:
        print(
            f"{s['index']:>5} {s['start']:>7} {s['end']:>7} {s['start_time']:>9.3f} {s['end_time']:>9.3f}  {s['transition']}"
        )
    n, u = report["frame_count"], report["unique_drawings"]
    print(f"{len(report['shots'])} shots, {n} frames, {u} unique drawings ({n - u} held frames reuse a drawing)")
    learned = report["learned"]
    if learned:
        print(
            f"learned second opinion ({learned['mode']}, {learned['device']}): {learned['frames']} of {n} frames read, "
            f"{learned['model']}"
        )


def cmd_shots(args: argparse.Namespace) -> int:
    report = shot_report(args.video, args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_shot_table(report)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from celmask.tasks.synth import generate_episode
    from celmask.tasks.synth.realepisode import generate_art_episode

    width, height = _size(args.size)
    if args.art is None:
        if args.art_split is not None:
            raise CelmaskError("--art-split", "chooses among real art", "give --art DIR too")
        truth = generate_episode(
            args.out, seed=args.seed, duration=args.duration, width=width, height=height, hard_cases=args.hard_cases
        )
        files = "truth.json, masks.parquet"
    else:
        if args.hard_cases:
            raise CelmaskError(
                "--hard-cases", "are planned for generated episodes only", "leave out --art or --hard-cases"
            )
        truth = generate_art_episode(
            args.out,
            args.art,
            seed=args.seed,
            duration=args.duration,
            width=width,
            height=height,
            split=args.art_split,
            split_seed=args.split_seed,
        )
        files = "truth.json, masks.parquet, art.json"
    print(f"wrote {Path(args.out) / 'episode.mp4'}: {truth.frame_count} frames, {len(truth.shots)} shots ({files})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from celmask.tasks.eval.segment import score_manifest
    from celmask.tasks.eval.shots import boundaries, score_boundaries
    from celmask.tasks.run.plan import load_plan
    from celmask.tasks.segment.config import SegmentConfig
    from celmask.tasks.synth import generate_episode, load_truth

    out = Path(args.out)
    video = out / "episode.mp4"
    episode_dir = out / "manifest" / DEMO_EPISODE
    print(f"==> the QC report will be {report_dir(episode_dir) / INDEX_NAME}")
    with _server_first() as server:
        if (out / "truth.json").is_file() and video.is_file() and load_truth(out).seed == args.seed:
            print(f"==> demo episode: {video} (already generated)")
            truth = load_truth(out)
        else:
            print(f"==> generating a {args.duration:.0f} s demo episode (seed {args.seed}) into {out}")
            truth = generate_episode(out, seed=args.seed, duration=args.duration)
        print(
            f"==> segmenting it: shots, characters, keyframes, propagation, refinement, manifest ({args.workers} shots at once)"
        )
        result = run_episode(
            video,
            episode_dir.parent,
            SegmentConfig(),
            {},
            episode_id=DEMO_EPISODE,
            workers=args.workers,
            progress=args.progress,
            server=server,
        )
    _print_episode(result)
    plan = load_plan(episode_dir)
    cuts = score_boundaries([s.start for s in plan.shots[1:]], boundaries(truth.shots))
    masks = score_manifest(episode_dir, out)
    print(
        f"==> against the generated ground truth: shots F1 {cuts.f1:.3f} (precision {cuts.precision:.3f}, "
        f"recall {cuts.recall:.3f}); masks J&F {masks.jf:.3f} (J {masks.j:.3f}, F {masks.f:.3f})"
    )
    print(f"==> open {report_dir(episode_dir) / INDEX_NAME}; `celmask validate {episode_dir}` checks the manifest")
    return 0


def _segment_config(args: argparse.Namespace):
    from celmask.tasks.core.config import load_config
    from celmask.tasks.segment.config import SegmentConfig

    return load_config(SegmentConfig(), args.config, args.set or [])


def _run_settings(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """For the commands that run whole episodes: the segmentation configuration, and the
    flat settings the flow gets (what differs from the defaults, shot detection's keys
    as ``shots.*``), from ``--config`` then ``--set``; bad keys or values are one line."""
    from celmask.tasks.core.config import apply, changed, parse_overrides, read_settings
    from celmask.tasks.run.plan import SHOT_SETTINGS, shot_config_of, split_settings
    from celmask.tasks.segment.config import SegmentConfig
    from celmask.tasks.shots.detect import ShotConfig

    config, shots = SegmentConfig(), ShotConfig()
    for where, given in (
        (str(args.config), read_settings(args.config) if args.config else {}),
        ("--set", parse_overrides(args.set or [])),
    ):
        segment, shot = split_settings(given)
        config = apply(config, segment, where=where)
        shots = apply(shots, shot, where=f"{where} ({SHOT_SETTINGS}*)")
    settings = changed(config, SegmentConfig())
    settings.update({SHOT_SETTINGS + k: v for k, v in changed(shots, ShotConfig()).items()})
    shot_config_of(settings)
    return config, settings


def cmd_config(args: argparse.Namespace) -> int:
    from celmask.tasks.core.config import config_hash, describe, flatten

    config = _segment_config(args)
    rows = describe(config)
    if args.json:
        print(
            json.dumps(
                {
                    "config": flatten(config),
                    "rules": {key: rule for key, _, rule, _ in rows if rule},
                    "hash": config_hash(config),
                },
                indent=2,
            )
        )
        return 0
    width, rule_width = (max(len(row[i]) for row in rows) for i in (0, 2))
    for key, value, rule, doc in rows:
        print(f"{key:<{width}}  {json.dumps(value):<14}  {rule:<{rule_width}}  {doc}")
    print(f"config hash {config_hash(config)[:16]}")
    return 0


def _frame_range(text: str) -> tuple[int, int]:
    try:
        start, end = (int(v) for v in text.split(":"))
    except ValueError:
        raise CelmaskError("--frames", f"expected START:END such as 0:48, got {text!r}") from None
    if not 0 <= start < end:
        raise CelmaskError("--frames", f"need 0 <= START < END, got {text!r}")
    return start, end


def cmd_segment(args: argparse.Namespace) -> int:
    from celmask.tasks.core.types import Shot, Source
    from celmask.tasks.segment.shot import segment_shot
    from celmask.tasks.shots.detect import detect_shots
    from celmask.tasks.video import probe

    config = _segment_config(args)
    info = probe(args.video)
    if args.frames:
        start, end = _frame_range(args.frames)
        if end > info.frame_count:
            raise CelmaskError("--frames", f"{args.video} has {info.frame_count} frames, asked for {start}:{end}")
        shot = Shot(0, start, end, 0.0, 0.0)
    else:
        shots = detect_shots(args.video, info=info).shots
        if not 0 <= args.shot < len(shots):
            raise CelmaskError(
                "--shot",
                f"{args.video} has shots 0..{len(shots) - 1}, asked for {args.shot}",
                "see `celmask shots VIDEO`",
            )
        shot = shots[args.shot]
    result = segment_shot(args.video, shot, config)
    tracks: dict[int, dict] = {}
    for index, _, inst in result.frames():
        for tid, source in zip(inst.track_id, inst.data["source"]):
            t = tracks.setdefault(int(tid), {"frames": 0, "first": index, "last": index, "sources": {}})
            t["frames"] += 1
            t["last"] = index
            t["sources"][Source(source).label] = t["sources"].get(Source(source).label, 0) + 1
    for tid, keys in result.keyframes.items():
        tracks.setdefault(tid, {})["keyframes"] = [
            {"frame": c.frame_index, "score": c.total, "components": c.components} for c in keys
        ]
    report = {
        "video": str(args.video),
        "shot": shot.to_dict(),
        "frames": len(result.frame_indices),
        "drawings": len(result.instances),
        "model_calls_saved": result.model_calls_saved,
        "work_size": result.work_size,
        "models": result.model_ids,
        "seconds": result.seconds,
        "tracks": tracks,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"shot {shot.index}: frames {shot.start}..{shot.end - 1}, {report['drawings']} unique drawings "
        f"({result.model_calls_saved} model calls saved), masks at {result.work_size[1]}x{result.work_size[0]}"
    )
    print(f"{'track':>5} {'frames':>6} {'first':>6} {'last':>6}  {'keyframe':>8} {'score':>6}  sources")
    for tid, t in sorted(tracks.items()):
        key = (t.get("keyframes") or [{}])[0]
        sources = ", ".join(f"{k} {v}" for k, v in t.get("sources", {}).items())
        print(
            f"{tid:>5} {t.get('frames', 0):>6} {t.get('first', '-'):>6} {t.get('last', '-'):>6}  "
            f"{key.get('frame', '-'):>8} {key.get('score', float('nan')):>6.3f}  {sources}"
        )
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items()))
    return 0


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def cmd_validate(args: argparse.Namespace) -> int:
    from celmask.tasks.manifest.validate import validate

    result = validate(args.out)
    for problem in result.problems:
        print(problem)
    verdict = _count(len(result.problems), "problem") if result.problems else "no problems"
    print(
        f"{_count(result.episodes, 'episode')}, {_count(result.shots, 'shot')}, {_count(result.rows, 'row')}, "
        f"{_count(result.masks, 'distinct mask')} checked: {verdict}"
    )
    return 1 if result.problems else 0


CAST_HELP = (
    "enrolment: one folder per character name with reference images or cut-outs; names the episode's "
    "characters (kept in the episode for later finishes)"
)


def cmd_export(args: argparse.Namespace) -> int:
    from celmask.tasks.outputs.exports import export
    from celmask.tasks.run.plan import recorded_video

    for e in export(
        args.out,
        args.format,
        episode=args.episode,
        to=args.to,
        video=args.video,
        recorded_video=recorded_video,
        character=args.character,
    ):
        print(
            f"{e.episode_id}: wrote {e.path} ({_count(e.files, 'file')}, {e.bytes / 1e6:.1f} MB) in {e.seconds:.1f} s"
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from celmask.tasks.outputs.report import write_report
    from celmask.tasks.run.plan import recorded_video

    print(write_report(args.episode, args.video or recorded_video(args.episode)))
    return 0


def _faults(shots: str | None, transient: bool) -> dict | None:
    if not shots:
        return None
    try:
        return {"shots": [int(v) for v in shots.split(",")], "transient": transient}
    except ValueError:
        raise CelmaskError("--fail-shots", f"expected shot indices such as 2 or 2,5, got {shots!r}") from None


PROGRESS_LINE_SECONDS = 15.0
"""Without a terminal (logs, CI), a progress line at most this often."""


def _progress_listener(bar, lines: bool):
    """Episode progress on stderr: the bar, else (``lines``) a line now and then."""
    import time

    last = [0.0]

    def show(state) -> None:
        if not bar.disable:
            bar.total = state.shots
            bar.n = state.done
            bar.set_postfix_str(
                f"{state.fps:.1f} frames/s"
                + (f", ETA {state.eta:.0f} s" if state.eta is not None else "")
                + (f", {state.failed} failed" if state.failed else ""),
                refresh=False,
            )
            bar.refresh()
        elif (
            lines and state.done and (state.done == state.shots or time.monotonic() - last[0] >= PROGRESS_LINE_SECONDS)
        ):
            last[0] = time.monotonic()
            print(f"    {state.describe()}", file=sys.stderr, flush=True)

    return show


def run_episode(
    video: str | Path,
    out: str | Path,
    config,
    settings: dict[str, Any],
    *,
    episode_id: str | None = None,
    workers: int = 2,
    faults: dict | None = None,
    progress: bool | None = None,
    server=None,
) -> dict:
    """Run the ``episode`` flow in this process (embedded Prefect unless a server is
    configured; ``server``: from :func:`celmask.flows.embedded.start_server`) with progress on
    stderr; return its result. ``config``: the segmentation configuration; ``settings``:
    the flat settings the flow gets (:func:`_run_settings`)."""
    from tqdm import tqdm

    from celmask.flows.embedded import local_prefect
    from celmask.flows.progress import listener

    show = progress if progress is not None else sys.stderr.isatty()

    def meanwhile() -> None:
        """While the server starts: import the flow, and what its first steps would do, so they find it done."""
        import celmask.flows.episode  # noqa: F401
        from celmask.tasks.run.plan import episode_id_of, plan_episode, shot_config_of, split_settings
        from celmask.tasks.segment.model_sets import preload_models

        preload_models(config)
        segment, _ = split_settings(settings)
        plan_episode(video, Path(out) / episode_id_of(video, episode_id), segment, shot_config_of(settings))

    with local_prefect(meanwhile, server):
        from celmask.flows.episode import episode_flow

        with tqdm(
            total=0,
            unit="shot",
            desc="shots",
            disable=not show,
            file=sys.stderr,
            bar_format="{desc} {n}/{total} |{bar}| {elapsed} {postfix}",
            dynamic_ncols=True,
            leave=False,
        ) as bar:
            token = listener.set(_progress_listener(bar, lines=progress is None))
            try:
                return episode_flow(
                    str(video), str(out), settings, episode_id=episode_id, workers=workers, faults=faults
                )
            finally:
                listener.reset(token)


def _print_episode(result: dict) -> None:
    success = result["success"]
    print(
        f"{result['episode_dir']}: {result['shots']} shots, {success['frames']} frames, {success['rows']} masks "
        f"({result['cached']} shots already done); _SUCCESS.json written"
    )
    print(f"report: {result['report']}")


def cmd_run(args: argparse.Namespace) -> int:
    from celmask.tasks.run.lock import episode_lock
    from celmask.tasks.run.plan import episode_id_of
    from celmask.tasks.video import probe

    with _server_first() as server:
        config, settings = _run_settings(args)
        _positive("--workers", args.workers)
        episode_dir = Path(args.out) / episode_id_of(args.video, args.episode_id)
        probe(args.video)  # an unreadable video fails here, before any flow run
        _enrol(args.cast, episode_dir)
        with episode_lock(episode_dir, "run", tidy=True):
            print(
                f"==> segmenting {args.video} into {episode_dir}; the QC report will be {report_dir(episode_dir) / INDEX_NAME}"
            )
            result = run_episode(
                args.video,
                args.out,
                config,
                settings,
                episode_id=args.episode_id,
                workers=args.workers,
                faults=_faults(args.fail_shots, args.fail_transient),
                progress=args.progress,
                server=server,
            )
    _print_episode(result)
    return 0


@contextlib.contextmanager
def _server_first():
    """The embedded server (or None), started before anything else the command does:
    it takes seconds; stopped when the command is done, or fails on bad input first."""
    from celmask.flows.embedded import start_server

    server = start_server()
    try:
        yield server
    finally:
        if server is not None:
            server.stop()


def _finish_report(result) -> int:
    ok = sum(s.status == "ok" for s in result.summaries)
    print(
        f"{result.episode_dir}: {ok} of {len(result.summaries)} shots good; "
        + ("_SUCCESS.json written" if result.success else f"not complete ({result.problem})")
    )
    print(f"report: {result.report}")
    return 0 if result.success else 1


def cmd_rerun(args: argparse.Namespace) -> int:
    from celmask.tasks.core.config import apply, parse_overrides
    from celmask.tasks.run.lock import episode_lock
    from celmask.tasks.run.plan import load_plan
    from celmask.tasks.segment.config import SegmentConfig

    episode_dir = Path(args.episode)
    plan = load_plan(episode_dir)
    shot = plan.shot(args.shot)
    config = apply(apply(SegmentConfig(), plan.config, where="plan"), parse_overrides(args.set or []))
    with episode_lock(episode_dir, "rerun", tidy=True):
        return _rerun(episode_dir, plan, shot, config)


def _rerun(episode_dir: Path, plan, shot, config) -> int:
    from celmask.flows.embedded import local_prefect
    from celmask.tasks.core.config import changed
    from celmask.tasks.run.finish import finish_episode
    from celmask.tasks.segment.config import SegmentConfig

    try:
        with local_prefect():
            from celmask.flows.episode import segment_shot_flow

            segment_shot_flow(
                plan.video,
                shot.to_dict(),
                str(episode_dir.parent),
                changed(config, SegmentConfig()),
                episode_id=episode_dir.name,
                force=True,
            )
    except Exception:  # the shot withdrew the episode's claims: write what is true now, then fail
        _finish_report(finish_episode(episode_dir, plan))
        raise
    return _finish_report(finish_episode(episode_dir, plan))


def _enrol(cast_dir: str | None, episode_dir: Path) -> None:
    """``--cast DIR``: describe the references and keep them in the episode for its finish steps."""
    if cast_dir is None:
        return
    from celmask.tasks.cast.enrol import load_enrolment, save_enrolment

    save_enrolment(episode_dir, load_enrolment(cast_dir))


def cmd_finalize(args: argparse.Namespace) -> int:
    from celmask.tasks.run.finish import finish_episode
    from celmask.tasks.run.lock import episode_lock
    from celmask.tasks.run.plan import load_plan

    plan = load_plan(args.episode)
    with episode_lock(args.episode, "finalize", tidy=True):
        _enrol(args.cast, Path(args.episode))
        return _finish_report(finish_episode(args.episode, plan))


def cmd_correct(args: argparse.Namespace) -> int:
    from celmask.tasks.run.correct import correct
    from celmask.tasks.run.correction_input import corrections_from_args
    from celmask.tasks.run.lock import episode_lock

    episode_dir = Path(args.episode)
    with episode_lock(episode_dir, "correct", tidy=True):
        done = correct(episode_dir, corrections_from_args(episode_dir, args), args.video)
    for c in done.corrections:
        what = "deleted" if c.kind == "delete" else f"frame {c.frame}" + (" (new track)" if c.new_track else "")
        print(f"shot {c.shot} track {c.track}: {what}{'; ' + c.note if c.note else ''}")
    for index, summary in sorted(done.summaries.items()):
        print(f"shot {index}: {summary.tracks} tracks, {summary.rows} masks")
    print(f"corrections stored and applied in {done.seconds:.1f} s")
    return _finish_report(done.result)


def cmd_deploy(args: argparse.Namespace) -> int:
    from celmask.flows.deploy import DeploySettings, deploy, worker_commands
    from celmask.flows.embedded import quiet_prefect

    quiet_prefect()
    settings = DeploySettings(
        args.inbox, args.out, args.timezone, args.gpu_slots, Path(args.repo).resolve(), args.pool_type, args.image
    )
    for line in deploy(settings):
        print(line)
    print("now start the workers (with the server's PREFECT_API_URL and PREFECT_API_AUTH_STRING):")
    for line in worker_commands(settings):
        print(f"  {line}")
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from celmask.flows.embedded import local_prefect
    from celmask.tasks.run.inbox import find_episodes, redact

    _, settings = _run_settings(args)
    _positive("--workers", args.workers)
    items = find_episodes(args.inbox, args.out)  # a missing inbox fails here, before Prefect starts
    todo = sum(not item.done for item in items)
    print(
        f"==> {_count(len(items), 'video')} in {redact(args.inbox)}: {todo} to segment into {args.out}, "
        f"{len(items) - todo} done before"
    )

    def show(row: dict) -> None:
        print(f"{row['episode']}: {row['status']}" + (f": {row['error']}" if row["error"] else ""), flush=True)

    with local_prefect():
        from celmask.flows.nightly import listener, nightly_flow

        token = listener.set(show)
        try:
            result = nightly_flow(args.inbox, str(args.out), settings, workers=args.workers)
        finally:
            listener.reset(token)
    print(f"{len(result['complete'])} complete, {len(result['skipped'])} done before, none failed")
    return 0


def _positive(name: str, value: int, minimum: int = 1) -> int:
    if value < minimum:
        raise CelmaskError(name, f"must be >= {minimum}, got {value}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from celmask.models.ultralytics_env import ultralytics_offline
    from celmask.tasks.segment.model_sets import BUILTIN_DETECTOR
    from celmask.tasks.trainset.composites import (
        DEFAULT_BACKGROUNDS,
        DEFAULT_CUTOUTS,
        MAX_SEED,
        resolve_art,
    )

    _positive("--images", args.images)
    _positive("--val-images", args.val_images)
    if args.test_images is not None:
        _positive("--test-images", args.test_images, 0)
    _positive("--epochs", args.epochs)
    _positive("--imgsz", args.imgsz, 32)
    _positive("--batch", args.batch)
    if not 0 <= args.seed <= MAX_SEED:
        raise CelmaskError("--seed", f"must be 0..{MAX_SEED}, got {args.seed}")
    model = str(BUILTIN_DETECTOR) if args.model == "builtin" else args.model
    if model.endswith(".pt") and not Path(model).is_file():
        raise CelmaskError(
            model,
            "weights to fine-tune from not found",
            "pass an existing .pt, builtin, or a *-seg.yaml to train from scratch",
        )
    if args.resume and not (last := Path(args.out) / "ultralytics" / "train" / "weights" / "last.pt").is_file():
        raise CelmaskError(last, "no checkpoint to resume from", "start the run without --resume")
    cutouts = resolve_art(args.cutouts, DEFAULT_CUTOUTS)
    backgrounds = resolve_art(args.backgrounds, DEFAULT_BACKGROUNDS)
    ultralytics_offline()
    from celmask.flows.embedded import local_prefect
    from celmask.flows.train import train_flow

    with local_prefect():
        metrics = train_flow(
            str(args.out),
            images=args.images,
            val_images=args.val_images,
            test_images=args.test_images,
            epochs=args.epochs,
            imgsz=args.imgsz,
            seed=args.seed,
            cutouts=str(cutouts) if cutouts else "none",
            backgrounds=str(backgrounds) if backgrounds else "none",
            batch=args.batch,
            device=args.device,
            model=model,
            resume=args.resume,
            split_by=args.split_by,
        )
    print(
        f"wrote {metrics['weights']} (sha256 {metrics['sha256'][:12]}) and {Path(metrics['weights']).with_name('metrics.json')}"
    )
    for name in ("val", "test"):
        m = metrics.get(name)
        if m:
            rows = [(name, m)] + [
                (f"  {name} {group}", g) for group, g in metrics.get("subsets", {}).get(name, {}).items()
            ]
            for label, g in rows:
                print(
                    f"{label:<34} {g['images']:>4} images {g['instances']:>4} characters: mask mAP50 "
                    f"{g['mask_map50']:.3f}, mask mAP50-95 {g['mask_map50_95']:.3f}, box mAP50 {g['box_map50']:.3f}"
                )
    return 0


def _absolute(text: str) -> Path:
    """A manifest directory argument made absolute and normalised before use: an
    episode's id is its directory's name, which ``.`` or ``..`` do not show."""
    return Path(os.path.abspath(text))


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CelmaskError("--size", f"expected WIDTHxHEIGHT such as 640x360, got {text!r}") from None
    return w, h


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="celmask", description="Segment every anime character in every frame of whole episodes."
    )
    parser.add_argument("--version", action="version", version=f"celmask {version('celmask')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("probe", help="show a video's stream facts and content fingerprint")
    p.add_argument("video")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_probe)

    def shot_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cut-threshold", type=float, help="hard-cut dissimilarity, 0-1 (default 0.18)")
        p.add_argument("--min-shot-frames", type=int, help="shortest shot in frames (default 8)")
        p.add_argument(
            "--learned",
            choices=("auto", "always", "never"),
            help="shots.learned: TransNetV2 settles what the rules cannot; auto (default): on a CPU only "
            "around those candidates, on a GPU every frame; always: every frame; never: the rules alone",
        )
        p.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="progress bar (default: on a terminal, for videos over 5 s)",
        )

    p = sub.add_parser("shots", help="detect shots (cuts, fades, dissolves) and held frames")
    p.add_argument("video")
    p.add_argument(
        "--json",
        action="store_true",
        help='print JSON: {"shots": [{index, start, end, start_time, end_time, transition}], ...}',
    )
    shot_options(p)
    p.set_defaults(func=cmd_shots)

    p = sub.add_parser("synth", help="generate an anime-like episode with ground truth (test and demo data)")
    p.add_argument("out", help="directory for episode.mp4, truth.json, masks.parquet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--size", default="640x360", help="WIDTHxHEIGHT (default 640x360)")
    p.add_argument(
        "--art",
        metavar="DIR",
        help="act the episode with real art: DIR holds cutouts/<source>/ and "
        "backgrounds/<source>/ like ../shared/realart (default: generated characters and sets)",
    )
    p.add_argument(
        "--art-split",
        choices=("train", "val", "test"),
        help="only the characters and sets `celmask train --seed N` puts in this split (test: ones its detector never saw)",
    )
    p.add_argument(
        "--split-seed", type=int, default=0, metavar="N", help="the training seed N of --art-split (default 0)"
    )
    p.add_argument(
        "--hard-cases",
        action="store_true",
        help="add the editing that fools shot detectors: occlusions and background switches (no cuts), cut-ins, "
        "cut-outs, jump cuts, returns after short inserts (cuts); generated art only",
    )
    p.set_defaults(func=cmd_synth)

    def config_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML file of settings (flat keys, see `celmask config`)")
        p.add_argument(
            "--set", action="append", metavar="KEY=VALUE", help="one setting, e.g. --set refiner=none (repeatable)"
        )

    p = sub.add_parser("config", help="list every segmentation setting with its value and meaning")
    config_options(p)
    p.add_argument("--json", action="store_true", help="print the settings and their hash as JSON")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("segment", help="segment the characters of one shot (no Prefect) and summarise the tracks")
    p.add_argument("video")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--shot", type=int, default=0, help="shot index from `celmask shots` (default 0)")
    which.add_argument("--frames", help="START:END frame range instead of a detected shot")
    config_options(p)
    p.add_argument("--json", action="store_true", help="print JSON with every keyframe's score components")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser(
        "validate", help="check a mask manifest: schema, masks, boxes, frame ranges, every shot, _SUCCESS.json"
    )
    p.add_argument("out", type=_absolute, help="output directory (OUT) or one episode directory (OUT/<episode_id>)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "export", help="export masks: PNG sequences, palette PNGs, RGBA cut-outs, COCO, YouTube-VIS, preview videos"
    )
    p.add_argument("out", type=_absolute, help="output directory (OUT) or one episode directory (OUT/<episode_id>)")
    p.add_argument(
        "--format",
        required=True,
        metavar="FORMAT",
        help="png: a 1-bit PNG per track and frame; palette: a DAVIS palette PNG per frame; cutouts: RGBA "
        "characters per drawing; coco / ytvis: instances.json; preview: an mp4 per shot with the masks drawn",
    )
    p.add_argument("--episode", help="export only this episode id")
    p.add_argument(
        "--character",
        metavar="K",
        help="png and cutouts of one episode character only (its character_id or enrolled name, _tracks.parquet)",
    )
    p.add_argument("--to", help="write into TO/<episode_id>/<format>/ (default OUT/<episode_id>/_exports/<format>/)")
    p.add_argument(
        "--video",
        help="the episode's source video (cutouts and preview need its pixels; default: the one its run recorded; checked by fingerprint)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "report", help="write an episode's visual QC report (static HTML) and print the path of its index.html"
    )
    p.add_argument("episode", type=_absolute, help="one episode directory (OUT/<episode_id>)")
    p.add_argument(
        "--video",
        help="the episode's source video, for contact sheets of real frames (default: the one its run recorded, else masks on grey)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("run", help="segment a whole episode: shots, masks for every character, manifest, QC report")
    p.add_argument("video")
    p.add_argument("--out", required=True, help="output directory; the episode goes to OUT/<episode_id>/")
    p.add_argument("--episode-id", help="default: the video file's name without extension")
    p.add_argument("--cast", metavar="DIR", help=CAST_HELP)
    config_options(p)
    p.add_argument("--workers", type=int, default=2, help="shots segmented at once (default 2)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on a terminal; elsewhere a line every 15 s; --no-progress: neither)",
    )
    p.add_argument("--fail-shots", metavar="N[,N...]", help="rehearsal: make these shots fail on their first attempt")
    p.add_argument(
        "--fail-transient",
        action="store_true",
        help="rehearsal: make --fail-shots fail as a transient fault (retried automatically)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("rerun", help="re-run one shot of an episode and refresh its table, report and _SUCCESS.json")
    p.add_argument("episode", type=_absolute, help="one episode directory (OUT/<episode_id>)")
    p.add_argument("--shot", type=int, required=True, help="the shot's index")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="change a setting for this shot (repeatable)")
    p.set_defaults(func=cmd_rerun)

    p = sub.add_parser(
        "finalize", help="re-check an episode whose failed shots were re-run; write _SUCCESS.json when complete"
    )
    p.add_argument("episode", type=_absolute, help="one episode directory (OUT/<episode_id>)")
    p.add_argument("--cast", metavar="DIR", help=CAST_HELP)
    p.set_defaults(func=cmd_finalize)

    p = sub.add_parser(
        "correct", help="correct a track's mask on one frame (or add, delete tracks) and re-propagate that track"
    )
    p.add_argument("episode", type=_absolute, help="one complete episode directory (OUT/<episode_id>)")
    p.add_argument("--shot", type=int, help="the shot's index (default: from the batch files' names)")
    p.add_argument("--track", type=int, help="the track's id in the shot")
    p.add_argument("--frame", type=int, help="the frame's index in the episode")
    p.add_argument("--mask", help="PNG of the track's mask on --frame (non-zero or opaque = the character)")
    p.add_argument("--new-track", action="store_true", help="--mask is a character the detector missed")
    p.add_argument("--delete-track", action="store_true", help="remove --track: it is no character")
    p.add_argument("--palette", help="batch: a DAVIS palette PNG of --frame (pixel = track id + 1), as exported")
    p.add_argument("--pngs", help="batch: a folder of per-track PNGs laid out as `celmask export --format png`")
    p.add_argument("--coco", help="batch: a COCO instances.json as `celmask export --format coco` writes")
    p.add_argument("--video", help="the episode's source video (default: the one its run recorded)")
    p.add_argument("--who", help="who made the correction (default: the user name)")
    p.set_defaults(func=cmd_correct)

    p = sub.add_parser(
        "deploy", help="set up work pools, the gpu limit and the deployments on a running Prefect server"
    )
    p.add_argument(
        "--inbox", required=True, help="where episodes arrive: a directory or an fsspec URL (nightly's inbox)"
    )
    p.add_argument("--out", required=True, help="output directory on storage every worker shares (absolute)")
    p.add_argument(
        "--timezone", default="Asia/Tokyo", help="time zone of the nightly run at 02:00 (default Asia/Tokyo)"
    )
    p.add_argument("--gpu-slots", type=int, default=1, help="shots on GPUs at once, across all workers (default 1)")
    p.add_argument(
        "--repo",
        default=str(Path(__file__).resolve().parents[1]),
        help="the checkout to deploy from; process workers run flows from the same path (default: this one)",
    )
    p.add_argument(
        "--pool-type",
        choices=("process", "docker", "kubernetes"),
        default="process",
        help="where flow runs run: worker subprocesses from the checkout (default), containers or Kubernetes "
        "Jobs of the celmask image (templates: infra/k8s/, deployments/README.md)",
    )
    p.add_argument(
        "--image",
        default="celmask:latest",
        help="the celmask image of docker and kubernetes pools (default celmask:latest)",
    )
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("nightly", help="segment every video in an inbox (folder or URL) not yet complete in OUT")
    p.add_argument("inbox", help="folder of videos, or an fsspec URL such as s3://bucket/prefix")
    p.add_argument(
        "--out", required=True, help="output directory; each episode goes to OUT/<file name without extension>/"
    )
    config_options(p)
    p.add_argument("--workers", type=int, default=2, help="shots segmented at once (default 2)")
    p.set_defaults(func=cmd_nightly)

    p = sub.add_parser("demo", help="generate a demo episode and run the whole pipeline on it (embedded Prefect)")
    p.add_argument(
        "--out",
        default="out/demo",
        help="demo directory (default out/demo; the episode's output in OUT/manifest/demo/)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--workers", type=int, default=2, help="shots segmented at once (default 2)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on a terminal; elsewhere a line every 15 s; --no-progress: neither)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train", help="train the character detector (YOLO-seg) on real-art composites and generated data, offline"
    )
    p.add_argument("out", help="directory for dataset/, ultralytics/, best.pt, metrics.json")
    p.add_argument("--images", type=int, default=600, help="training images (default 600)")
    p.add_argument("--val-images", type=int, default=150, help="validation images, other seeds (default 150)")
    p.add_argument(
        "--test-images", type=int, help="held-out episode frames to evaluate on (default: as many as --val-images)"
    )
    p.add_argument("--epochs", type=int, default=20, help="default 20")
    p.add_argument("--imgsz", type=int, default=320, help="training image size (default 320)")
    p.add_argument("--batch", type=int, default=16, help="default 16")
    p.add_argument("--seed", type=int, default=0, help="dataset and training seed (default 0)")
    p.add_argument(
        "--cutouts",
        help="directory of real RGBA character cut-outs, one sub-folder per source or "
        "character, or 'none' (default: ../shared/realart/cutouts when present)",
    )
    p.add_argument(
        "--backgrounds",
        help="directory of real backgrounds without characters, one sub-folder per "
        "source, or 'none' (default: ../shared/realart/backgrounds when present)",
    )
    p.add_argument(
        "--split-by",
        choices=("character", "pose"),
        default="character",
        help="split the cut-outs between train, val and test by character (default: how well it finds "
        "characters it never saw) or by pose (your own cast: every character trained on, judged on poses it never saw)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="go on with an interrupted run in OUT from its last checkpoint (same dataset arguments)",
    )
    p.add_argument("--device", default="cpu", help="torch device for ultralytics: cpu, 0, ... (default cpu)")
    p.add_argument(
        "--model",
        default="yolov8n-seg.yaml",
        help="a *-seg.yaml to train from scratch (default yolov8n-seg.yaml), a -seg .pt to fine-tune, "
        "or builtin: fine-tune celmask's built-in detector",
    )
    p.set_defaults(func=cmd_train)
    return parser


class _QuietPrefect(logging.Filter):
    """Keeps Prefect's records off the command's console below its console level
    (``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL``, CRITICAL from celmask.flows.embedded). Its run
    loggers propagate to ours, so a failed task or flow would print its traceback
    before the command's one-line error; those records still reach the run's page
    in the UI through Prefect's API handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("prefect"):
            return True
        level = logging.getLevelName(os.environ.get("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL").upper())
        return record.levelno >= (level if isinstance(level, int) else logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("celmask: %(levelname)s: %(message)s"))
    handler.addFilter(_QuietPrefect())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])  # no-op when the root logger has handlers
    if argv is None:  # the command's own process
        stop_on_signals()
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught
        return code
    except CelmaskError as error:
        if stopping():
            return stopped()
        print(f"celmask: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return stopped()
    except BrokenPipeError:  # `celmask config | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:  # a full disk, a read-only OUT: one line, as bad input gets
        if stopping():
            return stopped()
        if output_problem(error) is None:
            raise
        print(
            f"celmask: error: {error.filename or 'output'}: {output_problem(error)}; free space there or choose another --out",
            file=sys.stderr,
        )
        return 2
    except BaseException:  # SIGTERM while a flow runs: Prefect's TerminationSignal
        if stopping():
            return stopped()
        raise


if __name__ == "__main__":
    sys.exit(main())
