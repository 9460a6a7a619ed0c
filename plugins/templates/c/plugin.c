// {{name}}: a ferry plugin in C.
//
// ferry calls `init` once per instance with the pipeline's plugin settings,
// then `transform` with batches of change events in source order. Return
// exactly one result per event: its outputs (an empty list skips it) or an
// error. The host does the rest: ordering per key, retries, delivery.
//
// This starter sends each change on as a Kafka-style record: the event's
// key as the record key, its `after` image as the value, and a tombstone for
// a delete. Replace `map_event` with your own mapping.
//
// The types and functions come from plugin.h, which `./build` generates from
// wit/plugin.wit with `wit-bindgen c` (the WIT comments are the reference).
// Who frees what, in the generated bindings:
// - Arguments of an export (`settings`, `events`) belong to the export: free
//   them (the *_free functions free nested strings and lists too). You may
//   move a string out of an event instead of copying it, as below.
// - Everything an export returns must come from malloc: after the host has
//   copied the results, the bindings free every string and list with a
//   non-zero length. Never return a pointer to a literal or a static buffer
//   (use plugin_string_dup); an empty string needs no buffer.
// - Arguments of an import (`ferry_plugin_host_log`) are borrowed: they stay
//   yours to free.

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

typedef ferry_plugin_types_change_event_t change_event;
typedef exports_ferry_plugin_mapper_result_list_output_error_t event_result;

static void *checked_malloc(size_t size) {
    void *memory = malloc(size);
    // Out of memory: trap. The host discards the instance and reports the
    // event as crashed.
    if (memory == NULL) abort();
    return memory;
}

// A string formatted like printf, in a malloc'd buffer: fit to return to the
// host (an error message, a payload).
__attribute__((format(printf, 1, 2)))
static plugin_string_t format_string(const char *format, ...) {
    va_list args;
    va_start(args, format);
    int len = vsnprintf(NULL, 0, format, args);
    va_end(args);
    if (len < 0) abort();
    char *text = checked_malloc((size_t)len + 1);
    va_start(args, format);
    vsnprintf(text, (size_t)len + 1, format, args);
    va_end(args);
    return (plugin_string_t){(uint8_t *)text, (size_t)len};
}

static const char *op_name(ferry_plugin_types_operation_t op) {
    switch (op) {
    case FERRY_PLUGIN_TYPES_OPERATION_CREATE: return "create";
    case FERRY_PLUGIN_TYPES_OPERATION_UPDATE: return "update";
    case FERRY_PLUGIN_TYPES_OPERATION_DELETE: return "delete";
    case FERRY_PLUGIN_TYPES_OPERATION_SNAPSHOT_READ: return "snapshot-read";
    default: return "message";
    }
}

// Moves a string out of an `option<string>` of an event into an
// `option<list<u8>>` (same bytes): clearing `is_some` keeps the event's
// free function from freeing it.
static plugin_option_list_u8_t take_bytes(plugin_option_string_t *text) {
    plugin_option_list_u8_t bytes = {.is_some = text->is_some};
    if (text->is_some) {
        bytes.val.ptr = text->val.ptr;
        bytes.val.len = text->val.len;
        text->is_some = false;
    }
    return bytes;
}

// Maps one event. A mapping must be a pure function of the event (and the
// settings): the same event may be given again after a restart.
static void map_event(change_event *event, event_result *result) {
    bool is_delete = event->op == FERRY_PLUGIN_TYPES_OPERATION_DELETE;
    if (!event->after.is_some && !is_delete) {
        // `permanent`: this event can never be mapped; the pipeline's error
        // policy decides (halt, dead-letter or park). Use `retryable` for a
        // passing condition the host should retry.
        // WIT strings are not NUL-terminated: print them with "%.*s".
        result->is_err = true;
        result->val.err.tag = FERRY_PLUGIN_TYPES_ERROR_PERMANENT;
        result->val.err.val.permanent = format_string("event %.*s has no after",
                                                      (int)event->position.len,
                                                      (const char *)event->position.ptr);
        return;
    }

    ferry_plugin_types_header_t *header = checked_malloc(sizeof *header);
    plugin_string_dup(&header->name, "op");
    plugin_string_dup(&header->value, op_name(event->op));

    ferry_plugin_types_output_t *output = checked_malloc(sizeof *output);
    *output = (ferry_plugin_types_output_t){
        // No key of its own: the event's key stays the unit of order.
        .key = {.is_some = false},
        .payload = {
            .tag = FERRY_PLUGIN_TYPES_PAYLOAD_RECORD,
            .val.record = {
                // No topic: the pipeline's topic (or routing template) decides.
                .topic = {.is_some = false},
                .key = take_bytes(&event->key),
                // A delete becomes a tombstone: no value.
                .value = is_delete ? (plugin_option_list_u8_t){.is_some = false}
                                   : take_bytes(&event->after),
                .headers = {.ptr = header, .len = 1},
            },
        },
    };
    result->is_err = false;
    result->val.ok.ptr = output;
    result->val.ok.len = 1;
}

bool exports_ferry_plugin_mapper_init(plugin_list_tuple2_string_string_t *settings, plugin_string_t *err) {
    // Settings come from `[pipelines.<name>.plugin.settings]` as name/value
    // pairs (`f0`, `f1`). To refuse a configuration, set `*err` to a
    // malloc'd message (plugin_string_dup) and return false. This starter
    // needs none.
    (void)err;
    plugin_list_tuple2_string_string_free(settings);
    return true;
}

void exports_ferry_plugin_mapper_transform(exports_ferry_plugin_mapper_list_change_event_t *events,
                                           exports_ferry_plugin_mapper_list_result_list_output_error_t *results) {
    results->len = events->len;
    results->ptr = events->len > 0 ? checked_malloc(events->len * sizeof *results->ptr) : NULL;
    for (size_t i = 0; i < events->len; i++) {
        map_event(&events->ptr[i], &results->ptr[i]);
    }
    // Frees what is left of the events (what was not moved into outputs).
    exports_ferry_plugin_mapper_list_change_event_free(events);
}
