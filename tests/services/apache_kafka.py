"""Apache Kafka from Maven Central, as plain JVM processes on 127.0.0.1: one node or a KRaft quorum.

The server artifact and its runtime dependencies are resolved by Maven (`kafka-pom.xml` beside this
file) into `.cache/kafka/<version>/lib` of the checkout. Each node is broker and controller at
once; the controllers form a static quorum. Broker-wide settings come from
`deploy/kafka/broker.properties`, the file docker-compose.yml's brokers follow too.

As a command (`make kafka-up` / `make kafka-down`):

    python -m tests.services.apache_kafka up [--brokers 1|3]
    python -m tests.services.apache_kafka down
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from app.devbroker import free_port, port_open

KAFKA_VERSION = "4.4.0"  # also in kafka-pom.xml
ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "kafka" / KAFKA_VERSION
POM = Path(__file__).with_name("kafka-pom.xml")
BROKER_PROPERTIES = ROOT / "deploy" / "kafka" / "broker.properties"
RUN_DIR = ROOT / ".run" / "kafka"
# `make kafka-up`'s fixed ports, as docker-compose.yml publishes its brokers.
FIXED_PORTS = (19092, 19093, 19094)
FIXED_CONTROLLER_PORTS = (29092, 29093, 29094)
# Settings lowered to what `size` nodes can hold.
_REPLICATION_KEYS = (
    "default.replication.factor",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
)
_ISR_KEYS = ("min.insync.replicas", "transaction.state.log.min.isr")
# A 2-core, 24 GB machine runs up to three of these beside the tests.
JVM_OPTIONS = ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"]
LOG4J2 = """status = warn
appender.file.type = Console
appender.file.name = STDOUT
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


class KafkaUnavailableError(RuntimeError):
    """Apache Kafka cannot be run here (no Java, no Maven, or resolution failed); says why in one line."""


def ensure_installed() -> Path:
    """The directory of the server's jars, resolved by Maven on first use."""
    lib = CACHE / "lib"
    marker = CACHE / ".resolved"
    if marker.exists():
        return lib
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise KafkaUnavailableError(
                f"Apache Kafka needs `{tool}` (Java 17+ and Maven) on PATH; it is missing"
            )
    shutil.rmtree(lib, ignore_errors=True)
    command = ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies"]
    command += [f"-DoutputDirectory={lib}", "-DincludeScope=runtime"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        raise KafkaUnavailableError(
            f"Maven could not resolve Apache Kafka {KAFKA_VERSION}: {' | '.join(tail)}"
        )
    marker.touch()
    return lib


def broker_settings(size: int) -> dict[str, str]:
    """deploy/kafka/broker.properties, with replication lowered to what `size` nodes can hold."""
    settings: dict[str, str] = {}
    for line in BROKER_PROPERTIES.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    for key in _REPLICATION_KEYS:
        settings[key] = str(min(int(settings[key]), size))
    for key in _ISR_KEYS:
        settings[key] = str(min(int(settings[key]), max(size - 1, 1)))
    return settings


@dataclass
class KafkaNode:
    """One JVM: broker and controller, node id `node_id`."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    pid_file: Path | None = None

    @property
    def listener(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / f"broker-{self.node_id}.log"

    @property
    def data(self) -> Path:
        return self.directory / f"data-{self.node_id}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)


@dataclass
class KafkaCluster:
    """`size` Apache Kafka nodes on 127.0.0.1 in `directory`, started and stopped by PID.

    The same methods as the development broker's (start, stop, pause, resume, kill), so fault tests
    run on either; they act on every node, or on the nodes named. A killed node restarted keeps its
    data, as a real broker does.
    """

    directory: Path
    size: int = 1
    ports: tuple[int, ...] = ()
    controller_ports: tuple[int, ...] = ()
    detach: bool = False  # make kafka-up: the nodes outlive the command that started them
    nodes: list[KafkaNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = self.ports or tuple(free_port() for _ in range(self.size))
        controllers = self.controller_ports or tuple(free_port() for _ in range(self.size))
        self.nodes = [
            KafkaNode(node_id=i + 1, port=ports[i], controller_port=controllers[i], directory=self.directory)
            for i in range(self.size)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.listener for node in self.nodes)

    @property
    def pid(self) -> int | None:
        return self.nodes[0].pid

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, node_ids: list[int] | None = None, timeout: float = 90.0) -> KafkaCluster:
        """Start the named nodes (default: every node not running) and wait until each answers
        metadata listing every running broker."""
        lib = ensure_installed()
        self.directory.mkdir(parents=True, exist_ok=True)
        log4j = self.directory / "log4j2.properties"
        log4j.write_text(LOG4J2)
        chosen = [self.node(n) for n in node_ids] if node_ids else [n for n in self.nodes if n.pid is None]
        for node in chosen:
            if port_open(node.port) or port_open(node.controller_port):
                raise RuntimeError(
                    f"port {node.port} or {node.controller_port} on 127.0.0.1 is already in use"
                )
            self._format(node, lib)
        for node in chosen:
            config = self.directory / f"server-{node.node_id}.properties"
            config.write_text(self._server_properties(node))
            command = ["java", *JVM_OPTIONS, f"-Dlog4j2.configurationFile={log4j}"]
            command += ["-cp", f"{lib}/*", "kafka.Kafka", str(config)]
            with open(node.log_path, "ab") as log:
                node.process = subprocess.Popen(
                    command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=self.detach
                )
            if node.pid_file is not None:
                node.pid_file.write_text(f"{node.process.pid}\n")
        try:
            self.wait_ready(timeout)
        except BaseException:
            # The nodes started here would outlive a caller that never got the cluster to stop
            # (a fixture whose set-up failed has no tear-down): stopped here instead.
            self.stop([node.node_id for node in chosen])
            raise
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until every running node answers metadata naming all running brokers."""
        running = [node for node in self.nodes if node.pid is not None]
        deadline = time.monotonic() + timeout
        for node in running:
            while not self._sees_brokers(node, {n.node_id for n in running}):
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"Kafka node {node.node_id} exited (log: {node.log_path})")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Kafka node {node.node_id} not ready within {timeout}s (log: {node.log_path})"
                    )
                time.sleep(0.25)

    @staticmethod
    def _sees_brokers(node: KafkaNode, expected: set[int]) -> bool:
        if not port_open(node.port):
            return False
        admin = AdminClient({"bootstrap.servers": node.listener, "socket.timeout.ms": 2000})
        try:
            metadata = admin.list_topics(timeout=2)
        except Exception:
            return False
        return expected <= set(metadata.brokers)

    def pause(self, node_ids: list[int] | None = None) -> None:
        """SIGSTOP: the nodes keep their connections but answer nothing."""
        for node in self._chosen(node_ids):
            node.signal(signal.SIGSTOP)

    def resume(self, node_ids: list[int] | None = None) -> None:
        for node in self._chosen(node_ids):
            node.signal(signal.SIGCONT)

    def kill(self, node_ids: list[int] | None = None) -> None:
        """SIGKILL: the data stays on disk; `start()` brings the nodes back with it."""
        for node in self._chosen(node_ids):
            if node.process is not None:
                node.signal(signal.SIGKILL)
                node.process.wait(timeout=10)
                node.process = None

    def stop(self, node_ids: list[int] | None = None, timeout: float = 20.0) -> None:
        """SIGTERM (a controlled shutdown), then SIGKILL for any node still there after `timeout`."""
        chosen = [node for node in self._chosen(node_ids) if node.process is not None]
        for node in chosen:
            node.signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            node.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in chosen:
            assert node.process is not None
            try:
                node.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(timeout=10)
            node.process = None
            if node.pid_file is not None:
                node.pid_file.unlink(missing_ok=True)

    def _chosen(self, node_ids: list[int] | None) -> list[KafkaNode]:
        return [self.node(n) for n in node_ids] if node_ids else list(self.nodes)

    def leader_of(self, topic: str, partition: int = 0) -> int:
        """Node id of the partition's leader, as the cluster reports it now."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        metadata = admin.list_topics(topic, timeout=10)
        return int(metadata.topics[topic].partitions[partition].leader)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration ----------------------------------------------------------------------------

    def _server_properties(self, node: KafkaNode) -> str:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.data),
            **broker_settings(self.size),
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _format(self, node: KafkaNode, lib: Path) -> None:
        """Format the node's storage once; later starts keep its data.

        Formatting costs a JVM start, so a formatted copy per (cluster size, node id) is kept in the
        cache and copied: the storage holds no ports, only ids, and each copy runs alone.
        """
        if (node.data / "meta.properties").exists():
            return
        template = CACHE / "formatted" / f"{self.size}-{node.node_id}"
        if not (template / "meta.properties").exists():
            config = CACHE / "formatted" / f"server-{self.size}-{node.node_id}.properties"
            config.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(template, ignore_errors=True)
            voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
            config.write_text(
                f"process.roles=broker,controller\nnode.id={node.node_id}\ncontroller.quorum.voters={voters}\n"
                "controller.listener.names=CONTROLLER\n"
                f"listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}\n"
                f"log.dirs={template}\n"
            )
            cluster_id = _cluster_id(self.size)
            command = ["java", "-XX:TieredStopAtLevel=1", "-cp", f"{lib}/*", "kafka.tools.StorageTool"]
            command += ["format", "-t", cluster_id, "-c", str(config), "--ignore-formatted"]
            result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
            if result.returncode != 0:
                raise KafkaUnavailableError(
                    f"formatting Kafka storage failed: {result.stderr.strip()[-300:]}"
                )
        shutil.copytree(template, node.data)


def _cluster_id(size: int) -> str:
    """A stable cluster id per cluster size: the nodes of one cluster must share it."""
    raw = uuid.uuid5(uuid.NAMESPACE_URL, f"event-ingest-test-kafka-{size}").bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# -- make kafka-up / kafka-down -----------------------------------------------------------------------


def _fixed_cluster(size: int) -> KafkaCluster:
    cluster = KafkaCluster(
        RUN_DIR,
        size=size,
        ports=FIXED_PORTS[:size],
        controller_ports=FIXED_CONTROLLER_PORTS[:size],
        detach=True,
    )
    for node in cluster.nodes:
        node.pid_file = RUN_DIR / f"broker-{node.node_id}.pid"
    return cluster


def _running_pids() -> dict[Path, int]:
    pids: dict[Path, int] = {}
    for pid_file in sorted(RUN_DIR.glob("broker-*.pid")):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
            pids[pid_file] = pid
            continue
        pid_file.unlink(missing_ok=True)  # stale: that process is gone
    return pids


def up(size: int) -> int:
    running = _running_pids()
    if running:
        count = len(running)
        bootstrap = ",".join(f"127.0.0.1:{port}" for port in FIXED_PORTS[:count])
        print(f"Apache Kafka is already running ({count} node(s), PIDs {sorted(running.values())})")
        print(f"KAFKA_BROKERS={bootstrap}")
        return 0
    cluster = _fixed_cluster(size)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    try:
        cluster.start()
    except (KafkaUnavailableError, RuntimeError) as exc:
        cluster.stop()
        print(f"kafka-up: {exc}", file=sys.stderr)
        return 1
    print(f"Apache Kafka {KAFKA_VERSION}: {size} node(s) up, logs in {RUN_DIR}")
    print(f"KAFKA_BROKERS={cluster.bootstrap}")
    return 0


def down() -> int:
    running = _running_pids()
    for pid in running.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for pid_file, pid in running.items():
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
    # The next `up` formats afresh: a cluster of another size must not find this one's data.
    for data in RUN_DIR.glob("data-*"):
        shutil.rmtree(data, ignore_errors=True)
    print(f"stopped {len(running)} Apache Kafka node(s)")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError, ValueError):
        # A zombie (exited, not yet reaped by its parent) is not alive.
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="apache_kafka", description=__doc__.splitlines()[0] if __doc__ else None
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start a local cluster on 127.0.0.1:19092..19094")
    start.add_argument(
        "--brokers", type=int, choices=(1, 3), default=int(os.environ.get("KAFKA_LOCAL_BROKERS", "1"))
    )
    commands.add_parser("down", help="stop it (by PID) and remove its data")
    commands.add_parser("install", help="resolve Apache Kafka with Maven into the cache")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return up(args.brokers)
        if args.command == "install":
            print(ensure_installed())
            return 0
        return down()
    except KafkaUnavailableError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
