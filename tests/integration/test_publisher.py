"""The bulk publisher writes exactly the messages kombu would, much faster, in order."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis

from storage.publisher import (
    QUEUE,
    SPREAD,
    TASK_PROCESS_ITEMS,
    CeleryPublisher,
    message_groups,
    send_items,
)

pytestmark = pytest.mark.integration
PER_MESSAGE = {
    ("headers", "id"),
    ("headers", "root_id"),
    ("headers", "origin"),
    ("properties", "correlation_id"),
    ("properties", "delivery_tag"),
    ("properties", "reply_to"),
}


def comparable(message: dict[str, Any]) -> dict[str, Any]:
    """The message minus what must differ per message, with the body decoded."""
    copy = json.loads(json.dumps(message))
    for section, key in PER_MESSAGE:
        copy[section].pop(key)
    copy["body"] = json.loads(base64.b64decode(copy["body"]))
    return copy


@pytest.fixture
def broker(redis_url: str):  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(redis_url)
    client.delete(QUEUE)
    yield client
    client.delete(QUEUE)
    client.close()


def test_bulk_messages_match_kombus_field_for_field(redis_url: str, broker: redis.Redis) -> None:
    """Apart from ids, tags and origin, a bulk message is exactly what kombu publishes."""
    publisher = CeleryPublisher(redis_url)
    send_items(publisher.app, [8])
    publisher.publish([8, 9])
    kombu_msg, first, second = (json.loads(m) for m in broker.lrange(QUEUE, 0, -1)[::-1])
    assert comparable(first) == comparable(kombu_msg)
    assert comparable(second)["body"][0] == [9]
    ids = {m["headers"]["id"] for m in (kombu_msg, first, second)}
    tags = {m["properties"]["delivery_tag"] for m in (kombu_msg, first, second)}
    assert len(ids) == 3 and len(tags) == 3  # unacked tracking keys on the delivery tag


def test_a_group_message_matches_kombus_field_for_field(
    redis_url: str, broker: redis.Redis
) -> None:
    """A message carrying several ids is exactly what kombu publishes for process_items."""
    publisher = CeleryPublisher(redis_url)
    publisher.app.send_task(TASK_PROCESS_ITEMS, args=[[1, 2, 3]], queue=QUEUE)
    publisher.publish(list(range(1, 3 * (SPREAD + 1) + 1)))  # starts with a group of three
    messages = [json.loads(m) for m in broker.lrange(QUEUE, 0, -1)[::-1]]
    assert comparable(messages[1]) == comparable(messages[0])


def test_bulk_publish_keeps_fifo_order(redis_url: str, broker: redis.Redis) -> None:
    """Items published together are consumed (BRPOP from the tail) in the order given."""
    publisher = CeleryPublisher(redis_url)
    ids = list(range(1, 5001))
    publisher.publish(ids)
    assert broker.llen(QUEUE) == len(message_groups(ids)) < len(ids)
    bodies = [
        json.loads(base64.b64decode(json.loads(m)["body"])) for m in broker.lrange(QUEUE, 0, -1)
    ]
    consumed = [args[0] if isinstance(args[0], list) else [args[0]] for args, *_ in bodies[::-1]]
    assert [item_id for group in consumed for item_id in group] == ids
