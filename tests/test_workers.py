"""The shared worker mechanism: claims, liveness, progress lines."""

from __future__ import annotations

import os
import subprocess
import sys

from rearm_dgl import workers


def test_file_claims_hold_one_unit_per_process_and_die_with_it(tmp_path):
    claims = workers.FileClaims(tmp_path / "claims")
    mine = claims.claim("a")
    assert mine is not None and claims.held("a") and not claims.held("b")
    # Another process cannot take it while this one holds it ...
    code = ("from rearm_dgl.workers import FileClaims; import sys; "
            f"sys.exit(0 if FileClaims({str(tmp_path / 'claims')!r}).claim('a') is None else 1)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
    mine.release()
    assert not claims.held("a")
    # ... and a claim held by a process that is killed is free at once.
    holder = subprocess.Popen([sys.executable, "-c", code.replace(
        "sys.exit(0 if FileClaims", "c = FileClaims").replace(
        ".claim('a') is None else 1)", ".claim('a'); print('held', flush=True); "
        "import time; time.sleep(60)")], env=env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert claims.held("a")
    holder.kill()
    holder.wait()
    assert claims.claim("a") is not None


def test_a_dead_worker_is_told_from_a_live_one():
    me = workers.identity()
    assert not workers.is_dead(me)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert workers.is_dead({**me, "pid": proc.pid, "start": "1"})
    assert not workers.is_dead({**me, "host": "another-machine", "pid": proc.pid})


def test_progress_lines_are_tagged_and_rate_limited(monkeypatch):
    lines: list[str] = []
    clock = [0.0]
    monkeypatch.setattr(workers.time, "monotonic", lambda: clock[0])
    progress = workers.Progress("trial 3", lines.append, seconds=60, epochs=10)
    for epoch in range(1, 31):
        clock[0] += 1.0  # one second per epoch: the epoch count decides
        progress(f"epoch {epoch} valid Recall@20 0.1")
    assert lines == [f"trial 3 epoch {e} valid Recall@20 0.1" for e in (1, 10, 20, 30)]
    lines.clear()
    slow = workers.Progress("[baby/rearm/default/s1]", lines.append, seconds=60, epochs=10)
    for epoch in range(1, 4):
        clock[0] += 61.0  # a minute per epoch: every epoch is shown
        slow(f"epoch {epoch}")
    assert len(lines) == 3 and lines[0] == "[baby/rearm/default/s1] epoch 1"
    assert workers.duration(3725) == "1h02m" and workers.duration(75) == "1m15s"
