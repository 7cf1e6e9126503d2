"""Minor findings of issue 13 on the nightly inbox: credentials in an inbox URL never
reach errors, ``_run/inbox_source.json`` or the command's output; a symbolic link that
leaves a local inbox is listed as a problem and never opened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.manifest.layout import inbox_source_path
from celmask.tasks.run.inbox import InboxItem, fetch, find_episodes, record_source, redact
from tests.support.finished import celmask, one_line_error

pytestmark = pytest.mark.faults
SECRET = "s3cr3t/Key+x"


def test_credentials_in_an_inbox_url_are_never_shown(tmp_path, env):
    inbox = f"ftp://celmask:{SECRET}@127.0.0.1:9/inbox"  # nothing listens on port 9
    with pytest.raises(CelmaskError) as error:
        find_episodes(inbox, tmp_path / "out")
    assert SECRET not in str(error.value) and "ftp://***@127.0.0.1:9/inbox" in str(error.value)
    done = celmask(env, "nightly", inbox, "--out", tmp_path / "out")
    assert done.returncode == 2 and SECRET not in done.stdout + done.stderr
    assert "ftp://***@127.0.0.1:9/inbox" in one_line_error(done)

    item = InboxItem(
        "ep", f"s3://AKIA:{SECRET}@bucket/ep.mp4?X-Amz-Signature=abc", 10, False, "new", version="10 bytes"
    )
    with pytest.raises(CelmaskError) as error:
        fetch(item, tmp_path / "staging")
    assert SECRET not in str(error.value) and "abc" not in str(error.value)
    record_source(item, tmp_path / "out")
    recorded = json.loads(inbox_source_path(tmp_path / "out" / "ep").read_text())
    assert recorded == {"source": "s3://***@bucket/ep.mp4?X-Amz-Signature=***", "version": "10 bytes"}
    assert redact("s3://bucket/ep@2x.mp4") == "s3://bucket/ep@2x.mp4"  # an @ in a path is no credential


def test_a_link_out_of_the_inbox_is_refused(tmp_path):
    inbox, outside = tmp_path / "inbox", tmp_path / "secret.mp4"
    inbox.mkdir()
    outside.write_bytes(b"not for the pipeline")
    (inbox / "real.mp4").write_bytes(b"an episode")
    (inbox / "leak.mp4").symlink_to(outside)
    (inbox / "passwd.mp4").symlink_to("/etc/passwd")
    (inbox / "alias.mp4").symlink_to(inbox / "real.mp4")  # a link within the inbox is fine
    items = {i.episode_id: i for i in find_episodes(inbox, tmp_path / "out")}
    assert items["leak"].problem == f"a link to {outside}, outside the inbox: not opened"
    assert items["passwd"].problem == "a link to /etc/passwd, outside the inbox: not opened"
    assert not items["real"].problem and not items["alias"].problem
    assert Path(items["alias"].source).name == "alias.mp4"


def test_a_killed_runs_partial_copy_is_removed_by_the_next_fetch(tmp_path):
    import fsspec

    url = f"memory://celmask-faults-{tmp_path.name}/ep.mp4"
    fsspec.filesystem("memory").pipe(url.removeprefix("memory://"), b"remote episode")
    staging = tmp_path / "staging"
    staging.mkdir()
    stale = staging / f".ep.mp4.{2**22 + 1}.part"  # no such pid: its copy was killed
    stale.write_bytes(b"remote ep")
    item = InboxItem("ep", url, 14, False, "new")
    assert fetch(item, staging).read_bytes() == b"remote episode"
    assert sorted(p.name for p in staging.iterdir()) == ["ep.mp4"]
