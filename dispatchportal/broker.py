"""The embedded Celery broker: kombu's filesystem transport with whole-message writes.

kombu 5.7's filesystem `Channel._put` creates the message file and then writes it, while
`_get` reads files without the lock: a worker polling in between reads an empty file and its
consumer dies ("Unrecoverable error: JSONDecodeError"). Writing to a hidden temporary name and
renaming it into place makes each message appear whole."""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        # A leading dot: `_get` only takes names ending in ".<queue>.msg" after the first dot.
        temporary = os.path.join(self.data_folder_out, f".{name}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(str_to_bytes(dumps(payload)))
        os.replace(temporary, os.path.join(self.data_folder_out, name))


class Transport(filesystem.Transport):
    Channel = Channel
