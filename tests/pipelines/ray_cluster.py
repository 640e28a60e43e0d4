"""A real multi-node Ray cluster on this machine: `ray start --head` plus `ray start --address` worker nodes.

Every node is its own raylet, started with `--block` in a session of its own, on free ports, under a
temporary directory of its own. Teardown kills those process groups only: `ray stop` would stop every
Ray on the machine, including ones this test suite does not own.

The head has no CPUs, so every task and actor of a pipeline must run on a worker node; `task_nodes`
reads where they ran from the GCS task events.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120
OBJECT_STORE_BYTES = 100 * 2**20
_PORTS_PER_NODE = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)

# Run against the cluster: where each executed task ran, and which node is the head (Ray internals: the
# task events the GCS keeps, as `ray.timeline()` reads them; the state API needs the full dashboard).
_TASK_NODES = """
import collections, json, sys
import ray
from ray._private.state import state
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
head = next(n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"])
ran = collections.Counter()
for event in state._get_all_task_events():
    node = event.state_updates.node_id.hex()
    if event.task_info.name and node:
        ran[node] += 1
print(json.dumps({"head": head, "ran": ran}))
"""


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    log: Path

    def processes(self) -> list[psutil.Process]:
        """Every live process of this node (its session: `ray start`, the raylet, its workers and agents)."""
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getsid(proc.pid) == self.process.pid:
                    found.append(proc)
            except (ProcessLookupError, PermissionError):
                continue
        return found

    def runs(self, title_prefix: str) -> bool:
        """True when one of the node's workers has a process title like `ray::PerplexityActor...`."""
        for proc in self.processes():
            try:
                if " ".join(proc.cmdline()).startswith(title_prefix):
                    return True
            except psutil.Error:
                continue
        return False

    def kill(self) -> None:
        """SIGKILL the whole node, as a machine failure would."""
        for proc in self.processes():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.wait(timeout=30)


@dataclass
class LocalCluster:
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ray")))  # short: socket paths
    nodes: list[Node] = field(default_factory=list)
    address: str = ""

    def env(self) -> dict[str, str]:
        """Nodes run this checkout's code: workers import the pipelines' modules by name."""
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": path, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

    def _start(self, name: str, args: list[object]) -> Node:
        ports = free_ports(len(_PORTS_PER_NODE))
        log = self.temp_dir / f"{name}.log"
        command = [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--block",
            "--disable-usage-stats",
            "--object-store-memory",
            str(OBJECT_STORE_BYTES),
            "--min-worker-port",
            "0",
            "--max-worker-port",
            "0",
            *[str(a) for pair in zip(_PORTS_PER_NODE, ports) for a in pair],
            *map(str, args),
        ]
        with open(log, "w") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env(), cwd=self.temp_dir, start_new_session=True
            )
        node = Node(name, process, log)
        self.nodes.append(node)
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start for {name} failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        return node

    def start_head(self) -> Node:
        gcs, dashboard = free_ports(2)
        self.address = f"127.0.0.1:{gcs}"
        return self._start(
            "head",
            [
                "--head",
                "--port",
                gcs,
                "--num-cpus",
                0,
                "--temp-dir",
                self.temp_dir,
                "--include-dashboard",
                "false",
                "--dashboard-port",
                dashboard,
            ],
        )

    def add_worker(self, name: str, cpus: int = 1) -> Node:
        return self._start(name, ["--address", self.address, "--num-cpus", cpus, "--resources", json.dumps({"potion_worker": cpus})])

    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n.name != "head" and n.process.poll() is None]

    def task_nodes(self) -> dict:
        """{"head": node id, "ran": {node id: tasks executed there}} over the cluster's life."""
        out = subprocess.run(
            [sys.executable, "-c", _TASK_NODES, self.address], env=self.env(), capture_output=True, text=True, timeout=120, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        for node in reversed(self.nodes):
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in reversed(self.nodes):
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            node.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
