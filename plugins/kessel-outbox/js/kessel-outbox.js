// Maps Kessel outbox events to Kessel Inventory requests.
//
// The JavaScript twin of plugins/kessel-outbox/rust (read its module comment
// for the whole story); both pass tests/vectors/kessel-outbox.
//
// - outbox events (Postgres `outbox` mode, Debezium's EventRouter): the
//   payload in `after`, `operation` and `version` as headers;
// - outbox rows (row CDC, logical messages with the whole row): the row in
//   `after`; the output is keyed by the row's `aggregateid`.
//
// Deleted rows (the guide's pruning) map to nothing; updates are logged and
// skipped. Setting `version` (default `v1beta2`): the outbox version
// accepted.

import { log } from 'ferry:plugin/host@0.1.0';

// Per component instance: the host calls `init` once per instance.
let acceptedVersion = 'v1beta2';

/** An event that can never be mapped: a permanent error. */
class Refused extends Error {}

export const mapper = {
  init(settings) {
    for (const [name, value] of settings) {
      if (name !== 'version') {
        // Throwing refuses the configuration (`result<_, string>`).
        throw `unknown setting \`${name}\`: this plugin only knows \`version\``;
      }
      acceptedVersion = value;
    }
  },

  transform(events) {
    return events.map((event) => {
      try {
        return { tag: 'ok', val: mapEvent(event) };
      } catch (error) {
        if (error instanceof Refused) {
          return { tag: 'err', val: { tag: 'permanent', val: error.message } };
        }
        throw error; // a bug: the host isolates the event as crashed
      }
    });
  },
};

/** The outputs of one event; throws `Refused` when it cannot be mapped. */
function mapEvent(event) {
  switch (event.op) {
    case 'delete':
      // Pruning: the row was inserted and deleted; the insert carried the
      // event.
      return [];
    case 'update':
      log(
        'warn',
        `outbox row at ${event.position} was updated; outbox rows are append-only, so the update is not sent`,
      );
      return [];
    default: {
      const operation = header(event, 'operation') ?? header(event, 'type');
      return operation !== undefined
        ? mapOutboxEvent(operation, event)
        : mapOutboxRow(event);
    }
  }
}

function mapOutboxEvent(operation, event) {
  const make = method(operation);
  checkVersion(header(event, 'version'));
  if (event.after === undefined) {
    throw new Refused('outbox event has no payload');
  }
  checkRequestObject(event.after);
  // The payload passes on as written; `key: undefined` keeps the event's.
  return [{ key: undefined, payload: make(event.after) }];
}

function mapOutboxRow(event) {
  if (event.after === undefined) {
    throw new Refused('event is not an outbox event: no `operation` header and no row');
  }
  let row;
  try {
    row = JSON.parse(event.after);
  } catch (error) {
    throw new Refused(`outbox row is not JSON: ${error.message}`);
  }
  // A null column counts as a missing one, as in the Rust plugin.
  const field = (name) => row?.[name] ?? undefined;
  const operation = field('operation') ?? field('type');
  if (typeof operation !== 'string') {
    throw new Refused('event is not an outbox event: no `operation` header or column');
  }
  const make = method(operation);
  const version = field('version');
  checkVersion(typeof version === 'string' ? version : undefined);
  const aggregateId = field('aggregateid');
  let key;
  if (typeof aggregateId === 'string') {
    key = aggregateId;
  } else if (typeof aggregateId === 'number') {
    key = JSON.stringify(aggregateId);
  } else {
    throw new Refused('outbox row has no `aggregateid`');
  }
  const payload = field('payload');
  let request;
  if (typeof payload === 'string') {
    // A `text` payload column holds the request as a JSON string.
    checkRequestObject(payload);
    request = payload;
  } else if (payload !== undefined && payload !== null && typeof payload === 'object' && !Array.isArray(payload)) {
    request = JSON.stringify(payload);
  } else if (payload === undefined) {
    throw new Refused('outbox row has no payload');
  } else {
    throw new Refused('outbox payload is not a JSON object (the request body)');
  }
  return [{ key, payload: make(request) }];
}

function checkVersion(version) {
  if (version !== undefined && version !== acceptedVersion) {
    throw new Refused(
      `unsupported outbox version ${JSON.stringify(version)}: this pipeline maps ${JSON.stringify(acceptedVersion)}`,
    );
  }
}

/** The first header called `name`, or undefined. */
function header(event, name) {
  return event.headers.find((h) => h.name === name)?.value;
}

/** The output constructor for an outbox `operation`. */
function method(operation) {
  switch (operation) {
    case 'ReportResource':
      return (request) => ({ tag: 'kessel-report', val: { request } });
    case 'DeleteResource':
      return (request) => ({ tag: 'kessel-delete', val: { request } });
    default:
      throw new Refused(
        `unknown outbox operation ${JSON.stringify(operation)}: expected ReportResource or DeleteResource`,
      );
  }
}

/** A request body must be a JSON object; the sink checks its fields. */
function checkRequestObject(text) {
  if (!text.trimStart().startsWith('{')) {
    throw new Refused('outbox payload is not a JSON object (the request body)');
  }
  try {
    JSON.parse(text);
  } catch (error) {
    throw new Refused(`outbox payload is not valid JSON: ${error.message}`);
  }
}
