"""Every path under an output tree: the one contract between the flows and the hosts.

::

    OUT/
      _inbox/                          remote inbox videos staged for a run (staging_dir)
      <episode_id>/
        shots/shot_NNNN.parquet        one file per shot: the masks (shot_path)
        _episode.parquet               one row per shot (episode_table)
        _tracks.parquet                one row per track: its episode character (schema 2, manifest/cast.py)
        _cast.parquet                  one row per character: appearances, keyframe, signature
        _SUCCESS.json                  written last, only when every shot is good (success_path)
        _run/                          run records (run_dir)
          plan.json                    video, fingerprint, shots, settings (plan_path)
          shot_NNNN.json               a shot's summary, its cache key (summary_path)
          contact_NNNN.jpg             a shot's contact sheet (sheet_path)
          cast_NNNN.json               a shot's track signatures, keyed by the shot file (signature_path)
          enrolment.json               the --cast references' signatures (enrolment_path)
          inbox_source.json            the remote file a complete episode came from (inbox_source_path)
        _report/index.html             the QC report, with its thumbs/ (report_dir)
        _exports/<format>/             exports written by `celmask export` (exports_dir)
        _corrections/shot_NNNN/        hand corrections of a shot, kept across re-runs (corrections_dir)
          track_TTTT_frame_FFFFFF.json one corrected mask, with who/when (correction_path)
          track_TTTT_delete.json       a track removed by hand (correction_path)
          base.parquet                 the shot file as segmented, before corrections (base_shot_path)

Everything but the shot files starts with ``_``, so Parquet readers that skip such
names (pyarrow datasets, pandas) read a whole tree as one table of masks.
"""

from __future__ import annotations

import re
from pathlib import Path

SHOTS_DIR = "shots"
SHOT_FILE = re.compile(r"shot_(\d{4,})\.parquet")
EPISODE_TABLE_NAME = "_episode.parquet"
TRACKS_NAME = "_tracks.parquet"
CAST_NAME = "_cast.parquet"
ENROLMENT_NAME = "enrolment.json"
SUCCESS_NAME = "_SUCCESS.json"
RUN_DIR = "_run"
PLAN_NAME = "plan.json"
INBOX_SOURCE_NAME = "inbox_source.json"
REPORT_DIR = "_report"
THUMBS_DIR = "thumbs"
INDEX_NAME = "index.html"
EXPORTS_DIR = "_exports"
STAGING_NAME = "_inbox"
CORRECTIONS_DIR = "_corrections"
BASE_SHOT_NAME = "base.parquet"


def shots_dir(episode_dir: str | Path) -> Path:
    return Path(episode_dir) / SHOTS_DIR


def shot_path(episode_dir: str | Path, index: int) -> Path:
    return shots_dir(episode_dir) / f"shot_{index:04d}.parquet"


def episode_table(episode_dir: str | Path) -> Path:
    return Path(episode_dir) / EPISODE_TABLE_NAME


def success_path(episode_dir: str | Path) -> Path:
    return Path(episode_dir) / SUCCESS_NAME


def run_dir(episode_dir: str | Path) -> Path:
    return Path(episode_dir) / RUN_DIR


def plan_path(episode_dir: str | Path) -> Path:
    return run_dir(episode_dir) / PLAN_NAME


def summary_path(episode_dir: str | Path, index: int) -> Path:
    return run_dir(episode_dir) / f"shot_{index:04d}.json"


def sheet_path(episode_dir: str | Path, index: int) -> Path:
    return run_dir(episode_dir) / f"contact_{index:04d}.jpg"


def signature_path(episode_dir: str | Path, index: int) -> Path:
    return run_dir(episode_dir) / f"cast_{index:04d}.json"


def enrolment_path(episode_dir: str | Path) -> Path:
    return run_dir(episode_dir) / ENROLMENT_NAME


def inbox_source_path(episode_dir: str | Path) -> Path:
    return run_dir(episode_dir) / INBOX_SOURCE_NAME


def report_dir(episode_dir: str | Path) -> Path:
    return Path(episode_dir) / REPORT_DIR


def exports_dir(episode_dir: str | Path, fmt: str, to: str | Path | None = None) -> Path:
    """Where format ``fmt`` of an episode goes: under the episode, or ``to/<episode_id>/``."""
    episode_dir = Path(episode_dir)
    return (Path(to) / episode_dir.name if to is not None else episode_dir / EXPORTS_DIR) / fmt


def staging_dir(out: str | Path) -> Path:
    return Path(out) / STAGING_NAME


def corrections_dir(episode_dir: str | Path, index: int) -> Path:
    return Path(episode_dir) / CORRECTIONS_DIR / f"shot_{index:04d}"


def correction_path(episode_dir: str | Path, index: int, track: int, frame: int | None) -> Path:
    """A mask correction of ``track`` on ``frame``, or (``frame`` None) the track's deletion."""
    name = f"track_{track:04d}_delete.json" if frame is None else f"track_{track:04d}_frame_{frame:06d}.json"
    return corrections_dir(episode_dir, index) / name


def base_shot_path(episode_dir: str | Path, index: int) -> Path:
    return corrections_dir(episode_dir, index) / BASE_SHOT_NAME
