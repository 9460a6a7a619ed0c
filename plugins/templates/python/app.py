"""{{name}}: a ferry plugin in Python.

ferry calls `init` once per instance with the pipeline's plugin settings,
then `transform` with batches of change events in source order. Return
exactly one result per event: Ok(outputs) (an empty list skips it) or
Err(error). The host does the rest: ordering per key, retries, delivery.

This starter sends each change on as a Kafka-style record: the event's key
as the record key, its `after` image as the value, and a tombstone for a
delete. Replace `map_event` with your own mapping. The types come from
wit/plugin.wit (its comments are the reference), as Python classes in the
`wit_world` package that componentize-py generates at build time.
"""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.types import (
    ChangeEvent,
    Error_Permanent,
    Header,
    Operation,
    Output,
    Payload_Record,
    Record,
)

# The `op` header of each record: the WIT names of the operations.
OP_NAMES = {
    Operation.CREATE: "create",
    Operation.UPDATE: "update",
    Operation.DELETE: "delete",
    Operation.SNAPSHOT_READ: "snapshot-read",
    Operation.MESSAGE: "message",
}


class Mapper(exports.Mapper):
    def init(self, settings: list[tuple[str, str]]) -> None:
        # Settings come from `[pipelines.<name>.plugin.settings]`; `raise
        # Err("why")` refuses them. This starter needs none. Keep what you
        # read in a module global (`global TOPIC`), not on `self`:
        # componentize-py gives `init` and `transform` separate Mapper
        # objects, so `transform` would not see it.
        pass

    def transform(self, events: list[ChangeEvent]):
        # An exception that escapes fails the call (ferry then finds the
        # event that causes it); return Err for an event you refuse.
        return [map_event(event) for event in events]


def map_event(event: ChangeEvent):
    """Maps one event. A mapping must be a pure function of the event (and
    the settings): the same event may be given again after a restart."""
    if event.op == Operation.DELETE:
        value = None  # a tombstone
    elif event.after is not None:
        value = event.after.encode()  # `list<u8>` is bytes
    else:
        # Permanent: this event can never be mapped; the pipeline's error
        # policy decides (halt, dead-letter or park). Error_Retryable is for
        # a passing condition the host should retry.
        return Err(Error_Permanent(f"event {event.position} has no after"))
    record = Record(
        topic=None,  # the pipeline's topic (or routing template) decides
        key=event.key.encode() if event.key is not None else None,
        value=value,
        headers=[Header("op", OP_NAMES[event.op])],
    )
    # key=None: keep the event's key as the unit of order.
    return Ok([Output(key=None, payload=Payload_Record(record))])
