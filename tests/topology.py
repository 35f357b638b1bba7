"""A Sentinel topology for tests: a master, a replica and three sentinels, on free
loopback ports, each a real server process of the binary the tests use.

The sentinels start from configs that already know each other and the replica (their
ids seeded), so they are ready at once instead of after their discovery (about 2 s).
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import redis

from resc.dev.embedded import free_port
from tests.conftest import RedisServer, wait_until

MASTER_NAME = "mym"


class Sentinel:
    """One sentinel process."""

    def __init__(
        self, binary: str, folder: Path, port: int, sentinel_id: str, password: str | None
    ) -> None:
        self.binary = binary
        self.password = password
        self.folder = folder
        self.port = port
        self.id = sentinel_id
        self.process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port, password=self.password, decode_responses=True, socket_timeout=5
        )

    def start(self, config: str) -> None:
        path = self.folder / "sentinel.conf"
        path.write_text(config)  # the sentinel rewrites it as it learns
        self.process = subprocess.Popen(
            [self.binary, str(path), "--sentinel"],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class Topology:
    """A master, a replica of it, and three sentinels monitoring them as MASTER_NAME;
    `password` for the nodes, `sentinel_password` for the sentinels."""

    def __init__(
        self,
        folder: Path,
        master_args: tuple[str, ...] = (),
        password: str | None = None,
        sentinel_password: str | None = None,
        down_after_ms: int = 1000,
    ) -> None:
        self.down_after_ms = down_after_ms
        self.password = password
        self.sentinel_password = sentinel_password
        (folder / "a").mkdir(parents=True)
        (folder / "b").mkdir()
        # Either node may become the master: both sync a new replica at once.
        common = ("--repl-diskless-sync-delay", "0", *master_args)
        if password:
            common += ("--masterauth", password)
        self.master = RedisServer(folder / "a", *common, password=password)
        self.replica = RedisServer(folder / "b", *common, password=password)
        self.nodes = {self.master.port: self.master, self.replica.port: self.replica}
        self.sentinels = []
        for i in range(3):
            (folder / f"sentinel{i}").mkdir()
            self.sentinels.append(
                Sentinel(
                    self.master.binary,
                    folder / f"sentinel{i}",
                    free_port(),
                    secrets.token_hex(20),
                    sentinel_password,
                )
            )

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        auth = f":{self.password}@" if self.password else ""
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"redis+sentinel://{auth}{hosts}/{MASTER_NAME}/{db}{query}"

    def start(self) -> None:
        self.master.start()
        self.replica.args = (*self.replica.args, "--replicaof", "127.0.0.1", str(self.master.port))
        self.replica.start()
        replica = self.replica.client()
        try:
            wait_until(lambda: replica.info("replication").get("master_link_status") == "up")
        finally:
            replica.close()
        for sentinel in self.sentinels:
            sentinel.start(self._sentinel_config(sentinel))
        for sentinel in self.sentinels:
            wait_until(lambda s=sentinel: self._knows_everyone(s))

    def _sentinel_config(self, sentinel: Sentinel) -> str:
        lines = [
            f"port {sentinel.port}",
            "bind 127.0.0.1",
            f"dir {sentinel.folder}",
            f"sentinel myid {sentinel.id}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} 3000",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
            f"sentinel known-replica {MASTER_NAME} 127.0.0.1 {self.replica.port}",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {MASTER_NAME} {self.password}")
        if self.sentinel_password:
            lines += [
                f"requirepass {self.sentinel_password}",
                f"sentinel sentinel-pass {self.sentinel_password}",
            ]
        lines += [
            f"sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {other.port} {other.id}"
            for other in self.sentinels
            if other is not sentinel
        ]
        return "\n".join(lines) + "\n"

    def _knows_everyone(self, sentinel: Sentinel) -> bool:
        try:
            with sentinel.client() as client:
                master = client.sentinel_master(MASTER_NAME)
        except redis.RedisError:
            return False
        return master["num-other-sentinels"] == 2 and master["num-slaves"] == 1

    def master_port(self) -> int:
        """The master's port as a majority of the sentinels know it now."""
        ports: list[int] = []
        for sentinel in self.sentinels:
            with suppress(redis.RedisError), sentinel.client() as client:
                address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
                ports.append(int(address[1]))
        return max(set(ports), key=ports.count)

    def current_master(self) -> RedisServer:
        return self.nodes[self.master_port()]

    def failover(self) -> RedisServer:
        """SENTINEL FAILOVER (planned); returns the node being promoted."""
        old = self.master_port()
        with self.sentinels[0].client() as client:
            client.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        return next(node for port, node in self.nodes.items() if port != old)

    def promoted(self, node: RedisServer) -> bool:
        """Whether `node` says it is a master and a majority of the sentinels agree."""
        try:
            with node.client() as client:
                role = client.execute_command("ROLE")[0]
        except redis.RedisError:
            return False
        return role == b"master" and self.master_port() == node.port

    def kill(self) -> None:
        for sentinel in self.sentinels:
            sentinel.kill()
        for node in self.nodes.values():
            node.kill()


@contextmanager
def sentinel_topology(
    folder: Path,
    master_args: tuple[str, ...] = (),
    password: str | None = None,
    sentinel_password: str | None = None,
    down_after_ms: int = 1000,
) -> Iterator[Topology]:
    """A started Topology; `down_after_ms`: how long a master may not answer the sentinels
    before they fail it over."""
    topology = Topology(folder, master_args, password, sentinel_password, down_after_ms)
    try:
        topology.start()
        yield topology
    finally:
        topology.kill()
