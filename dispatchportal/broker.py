"""The project's Celery transports: kombu's, each with one fix.

Filesystem (the embedded broker): kombu 5.7's `Channel._put` creates the message file and
then writes it, while `_get` reads files without the lock: a worker polling in between reads
an empty file and its consumer dies ("Unrecoverable error: JSONDecodeError"). Writing to a
hidden temporary name and renaming it into place makes each message appear whole.

Redis: a worker must ride out a Redis restart. With Celery 5.7.0, when the broker connection
is lost the consumer first calls `connection.collect()`, which drops the transport's
reference to its connection (`transport.client = None`), and then `connection.close()`
(new in 5.7.0; 5.6 only collected). If the worker was idle in BRPOP, the first close of the
task channel raised on reading the dead socket before restoring its unacknowledged messages
(held ETA tasks), so the second close restores them now, builds a Redis pool from
`self.connection.client.hostname`, and the worker dies: "Unrecoverable error:
AttributeError('NoneType' object has no attribute 'hostname')". Here that is the connection
error it really is, which Celery ignores before reconnecting. The messages stay in Redis's
unacked index and come back after the visibility timeout, as after any worker crash."""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

import redis
from kombu.transport import filesystem
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    # kombu's filesystem Channel names the message `payload` where its base says `message`.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        # A leading dot: `_get` only takes names ending in ".<queue>.msg" after the first dot.
        temporary = os.path.join(self.data_folder_out, f".{name}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(str_to_bytes(dumps(payload)))
        os.replace(temporary, os.path.join(self.data_folder_out, name))


class Transport(filesystem.Transport):
    Channel = Channel


class RedisChannel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:  # collected: see the module's docstring
            raise redis.exceptions.ConnectionError("broker connection already closed")
        return super()._connparams(asynchronous=asynchronous)


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel
