#!/usr/bin/env bash
# One entry point for a fresh machine: set celmask up (once), then run a job.
#   ./dev.sh demo           set up, then run the main job on a generated demo episode
#   ./dev.sh test [ARGS]    set up, then run the test suite (ARGS go to pytest)
#   ./dev.sh lint           set up, then check style (ruff) and the import layering (import-linter)
#   ./dev.sh setup          set up only
# Set-up is idempotent: the environment lives in .venv/ and is reinstalled only
# when pyproject.toml changes; ffmpeg is installed from Debian when missing, and for
# the tests Chromium too (the QC report is checked in a headless browser) and PostgreSQL
# (a Prefect server on it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

say() { printf '==> %s\n' "$*"; }
die() { printf 'dev.sh: %s\n' "$*" >&2; exit 1; }

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

apt_install() {  # PACKAGE WHY
    say "$1: missing, installing the Debian package$2"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

ensure_ffmpeg() {
    if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then
        say "ffmpeg: $(command -v ffmpeg) (present)"
        return
    fi
    if can_apt; then
        apt_install ffmpeg ""
    else
        die "ffmpeg is not installed; install it first (Debian/Ubuntu: sudo apt-get install ffmpeg; macOS: brew install ffmpeg), then run ./dev.sh again"
    fi
}

ensure_chromium() {
    if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; then
        return
    fi
    if can_apt; then
        apt_install chromium " (the QC report test opens it headless)"
    else
        say "chromium: not installed; the QC report browser test will skip (Debian: sudo apt-get install chromium)"
    fi
}

ensure_postgresql() {  # Debian's server binaries (initdb, postgres) live off PATH, in /usr/lib/postgresql/N/bin
    if command -v initdb >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
        return
    fi
    if can_apt; then
        apt_install postgresql " (the deployed tests run a Prefect server on PostgreSQL)"
    else
        say "postgresql: not installed; the PostgreSQL-backed Prefect test will skip (Debian: sudo apt-get install postgresql)"
    fi
}

ensure_venv() {
    local python=${PYTHON:-python3}
    command -v "$python" >/dev/null || die "$python not found; install Python >= 3.11"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$python is $("$python" -V 2>&1); celmask needs Python >= 3.11 (set PYTHON=/path/to/python3.x)"
    if [ ! -x .venv/bin/python ]; then
        say "creating .venv with $("$python" -V 2>&1)"
        "$python" -m venv .venv
    fi
    local want have=""
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    [ -f .venv/.celmask-installed ] && have=$(cat .venv/.celmask-installed)
    if [ "$want" = "$have" ] && [ -x .venv/bin/celmask ]; then
        say "python environment: .venv (up to date)"
        return
    fi
    say "installing celmask and its dependencies into .venv (first time: 2-3 minutes)"
    # -qq: errors only (pip's warnings about this machine's index set-up are noise here)
    .venv/bin/python -m pip install -qq --upgrade pip
    .venv/bin/python -m pip install -qq -e '.[test]'
    echo "$want" > .venv/.celmask-installed
    say "installed: $(.venv/bin/celmask --version)"
}

lint() {
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    # import-linter finds only top-level packages, and celmask's are mapped from the
    # root folders (pyproject package-dir): check them through a tree laid out as installed.
    local tree
    tree=$(mktemp -d)
    mkdir "$tree/celmask"
    cp celmask/__init__.py "$tree/celmask/"
    for d in flows tasks models; do ln -s "$PWD/$d" "$tree/celmask/$d"; done
    (cd "$tree" && cp "$OLDPWD/pyproject.toml" . && PYTHONPATH="$tree" "$OLDPWD/.venv/bin/lint-imports" --no-cache) || { rm -rf "$tree"; return 1; }
    rm -rf "$tree"
}

job=${1:-}
[ $# -gt 0 ] && shift
case "$job" in
    setup) ensure_ffmpeg; ensure_venv ;;
    lint)  ensure_venv; say "checking style and import layering"; lint ;;
    demo)  ensure_ffmpeg; ensure_venv; say "running: celmask demo $*"; exec .venv/bin/celmask demo "$@" ;;
    test)  ensure_ffmpeg; ensure_chromium; ensure_postgresql; ensure_venv; say "running: pytest $*"; exec .venv/bin/python -m pytest "$@" ;;
    *)     die "usage: ./dev.sh demo | test [pytest args] | lint | setup" ;;
esac
