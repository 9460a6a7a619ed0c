"""Maps Kessel outbox events to Kessel Inventory requests.

The Python twin of plugins/kessel-outbox/rust (read its module comment for
the whole story); both pass tests/vectors/kessel-outbox.

- outbox events (Postgres `outbox` mode, Debezium's EventRouter): the
  payload in `after`, `operation` and `version` as headers;
- outbox rows (row CDC, logical messages with the whole row): the row in
  `after`; the output is keyed by the row's `aggregateid`.

Deleted rows (the guide's pruning) map to nothing; updates are logged and
skipped. Setting `version` (default `v1beta2`): the outbox version accepted.
"""

import json

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    ChangeEvent,
    Error_Permanent,
    KesselDelete,
    KesselReport,
    Level,
    Operation,
    Output,
    Payload_KesselDelete,
    Payload_KesselReport,
)

DEFAULT_VERSION = "v1beta2"


class Refused(Exception):
    """An event that can never be mapped: a permanent error."""


class KesselOutbox:
    """The mapping, configured by `init`."""

    def __init__(self, version: str = DEFAULT_VERSION):
        self.version = version

    def map(self, event: ChangeEvent) -> list[Output]:
        if event.op == Operation.DELETE:
            # Pruning: the row was inserted and deleted; the insert carried
            # the event.
            return []
        if event.op == Operation.UPDATE:
            host.log(
                Level.WARN,
                f"outbox row at {event.position} was updated; outbox rows are "
                "append-only, so the update is not sent",
            )
            return []
        operation = header(event, "operation", "type")
        if operation is not None:
            return self.map_outbox_event(operation, event)
        return self.map_outbox_row(event)

    def map_outbox_event(self, operation: str, event: ChangeEvent) -> list[Output]:
        """An outbox event: headers name the operation, `after` is the payload."""
        make_payload = method(operation)
        self.check_version(header(event, "version"))
        if event.after is None:
            raise Refused("outbox event has no payload")
        check_request_object(event.after)
        # The payload passes on as written; the event's key is kept.
        return [Output(key=None, payload=make_payload(event.after))]

    def map_outbox_row(self, event: ChangeEvent) -> list[Output]:
        """A whole outbox row in `after`."""
        if event.after is None:
            raise Refused("event is not an outbox event: no `operation` header and no row")
        try:
            row = parse_json(event.after)
        except ValueError as error:
            raise Refused(f"outbox row is not JSON: {error}")
        if not isinstance(row, dict):
            row = {}  # no columns, so no `operation`: refused just below
        operation = field(row, "operation", "type")
        if not isinstance(operation, str):
            raise Refused("event is not an outbox event: no `operation` header or column")
        make_payload = method(operation)
        version = field(row, "version")
        self.check_version(version if isinstance(version, str) else None)

        aggregate_id = field(row, "aggregateid")
        if isinstance(aggregate_id, str):
            key = aggregate_id
        elif isinstance(aggregate_id, (int, float)) and not isinstance(aggregate_id, bool):
            key = json.dumps(aggregate_id)  # a number column: its JSON text
        else:
            raise Refused("outbox row has no `aggregateid`")

        payload = field(row, "payload")
        if isinstance(payload, str):
            # A `text` payload column holds the request as a JSON string.
            check_request_object(payload)
            request = payload
        elif isinstance(payload, dict):
            request = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        elif payload is None:
            raise Refused("outbox row has no payload")
        else:
            raise Refused("outbox payload is not a JSON object (the request body)")

        # json.loads turns an escaped lone surrogate ("\ud800") into a str
        # that has no UTF-8 form: handing it to the host would trap the
        # instance (serde_json refuses such text when parsing).
        if not is_utf8(key) or not is_utf8(request):
            raise Refused("outbox row is not JSON: it holds a lone surrogate escape")
        # Keyed by the resource, so per-resource order holds.
        return [Output(key=key, payload=make_payload(request))]

    def check_version(self, version: str | None) -> None:
        if version is not None and version != self.version:
            raise Refused(
                f"unsupported outbox version {quoted(version)}: "
                f"this pipeline maps {quoted(self.version)}"
            )


# The mapping of this component instance. It lives at module level, not on
# the Mapper: componentize-py makes a separate Mapper object for each
# exported function, so an attribute `init` sets on `self` is not there in
# `transform`. Module globals are per instance (each has its own memory).
outbox = KesselOutbox()


class Mapper(exports.Mapper):
    def init(self, settings: list[tuple[str, str]]) -> None:
        global outbox
        for name, _ in settings:
            if name != "version":
                # Raising Err refuses the configuration (`result<_, string>`).
                raise Err(f"unknown setting `{name}`: this plugin only knows `version`")
        outbox = KesselOutbox(**dict(settings))

    def transform(self, events: list[ChangeEvent]):
        results = []
        for event in events:
            try:
                results.append(Ok(outbox.map(event)))
            except Refused as refused:
                results.append(Err(Error_Permanent(str(refused))))
            # Any other exception escapes and traps the instance: ferry
            # discards it and isolates the event, as for a Rust panic.
        return results


def header(event: ChangeEvent, *names: str) -> str | None:
    """The first header called by the first of `names` the event has."""
    for name in names:
        for h in event.headers:
            if h.name == name:
                return h.value
    return None


def field(row: dict, *names: str):
    """The value of the first of `names` that the row has and is not null."""
    return next((row[name] for name in names if row.get(name) is not None), None)


def method(operation: str):
    """The payload constructor for an outbox `operation`."""
    if operation == "ReportResource":
        return lambda request: Payload_KesselReport(KesselReport(request))
    if operation == "DeleteResource":
        return lambda request: Payload_KesselDelete(KesselDelete(request))
    raise Refused(
        f"unknown outbox operation {quoted(operation)}: "
        "expected ReportResource or DeleteResource"
    )


def check_request_object(text: str) -> None:
    """A request body must be a JSON object; the sink checks its fields."""
    if not text.lstrip().startswith("{"):
        raise Refused("outbox payload is not a JSON object (the request body)")
    try:
        parse_json(text)
    except ValueError as error:
        raise Refused(f"outbox payload is not valid JSON: {error}")


def parse_json(text: str):
    """json.loads, strict: NaN and Infinity are not JSON (serde_json agrees)."""
    return json.loads(text, parse_constant=refuse_constant)


def refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def quoted(text: str) -> str:
    """`text` in double quotes, as the Rust plugin's messages show it. ASCII
    escapes keep the message sendable even if the text holds a surrogate."""
    return json.dumps(text)


def is_utf8(text: str) -> bool:
    try:
        text.encode()
        return True
    except UnicodeEncodeError:
        return False
