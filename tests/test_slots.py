"""Hash slots (resc.core.slots), and every key resc derives from a watcher's or a todo
queue's name (a worker's keys among them) kept in that name's slot when the name has a
hash tag."""

from __future__ import annotations

import inspect

import pytest
from redis.crc import key_slot

from resc.core import keys
from resc.core.slots import hash_tag, same_slot, slot_of, tagged
from resc.worker.settings import worker_settings
from resc.worker.store import cluster_refusal


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        ("{plant}/events", b"plant"),
        ("a{b}c{d}", b"b"),
        ("x}{y}", b"y"),
        ("{}x{y}", None),  # an empty first tag: the whole name is hashed
        ("a{b", None),
        ("plain", None),
        ("{{a}}", b"{a"),
    ],
)
def test_the_hash_tag_is_the_clusters(key: str, tag: bytes | None):
    assert hash_tag(key) == tag
    assert slot_of(key) == key_slot(tag or key.encode()) % 16384


def test_slot_of_known_names():
    # The values Redis's CLUSTER KEYSLOT answers.
    assert slot_of("foo") == 12182
    assert slot_of("{user1000}.following") == slot_of("user1000") == 3443
    assert slot_of(b"") == 0


def test_tagged_tells_what_to_write():
    assert tagged("orders/events") == "{orders}/events"
    assert tagged("events") == "{events}"
    assert tagged("{orders}/events") == "{orders}/events"
    assert tagged("/a/b") == "{/a/b}"
    assert tagged("a{/b") == "{a/b}"
    for name in ("orders/events", "events", "/a/b", "a{/b", "x}y/z"):
        assert hash_tag(tagged(name)) is not None


# One example call of each function of resc.core.keys, with a tagged base name: a new
# key function must be added here (the test below fails until it is).
BASE = "{plant}/events"
DERIVED = {
    "default_taken_queue": (BASE,),
    "default_failed_queue": (BASE,),
    "failed_reasons": (BASE + "/failed",),
    "attempts": (BASE + "/taken",),
    "taken_ahead": (BASE + "/taken/i1",),
    "taken_owner": (BASE + "/taken",),
    "instance_taken": (BASE + "/taken", "host-1.example:42"),
    "instance_heartbeat": (BASE + "/taken", "host-1.example:42"),
    "instances": (BASE + "/taken",),
    "outbox": (BASE + "/taken/i1",),
    "orphaned_outbox": (BASE + "/taken",),
    "worker_taken_list": ("{plant}/todo", "w-1"),
    "worker_heartbeat": ("{plant}/todo", "w-1"),
    "queue_workers": ("{plant}/todo",),
    "delayed_tasks": ("{plant}/todo",),
    "delayed_counter": ("{plant}/todo",),
    "delayed_queues": (BASE,),
}


def test_every_derived_key_keeps_its_base_names_slot():
    functions = {
        name
        for name, value in inspect.getmembers(keys, inspect.isfunction)
        if value.__module__ == keys.__name__ and not name.startswith("_")
    }
    assert functions == set(DERIVED)
    for name, args in DERIVED.items():
        derived = getattr(keys, name)(*args)
        assert slot_of(derived) == slot_of("{plant}"), (name, derived)
    # The watcher's keys that the engine and its scripts build in place.
    taken_list = keys.instance_taken(keys.default_taken_queue(BASE), "i1")
    for inline in (f"{taken_list}/instances", f"{taken_list}/heartbeat", BASE):
        assert slot_of(inline) == slot_of("{plant}")


def test_a_name_without_a_tag_does_not_keep_its_slot():
    assert not same_slot("orders/events", keys.default_taken_queue("orders/events"))
    assert same_slot("{orders}/events", keys.default_taken_queue("{orders}/events"), "{orders}")


@pytest.mark.parametrize("worker_id", ["w-1", "host{x}-42", "{}"])
def test_every_key_of_a_worker_keeps_its_tagged_queues_slot(worker_id: str):
    settings = worker_settings(
        connections=1,
        queue="{plant}/todo",
        set="{plant}/todo-set",
        done_queue="global/events",
        zrem="before",
        concurrency=1,
        retries=0,
        retry_delay_s=0,
        failed_queue=None,
        worker_id=worker_id,
        heartbeat_ttl_s=30,
        taken_queue=None,
        timeout_s=None,
    )
    own = settings.keys.own_keys()
    assert {settings.keys.taken, settings.keys.heartbeat, settings.keys.failed_reasons} <= set(own)
    assert {slot_of(key) for key in own} == {slot_of("{plant}")}
    assert cluster_refusal(settings.keys) is None
    # The done queue is not among them: it is notified apart when it is in another slot.
    assert settings.keys.notice_apart()


def test_a_worker_on_an_untagged_queue_is_told_what_to_write():
    settings = worker_settings(
        connections=1,
        queue="plant/todo",
        set=None,
        done_queue="plant/events",
        zrem="before",
        concurrency=1,
        retries=0,
        retry_delay_s=0,
        failed_queue=None,
        worker_id="w-1",
        heartbeat_ttl_s=30,
        taken_queue=None,
        timeout_s=None,
    )
    refusal = cluster_refusal(settings.keys)
    assert refusal is not None
    assert "plant/todo/taken/w-1" in refusal
    assert "'{plant}/todo'" in refusal


def test_an_outbox_marker_lives_in_its_queues_slot_whatever_the_queues_name():
    from resc.engine.outbox import marker

    for queue in (b"{orders}/todo", b"orders/todo", b"a{b", b"a}b", b"{}x", b"x{}y}", b"\xff"):
        key = marker(queue, "abc-1")
        assert slot_of(key) == slot_of(queue), queue
        assert key.startswith(b"resc/applied/{") and key.endswith(b"}/abc-1")
    assert marker(b"{orders}/todo", "abc-1") == b"resc/applied/{orders}/abc-1"
