"""The local Ray that ``gemlab train`` starts for itself listens on the loopback interface only."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ray

LISTENING = """
from gemlab.engine.launch import ensure_ray
ensure_ray(None, verbose=False)
import json, psutil, ray
processes = psutil.Process().children(recursive=True)
ray.get(ray.remote(lambda: 1).remote())  # a worker process too
processes = psutil.Process().children(recursive=True)
sockets = {}
for process in processes:
    try:
        for c in process.net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN:
                sockets[f"{process.name()}:{c.laddr.port}"] = c.laddr.ip
    except psutil.NoSuchProcess:
        pass
import os
left = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" in os.environ
print(json.dumps({"node": ray.util.get_node_ip_address(), "sockets": sockets, "switch_left": left}))
ray.shutdown()
"""


def test_the_embedded_ray_binds_every_server_to_127_0_0_1():
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run([sys.executable, "-c", LISTENING], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["node"] == "127.0.0.1"
    names = {key.split(":")[0] for key in seen["sockets"]}
    assert {"gcs_server", "raylet"} <= names, seen  # the servers a remote host would reach
    exposed = {key: ip for key, ip in seen["sockets"].items() if ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")}
    assert not exposed, f"listening beyond the loopback interface: {exposed}"
    assert "listens on" not in done.stderr  # ensure_ray's warning when the switch came too late
    assert seen["switch_left"] is False  # a `ray start` this process runs later must not inherit single-machine mode
