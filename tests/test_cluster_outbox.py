"""Cross-slot results on a real Redis Cluster of three masters: each event makes a task
in its own slot and one in a slot on another master, committed through the outbox
(resc/engine/outbox.py). Every test counts every task: exactly one per result of each
event, through a backlog, kill -9 of resc at random points, a replay of the same entry
by two instances, a kill between the outbox's steps, and a key of the wrong type."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hjson
import pytest
from redis.cluster import RedisCluster

from resc.connection.clients import cluster_client
from resc.core.keys import instance_taken, orphaned_outbox, outbox
from resc.engine import outbox as outboxes
from resc.engine.rules import Result
from resc.engine.store import Outcome, Store
from tests.cluster import ClusterTopology
from tests.conftest import (
    STARTED_LOG,
    drained,
    in_hand,
    make_config,
    resc_process,
    running,
    until_started,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.server

INPUT, TAKEN = "{plant}/events", "{plant}/events/taken"
FAILED = "{plant}/events/failed"
HOME_TODO, HOME_SET = "{plant}/todo", "{plant}/seen"
# On other masters than {plant} in the test cluster's three slot ranges.
OTHER_TODO, OTHER_SET = "{orders}/todo", "{orders}/seen"
THIRD_TODO = "{jobs}/todo"


def config(url: str, with_set: bool = False) -> dict[str, Any]:
    """Each event ev/<n> makes home/<n> in its slot, other/<n> and third/<n> in two
    others (with a set: each in a set of its slot)."""
    makes: list[dict[str, Any]] = [
        {"task": "home/${n}", "queue": HOME_TODO},
        {"task": "other/${n}", "queue": OTHER_TODO},
        {"task": "third/${n}", "queue": THIRD_TODO},
    ]
    if with_set:
        makes[0]["set"] = HOME_SET
        makes[1]["set"] = OTHER_SET
        makes[2]["set"] = "{jobs}/seen"
    return make_config(
        url, [{"input_queue": INPUT, "rules": [{"on": r"^ev/(?P<n>\d+)$", "make": makes}]}]
    )


@pytest.fixture
def client(cluster: ClusterTopology) -> Iterator[RedisCluster]:
    made = cluster_client(cluster.url(), socket_timeout=5)
    yield made
    made.close()


def preload(client: RedisCluster, count: int) -> None:
    for start in range(0, count, 1000):
        client.lpush(INPUT, *(f"ev/{i}" for i in range(start, min(start + 1000, count))))


def tasks_of(client: Any, queue: str) -> Counter[bytes]:
    return Counter(client.lrange(queue, 0, -1))


def assert_exactly_once(client: Any, count: int) -> None:
    for queue, word in ((HOME_TODO, "home"), (OTHER_TODO, "other"), (THIRD_TODO, "third")):
        tasks = tasks_of(client, queue)
        missing = count - len(tasks)
        assert missing == 0, f"{missing} tasks missing from {queue}"
        twice = [t for t, n in tasks.items() if n > 1]
        assert not twice, f"duplicated in {queue}: {twice[:5]}"
        assert set(tasks) == {f"{word}/{i}".encode() for i in range(count)}


def complete(client: Any, count: int) -> bool:
    return (
        drained(client, INPUT, TAKEN)
        and client.llen(HOME_TODO) >= count
        and client.llen(OTHER_TODO) >= count
        and client.llen(THIRD_TODO) >= count
    )


def outboxes_left(client: RedisCluster) -> int:
    """Entries in every outbox of the watcher, instances' and orphaned."""
    names = [k for k in client.keys(f"{TAKEN}/*") if k.endswith(b"/outbox")]
    return sum(client.hlen(name) for name in names) + client.hlen(orphaned_outbox(TAKEN))


def markers_left(cluster: ClusterTopology) -> int:
    total = 0
    for node in cluster.masters:
        with node.plain() as plain:
            total += sum(1 for _ in plain.scan_iter("resc/applied/*", count=1000))
    return total


def test_the_three_queues_are_on_three_masters(cluster: ClusterTopology):
    masters = {cluster.master_of(q).port for q in (HOME_TODO, OTHER_TODO, THIRD_TODO)}
    assert len(masters) == 3


@pytest.mark.parametrize("with_set", [False, True])
def test_a_cross_slot_backlog_gives_one_task_per_result(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path, with_set: bool
):
    preload(client, 3000)
    with running(config(cluster.url(), with_set), tmp_path):
        wait_until(lambda: complete(client, 3000), timeout_s=60)
    assert_exactly_once(client, 3000)
    if with_set:
        assert client.zcard(OTHER_SET) == 3000
    # The writer removed its entries and their markers.
    assert outboxes_left(client) == 0
    assert markers_left(cluster) == 0


def test_the_same_event_twice_with_a_set_gives_one_task_per_slot(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    with running(config(cluster.url(), with_set=True), tmp_path):
        client.lpush(INPUT, "ev/7", "ev/7", "ev/7")
        wait_until(lambda: drained(client, INPUT, TAKEN) and client.llen(OTHER_TODO) == 1)
        client.lpush(INPUT, "ev/8")
        wait_until(lambda: client.llen(OTHER_TODO) == 2)
    assert client.lrange(OTHER_TODO, 0, -1) == [b"other/8", b"other/7"]
    assert client.lrange(THIRD_TODO, 0, -1) == [b"third/8", b"third/7"]
    assert client.lrange(HOME_TODO, 0, -1) == [b"home/8", b"home/7"]


@pytest.mark.parametrize("listener_format", ["text", "json"])
def test_the_listener_hears_one_trigger_per_pushed_task_in_every_slot(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path, listener_format: str
):
    settings = config(cluster.url(), with_set=True)
    settings["listener_channel"] = "resc-events"
    settings["listener_format"] = listener_format
    # A cluster's PUBLISH reaches the subscribers of every node.
    node = next(n for n in cluster.masters if n is not cluster.master_of(OTHER_TODO))
    with node.plain() as plain, plain.pubsub() as listener:
        listener.subscribe("resc-events")
        assert listener.get_message(timeout=5)["type"] == "subscribe"
        with running(settings, tmp_path):
            client.lpush(INPUT, "ev/1", "ev/1", "ev/2")
            wait_until(lambda: complete(client, 2) and outboxes_left(client) == 0)
        messages = []
        while (message := listener.get_message(timeout=1)) is not None:
            messages.append(message["data"])
    if listener_format == "json":
        decoded = [json.loads(m) for m in messages]
        triggers = Counter((d["task"], d["queue"]) for d in decoded if d["kind"] == "trigger")
        assert all(d["watcher"] == INPUT for d in decoded)
        dones = [d["event"] for d in decoded if d["kind"] == "done"]
    else:
        texts = [m if isinstance(m, str) else m.decode() for m in messages]
        triggers = Counter((t.split(" -> ")[1], "") for t in texts if " TRIGGER " in t)
        dones = [t.split(" DONE ")[1] for t in texts if " DONE " in t]
    expected = {
        (f"{word}/{n}", queue if listener_format == "json" else "")
        for n in (1, 2)
        for word, queue in (("home", HOME_TODO), ("other", OTHER_TODO), ("third", THIRD_TODO))
    }
    # The second ev/1 found each of its tasks in its set: no trigger of its own.
    assert triggers == Counter(expected)
    assert sorted(dones) == ["ev/1", "ev/1", "ev/2"]


def test_two_instances_share_a_cross_slot_backlog_with_one_task_per_result(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    path = write_config(tmp_path, config(cluster.url(), with_set=True))
    first = resc_process("--instance", "one", str(path))
    second = resc_process("--instance", "two", str(path))
    try:
        wait_until(lambda: len(client.smembers(f"{TAKEN}/instances")) == 2, timeout_s=20)
        preload(client, 4000)
        wait_until(lambda: complete(client, 4000) and outboxes_left(client) == 0, timeout_s=60)
    finally:
        logs = [stop(first), stop(second)]
    assert_exactly_once(client, 4000)
    assert markers_left(cluster) == 0
    for log in logs:
        assert "Traceback" not in log


def test_a_wrong_typed_key_in_another_slot_fails_the_event_and_says_why(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    client.hset(OTHER_TODO, "not", "a list")
    with running(config(cluster.url()), tmp_path):
        client.lpush(INPUT, "ev/1")
        wait_until(lambda: client.llen(FAILED) == 1 and drained(client, INPUT, TAKEN))
    assert client.lrange(FAILED, 0, -1) == [b"ev/1"]
    records = json.loads(client.hget(f"{FAILED}/reasons", "ev/1"))
    assert [r["reason"] for r in records] == [
        "key {orders}/todo holds a hash: its task was not pushed"
    ]
    # The results of the other slots were pushed, each once.
    assert client.lrange(HOME_TODO, 0, -1) == [b"home/1"]
    assert client.lrange(THIRD_TODO, 0, -1) == [b"third/1"]
    assert outboxes_left(client) == 0


# --- a kill between the outbox's steps, at the Store ------------------------------------


class Killed(Exception):
    """Stands for resc killed at this point."""


def commit_one(store: Store, instance: str, events: list[bytes], with_set: bool) -> None:
    outcomes = []
    for event in events:
        n = event.split(b"/")[1]
        results = [
            Result(b"home/" + n, HOME_TODO.encode(), HOME_SET.encode() if with_set else None, "r"),
            Result(
                b"other/" + n, OTHER_TODO.encode(), OTHER_SET.encode() if with_set else None, "r"
            ),
            Result(b"third/" + n, THIRD_TODO.encode(), None, "r"),
        ]
        outcomes.append(Outcome(event, results))
    taken_list = instance_taken(TAKEN, instance)
    store.commit(taken_list, FAILED, outcomes, None, TAKEN, input_queue=INPUT)


def take(store: Store, instance: str, most: int) -> list[bytes]:
    return store.take(INPUT, instance_taken(TAKEN, instance), most)


@pytest.mark.parametrize("stop_after", ["commit", "one slot", "every slot"])
@pytest.mark.parametrize("with_set", [False, True])
def test_a_kill_between_the_steps_is_replayed_exactly_once(
    cluster: ClusterTopology,
    client: RedisCluster,
    monkeypatch: pytest.MonkeyPatch,
    stop_after: str,
    with_set: bool,
):
    """The writer stops after step 1 (its results for other slots only in the outbox),
    after one slot's step 2, or after every slot's step 2 (its entry not removed); then
    the dead instance's list is recovered and its entry replayed, twice, by two
    stores: one task per result."""
    preload(client, 20)
    store = Store(cluster.url())
    store.connect()
    events = take(store, "dead", 20)
    assert len(events) == 20

    real = Store._send
    applied = []

    def send(self: Store, args: tuple[Any, ...], action: str, convert: Any) -> Any:
        script = args[1] if args[0] == b"EVALSHA" else None
        if script == self._sha["apply"]:
            if stop_after == "commit" or (stop_after == "one slot" and applied):
                raise Killed
            applied.append(args)
        if script == self._sha["outbox_done"]:
            raise Killed
        return real(self, args, action, convert)

    monkeypatch.setattr(Store, "_send", send)
    with pytest.raises(Killed):
        commit_one(store, "dead", events, with_set)
    monkeypatch.undo()
    store.close()
    # Step 1 happened: the events left the taken list, their own slot's tasks are there.
    assert in_hand(client, instance_taken(TAKEN, "dead")) == []
    assert client.llen(HOME_TODO) == 20
    assert client.hlen(outbox(instance_taken(TAKEN, "dead"))) == 1

    # Another instance recovers the dead one: its entry becomes the watcher's orphan.
    recoverer = Store(cluster.url())
    recoverer.connect()
    recovered = recoverer.recover(
        INPUT,
        instance_taken(TAKEN, "dead"),
        FAILED,
        3,
        attempts_of=TAKEN,
        registry=f"{TAKEN}/instances",
        leaving="dead",
    )
    assert recovered is not None and recovered.entries == 1
    assert client.hlen(orphaned_outbox(TAKEN)) == 1
    second = Store(cluster.url())
    second.connect()
    try:
        # Two instances replay it, one after the other: the second finds nothing left.
        first = recoverer.replay_outbox(orphaned_outbox(TAKEN), FAILED, None, TAKEN)
        again = second.replay_outbox(orphaned_outbox(TAKEN), FAILED, None, TAKEN)
    finally:
        recoverer.close()
        second.close()
    assert first.entries == 1 and again.entries == 0
    already = {"commit": 0, "one slot": 20, "every slot": 40}[stop_after]
    assert first.pushed == 40 - already
    assert client.hlen(orphaned_outbox(TAKEN)) == 0
    for queue, word in ((HOME_TODO, "home"), (OTHER_TODO, "other"), (THIRD_TODO, "third")):
        assert tasks_of(client, queue) == Counter(f"{word}/{i}".encode() for i in range(20))


def test_two_instances_replaying_the_same_entry_at_once_push_each_task_once(
    cluster: ClusterTopology, client: RedisCluster, monkeypatch: pytest.MonkeyPatch
):
    preload(client, 200)
    store = Store(cluster.url())
    store.connect()
    events = take(store, "dead", 200)
    real = Store._send

    def send(self: Store, args: tuple[Any, ...], action: str, convert: Any) -> Any:
        if args[0] == b"EVALSHA" and args[1] == self._sha["apply"]:
            raise Killed
        return real(self, args, action, convert)

    monkeypatch.setattr(Store, "_send", send)
    with pytest.raises(Killed):
        commit_one(store, "dead", events, with_set=False)
    monkeypatch.undo()
    store.close()
    client.hset(
        orphaned_outbox(TAKEN), mapping=client.hgetall(outbox(instance_taken(TAKEN, "dead")))
    )
    client.delete(outbox(instance_taken(TAKEN, "dead")))
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def replay() -> None:
        replayer = Store(cluster.url())
        try:
            replayer.connect()
            barrier.wait()
            replayer.replay_outbox(orphaned_outbox(TAKEN), FAILED, None, TAKEN)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            replayer.close()

    threads = [threading.Thread(target=replay) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    for queue, word in ((OTHER_TODO, "other"), (THIRD_TODO, "third")):
        assert tasks_of(client, queue) == Counter(f"{word}/{i}".encode() for i in range(200))


def test_an_unreadable_outbox_entry_is_kept_and_named(
    cluster: ClusterTopology, client: RedisCluster
):
    client.hset(orphaned_outbox(TAKEN), "abc-1", b"\x00garbage")
    store = Store(cluster.url())
    store.connect()
    try:
        with pytest.raises(Exception, match=r"field abc-1 is not an outbox entry"):
            store.replay_outbox(orphaned_outbox(TAKEN), FAILED, None, TAKEN)
    finally:
        store.close()
    assert client.hget(orphaned_outbox(TAKEN), "abc-1") == b"\x00garbage"


def test_encoded_entries_keep_binary_tasks_and_names():
    results = [
        Result(b"\x00\xff:,", b"{q}/todo", None, "rule", None),
        Result(b"", b"{q}/t2", b"{q}/s,:", "r\u00e9", "make one"),
    ]
    value = outboxes.encode(b"ev,1:\x00", results) + outboxes.encode(b"e2", results[:1])
    items = outboxes.decode(value)
    assert [(i.number, i.position, i.event, i.result) for i in items] == [
        (0, 0, b"ev,1:\x00", results[0]),
        (0, 1, b"ev,1:\x00", results[1]),
        (1, 0, b"e2", results[0]),
    ]


# --- kill -9 of resc ----------------------------------------------------------------

BACKLOG = 6000


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, log = process.communicate(timeout=30)
    assert process.returncode == 0, log
    return log


@pytest.mark.parametrize("with_set", [False, True])
def test_sigkill_of_resc_at_random_points_of_a_cross_slot_backlog_gives_one_task_per_result(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path, with_set: bool
):
    preload(client, BACKLOG)
    path = write_config(tmp_path, config(cluster.url(), with_set))
    chance = random.Random(with_set)
    entries_left = 0
    for _ in range(4):
        process = resc_process(str(path))
        try:
            # At most the whole backlog: on a fast machine the kills may come after its end.
            at = min(client.llen(OTHER_TODO) + chance.randrange(200, 1200), BACKLOG)
            wait_until(lambda at=at: client.llen(OTHER_TODO) >= at, timeout_s=60)
            threading.Event().wait(chance.random() / 50)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        entries_left += outboxes_left(client)
    print(f"outbox entries left by the kills: {entries_left}")
    process = resc_process(str(path), env=STARTED_LOG)
    try:
        # The kills may have left nothing to do: to be stopped, this one must run first.
        until_started(process)
        wait_until(lambda: complete(client, BACKLOG) and outboxes_left(client) == 0, timeout_s=90)
    finally:
        stop(process)
    assert_exactly_once(client, BACKLOG)


def test_a_target_slots_master_killed_under_a_cross_slot_backlog_loses_no_task(
    cluster_with_replicas: ClusterTopology, tmp_path: Path
):
    """A master of a target slot killed under a cross-slot backlog, its replica promoted:
    no task lost, none pushed twice (the entries still in the outbox are replayed on the
    new master, whose markers tell what was applied)."""
    topology = cluster_with_replicas
    client = cluster_client(topology.url(), socket_timeout=5)
    try:
        preload(client, BACKLOG)
        old = topology.master_of(OTHER_TODO)
        path = write_config(tmp_path, config(topology.url()))
        process = resc_process(str(path))
        try:
            wait_until(lambda: client.llen(OTHER_TODO) >= 1000, timeout_s=60)
            topology.kill_master(old)
            client.close()
            client = cluster_client(topology.url(), socket_timeout=5)
            wait_until(lambda: complete(client, BACKLOG), timeout_s=120)
        finally:
            log = stop(process)
        assert "Redis unavailable, retrying" in log
        print(f"promoted in {topology.promotion_s:.1f} s")
        assert_exactly_once(client, BACKLOG)
    finally:
        client.close()


def test_wait_replicas_without_replicas_warns_and_still_pushes_each_task_once(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path
):
    settings = config(cluster.url())
    settings["redis"]["wait_replicas"] = 1
    path = write_config(tmp_path, settings)
    process = resc_process(str(path))
    try:
        client.lpush(INPUT, "ev/0", "ev/1")
        wait_until(lambda: complete(client, 2), timeout_s=20)
    finally:
        log = stop(process)
    assert "fewer replicas than redis.wait_replicas acknowledged" in log
    assert_exactly_once(client, 2)
    assert outboxes_left(client) == 0


EXAMPLE = Path(__file__).parent.parent / "configs" / "example.hjson"


def tagged_example(url: str, cross: bool) -> dict[str, Any]:
    """configs/example.hjson with hash-tagged names: its input queue `{global}/events`;
    its queue and set in the input queue's slot, or (cross) under the tag of their
    process (`{trt/plant3}/todo-queue`), which spreads them over the masters."""
    example = hjson.loads(EXAMPLE.read_text())
    watcher = example["watchers"][0]
    watcher["input_queue"], watcher["taken_queue"] = "{global}/events", "{global}/taken"
    make = watcher["rules"][0]["make"]
    tag = "{trt/${process_id}}" if cross else "{global}/trt/${process_id}"
    make["queue"], make["set"] = f"{tag}/todo-queue", f"{tag}/todo-set"
    example["redis"] = {"url": url}
    example.pop("listener_channel", None)
    return dict(example)


@pytest.mark.parametrize("cross", [False, True])
def test_the_tagged_example_survives_kill_9_several_times_with_one_task_per_event(
    cluster: ClusterTopology, client: RedisCluster, tmp_path: Path, cross: bool
):
    plants, count = 6, 6000
    queue = "{trt/plant%d}/todo-queue" if cross else "{global}/trt/plant%d/todo-queue"
    if cross:
        masters = {cluster.master_of(queue % p).port for p in range(plants)}
        assert len(masters) == 3  # the example's plants land on every master
    for start in range(0, count, 1000):
        client.lpush(
            "{global}/events", *(f"acq/plant{i % plants}/{i}" for i in range(start, start + 1000))
        )
    path = write_config(tmp_path, tagged_example(cluster.url(), cross))
    chance = random.Random(cross)

    def queued() -> int:
        return sum(client.llen(queue % p) for p in range(plants))

    for _ in range(3):
        process = resc_process(str(path))
        try:
            at = min(queued() + chance.randrange(300, 1500), count)  # as above
            wait_until(lambda at=at: queued() >= at, timeout_s=60)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    process = resc_process(str(path), env=STARTED_LOG)
    try:
        until_started(process)  # as above: the kills may have left nothing to do
        wait_until(
            lambda: queued() >= count and drained(client, "{global}/events", "{global}/taken"),
            timeout_s=90,
        )
    finally:
        stop(process)
    for p in range(plants):
        tasks = tasks_of(client, queue % p)
        wanted = {f"trt/plant{p}/{i}".encode() for i in range(p, count, plants)}
        assert set(tasks) == wanted and max(tasks.values()) == 1, queue % p
