// {{name}}: a ferry plugin in JavaScript.
//
// ferry calls `mapper.init` once per instance with the pipeline's plugin
// settings, then `mapper.transform` with batches of change events in source
// order. Return exactly one result per event: `{ tag: 'ok', val: outputs }`
// (an empty list skips it) or `{ tag: 'err', val: error }`. The host does
// the rest: ordering per key, retries, delivery.
//
// This starter sends each change on as a Kafka-style record: the event's
// key as the record key, its `after` image as the value, and a tombstone
// for a delete. Replace `mapEvent` with your own mapping. The types are
// those of wit/plugin.wit (its comments are the reference), as
// componentize-js maps them: records are objects with camelCase fields,
// `option` is the value or `undefined`, `list<u8>` a Uint8Array (a string
// there would be sent as empty bytes), variants `{ tag, val }`, enums their
// case names as strings.

const encoder = new TextEncoder();

export const mapper = {
  init(settings) {
    // Settings come from `[pipelines.<name>.plugin.settings]` as
    // [name, value] pairs; `throw 'why'` refuses a configuration. This
    // starter needs none.
  },

  transform(events) {
    return events.map(mapEvent);
  },
};

/**
 * Maps one event. A mapping must be a pure function of the event (and the
 * settings): the same event may be given again after a restart.
 */
function mapEvent(event) {
  let value;
  if (event.op === 'delete') {
    value = undefined; // a tombstone
  } else if (event.after !== undefined) {
    value = encoder.encode(event.after);
  } else {
    // Permanent: this event can never be mapped; the pipeline's error
    // policy decides (halt, dead-letter or park). `retryable` is for a
    // passing condition the host should retry.
    return { tag: 'err', val: { tag: 'permanent', val: `event ${event.position} has no after` } };
  }
  const record = {
    topic: undefined, // the pipeline's topic (or routing template) decides
    key: event.key === undefined ? undefined : encoder.encode(event.key),
    value,
    headers: [{ name: 'op', value: event.op }],
  };
  // `key: undefined`: keep the event's key as the unit of order.
  return { tag: 'ok', val: [{ key: undefined, payload: { tag: 'record', val: record } }] };
}
