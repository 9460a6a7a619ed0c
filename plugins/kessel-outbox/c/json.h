// A small validating JSON reader (RFC 8259), written for this plugin.
//
// Scope: what a mapping needs to look into a payload and pass it on —
// validate a document, find a member of an object, decode a string. It
// builds no tree: a value is a span of the input text, so passing a value on
// unchanged means copying its bytes. It does not write JSON.
//
// Every read is bounded by the input's length (the text need not be
// NUL-terminated) and nesting is limited to JSON_MAX_DEPTH, so hostile input
// can neither read out of bounds nor exhaust the stack. The input must be
// valid UTF-8, which component-model strings always are.

#ifndef FERRY_JSON_H
#define FERRY_JSON_H

#include <stdbool.h>
#include <stddef.h>

// Deeper documents are refused (serde_json, used by the Rust plugins, has
// the same limit).
#define JSON_MAX_DEPTH 128

typedef enum json_type {
    JSON_NULL,
    JSON_BOOL,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
} json_type;

// A value inside a parsed document: its type and its text, quotes and
// brackets included. It points into the document, so it is valid as long as
// the document's text is.
typedef struct json_value {
    json_type type;
    const char *text;
    size_t len;
} json_value;

// Parses a whole document: one value, with optional whitespace around it.
// On failure returns false and writes a message such as
// "expected ':' at byte 12" to `error` (`error_size` bytes at most).
bool json_parse(const char *text, size_t len, json_value *out, char *error, size_t error_size);

// Finds the member called `name` of an object value. When the name repeats,
// the last one wins (as in serde_json). False when `object` is not an
// object or has no such member.
bool json_object_get(json_value object, const char *name, json_value *member);

// Decodes a string value (escapes resolved) into a new NUL-terminated UTF-8
// buffer from malloc, which the caller frees; its length goes to `*len`.
// NULL when `string` is not a string value.
char *json_string_decode(json_value string, size_t *len);

// Whether a string value, once decoded, equals `name`.
bool json_string_equals(json_value string, const char *name);

#endif
