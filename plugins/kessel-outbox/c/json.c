// A small validating JSON reader: see json.h for its scope.
//
// A recursive-descent parser over [pos, end). Every function checks `pos`
// against `end` before reading a byte, and the first error is kept with the
// position where it was found.

#include "json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    const char *pos;
    const char *end;
    int depth;
    const char *error; // the first error met, a static message
} parser;

static bool fail(parser *p, const char *message) {
    if (p->error == NULL) p->error = message;
    return false;
}

static bool at(const parser *p, char c) {
    return p->pos < p->end && *p->pos == c;
}

static bool at_digit(const parser *p) {
    return p->pos < p->end && *p->pos >= '0' && *p->pos <= '9';
}

static bool expect(parser *p, char c, const char *message) {
    if (!at(p, c)) return fail(p, message);
    p->pos++;
    return true;
}

static void skip_whitespace(parser *p) {
    while (p->pos < p->end &&
           (*p->pos == ' ' || *p->pos == '\t' || *p->pos == '\n' || *p->pos == '\r')) {
        p->pos++;
    }
}

// The four hex digits of a \u escape, as one UTF-16 code unit.
static bool read_hex4(parser *p, uint32_t *unit) {
    if (p->end - p->pos < 4) return fail(p, "truncated \\u escape");
    uint32_t value = 0;
    for (int i = 0; i < 4; i++) {
        char c = *p->pos++;
        uint32_t digit;
        if (c >= '0' && c <= '9') digit = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') digit = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') digit = (uint32_t)(c - 'A' + 10);
        else return fail(p, "invalid \\u escape");
        value = value << 4 | digit;
    }
    *unit = value;
    return true;
}

// An escape, after its backslash: the code point it stands for. Surrogates
// must come in pairs, so that every decoded string is valid UTF-8.
static bool read_escape(parser *p, uint32_t *code_point) {
    if (p->pos >= p->end) return fail(p, "unterminated string");
    char c = *p->pos++;
    switch (c) {
    case '"': case '\\': case '/': *code_point = (uint32_t)c; return true;
    case 'b': *code_point = '\b'; return true;
    case 'f': *code_point = '\f'; return true;
    case 'n': *code_point = '\n'; return true;
    case 'r': *code_point = '\r'; return true;
    case 't': *code_point = '\t'; return true;
    case 'u': break;
    default: return fail(p, "invalid escape in a string");
    }
    uint32_t unit;
    if (!read_hex4(p, &unit)) return false;
    if (unit >= 0xDC00 && unit <= 0xDFFF) return fail(p, "lone surrogate in a \\u escape");
    if (unit >= 0xD800 && unit <= 0xDBFF) {
        uint32_t low;
        if (p->end - p->pos < 2 || p->pos[0] != '\\' || p->pos[1] != 'u') {
            return fail(p, "lone surrogate in a \\u escape");
        }
        p->pos += 2;
        if (!read_hex4(p, &low)) return false;
        if (low < 0xDC00 || low > 0xDFFF) return fail(p, "lone surrogate in a \\u escape");
        unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
    }
    *code_point = unit;
    return true;
}

// Writes a code point as UTF-8; returns the number of bytes (1 to 4).
static size_t put_utf8(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

// A string, from its opening quote. With `out`, also writes its decoded
// bytes there and their count to `*out_len`. Decoding never lengthens a
// string (`\n` is 2 bytes for 1, `\uXXXX` 6 for at most 3, a surrogate pair
// 12 for 4), so `out` needs no more room than the string's text.
static bool read_string(parser *p, char *out, size_t *out_len) {
    if (!expect(p, '"', "expected a string")) return false;
    size_t n = 0;
    while (p->pos < p->end) {
        unsigned char c = (unsigned char)*p->pos;
        if (c == '"') {
            p->pos++;
            if (out_len != NULL) *out_len = n;
            return true;
        }
        if (c < 0x20) return fail(p, "control character in a string");
        p->pos++;
        if (c != '\\') {
            if (out != NULL) out[n] = (char)c;
            n++;
            continue;
        }
        uint32_t code_point;
        if (!read_escape(p, &code_point)) return false;
        if (out != NULL) n += put_utf8(out + n, code_point);
    }
    return fail(p, "unterminated string");
}

static bool read_digits(parser *p) {
    if (!at_digit(p)) return fail(p, "expected a digit");
    while (at_digit(p)) p->pos++;
    return true;
}

// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
static bool read_number(parser *p) {
    if (at(p, '-')) p->pos++;
    if (at(p, '0')) p->pos++; // no leading zeros: "01" stops after the 0
    else if (!read_digits(p)) return false;
    if (at(p, '.')) {
        p->pos++;
        if (!read_digits(p)) return false;
    }
    if (at(p, 'e') || at(p, 'E')) {
        p->pos++;
        if (at(p, '+') || at(p, '-')) p->pos++;
        if (!read_digits(p)) return false;
    }
    return true;
}

static bool read_literal(parser *p, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(p->end - p->pos) < n || memcmp(p->pos, word, n) != 0) {
        return fail(p, "invalid literal");
    }
    p->pos += n;
    return true;
}

static bool read_value(parser *p, json_value *out);

static bool read_array(parser *p) {
    p->pos++; // '['
    skip_whitespace(p);
    if (at(p, ']')) {
        p->pos++;
        return true;
    }
    for (;;) {
        json_value item;
        if (!read_value(p, &item)) return false;
        skip_whitespace(p);
        if (at(p, ']')) {
            p->pos++;
            return true;
        }
        if (!expect(p, ',', "expected ',' or ']'")) return false;
    }
}

static bool read_object(parser *p) {
    p->pos++; // '{'
    skip_whitespace(p);
    if (at(p, '}')) {
        p->pos++;
        return true;
    }
    for (;;) {
        skip_whitespace(p);
        if (!read_string(p, NULL, NULL)) return false;
        skip_whitespace(p);
        if (!expect(p, ':', "expected ':'")) return false;
        json_value member;
        if (!read_value(p, &member)) return false;
        skip_whitespace(p);
        if (at(p, '}')) {
            p->pos++;
            return true;
        }
        if (!expect(p, ',', "expected ',' or '}'")) return false;
    }
}

// One value, after optional whitespace. Containers recurse, at most
// JSON_MAX_DEPTH deep.
static bool read_value(parser *p, json_value *out) {
    skip_whitespace(p);
    if (p->pos >= p->end) return fail(p, "expected a value");
    const char *start = p->pos;
    bool ok;
    switch (*p->pos) {
    case '{':
    case '[':
        if (p->depth >= JSON_MAX_DEPTH) return fail(p, "nested too deeply");
        p->depth++;
        out->type = *start == '{' ? JSON_OBJECT : JSON_ARRAY;
        ok = *start == '{' ? read_object(p) : read_array(p);
        p->depth--;
        break;
    case '"':
        out->type = JSON_STRING;
        ok = read_string(p, NULL, NULL);
        break;
    case 't':
        out->type = JSON_BOOL;
        ok = read_literal(p, "true");
        break;
    case 'f':
        out->type = JSON_BOOL;
        ok = read_literal(p, "false");
        break;
    case 'n':
        out->type = JSON_NULL;
        ok = read_literal(p, "null");
        break;
    default:
        if (*p->pos != '-' && !at_digit(p)) return fail(p, "expected a value");
        out->type = JSON_NUMBER;
        ok = read_number(p);
        break;
    }
    out->text = start;
    out->len = (size_t)(p->pos - start);
    return ok;
}

bool json_parse(const char *text, size_t len, json_value *out, char *error, size_t error_size) {
    parser p = {.pos = text, .end = text + len, .depth = 0, .error = NULL};
    if (read_value(&p, out)) {
        skip_whitespace(&p);
        if (p.pos == p.end) return true;
        fail(&p, "trailing characters after the value");
    }
    if (error != NULL && error_size > 0) {
        snprintf(error, error_size, "%s at byte %zu", p.error, (size_t)(p.pos - text));
    }
    return false;
}

bool json_object_get(json_value object, const char *name, json_value *member) {
    if (object.type != JSON_OBJECT || object.len < 2) return false;
    // Walk the members between the braces. The object was validated when
    // its document was parsed, so the checks below only guard against
    // misuse (a hand-made json_value).
    parser p = {.pos = object.text + 1, .end = object.text + object.len - 1};
    bool found = false;
    skip_whitespace(&p);
    while (p.pos < p.end) {
        json_value key = {.type = JSON_STRING, .text = p.pos};
        if (!read_string(&p, NULL, NULL)) return false;
        key.len = (size_t)(p.pos - key.text);
        skip_whitespace(&p);
        json_value value;
        if (!expect(&p, ':', "expected ':'") || !read_value(&p, &value)) return false;
        if (json_string_equals(key, name)) {
            *member = value;
            found = true;
        }
        skip_whitespace(&p);
        if (!at(&p, ',')) break;
        p.pos++;
        skip_whitespace(&p);
    }
    return found;
}

char *json_string_decode(json_value string, size_t *len) {
    if (string.type != JSON_STRING) return NULL;
    char *out = malloc(string.len + 1); // decoding never lengthens
    if (out == NULL) return NULL;
    parser p = {.pos = string.text, .end = string.text + string.len};
    size_t n = 0;
    if (!read_string(&p, out, &n)) {
        free(out);
        return NULL;
    }
    out[n] = '\0';
    *len = n;
    return out;
}

bool json_string_equals(json_value string, const char *name) {
    if (string.type != JSON_STRING || string.len < 2) return false;
    size_t name_len = strlen(name);
    const char *inner = string.text + 1;
    size_t inner_len = string.len - 2;
    if (memchr(inner, '\\', inner_len) == NULL) {
        return inner_len == name_len && memcmp(inner, name, name_len) == 0;
    }
    // Escapes in a name are rare: decode it.
    size_t decoded_len;
    char *decoded = json_string_decode(string, &decoded_len);
    bool equal = decoded != NULL && decoded_len == name_len && memcmp(decoded, name, name_len) == 0;
    free(decoded);
    return equal;
}
