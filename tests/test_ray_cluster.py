"""The Ray a run starts for itself (`trajectory2task.programs.distributed.cluster.connect`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("ray")

PROBE = """
import pathlib, time
from trajectory2task.programs.distributed.cluster import RayTarget, connect

ray = connect(RayTarget(num_cpus=2))
seen = set()
deadline = time.monotonic() + 6  # Ray prestarts its idle workers within a second or two of its start
while time.monotonic() < deadline:
    for cmdline in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes().split(b"\\0")[0].decode(errors="replace")
        except OSError:
            continue  # a process that ended meanwhile
        if title.startswith("ray::"):
            seen.add(title.split()[0])
    time.sleep(0.2)
ray.shutdown()
print(",".join(sorted(seen)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process titles from /proc")
def test_a_local_ray_for_a_run_starts_no_idle_worker_processes(tmp_path):
    # prestarted idle workers lengthen the run's ray.init (see cluster._NO_PRESTART); a renamed
    # Ray knob shows here
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    titles = set(result.stdout.strip().split(","))
    assert "ray::RuntimeEnvAgent" in titles  # the scan sees Ray's processes
    assert "ray::IDLE" not in titles
