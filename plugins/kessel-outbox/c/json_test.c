// Native tests of json.c, run by hand (not part of the plugin):
//
//   cc -std=c11 -Wall -Wextra -fsanitize=address,undefined json_test.c json.c -o /tmp/json_test && /tmp/json_test
//
// Each input is copied into a buffer of exactly its length, so that the
// sanitizer catches any read past the end.

#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks, failures;

static void check(bool condition, const char *what) {
    checks++;
    if (!condition) {
        printf("FAILED: %s\n", what);
        failures++;
    }
}

// Parses `text` from an exact-size heap copy; the copy is returned in *copy.
static bool parse(const char *text, json_value *value, char **copy) {
    size_t len = strlen(text);
    *copy = malloc(len ? len : 1);
    memcpy(*copy, text, len);
    char error[96];
    return json_parse(*copy, len, value, error, sizeof error);
}

static bool valid(const char *text) {
    json_value value;
    char *copy;
    bool ok = parse(text, &value, &copy);
    free(copy);
    return ok;
}

int main(void) {
    const char *good[] = {
        "{}", " [ ] ", "0", "-0.5e+10", "1E3", "\"\"", "true", "false", "null",
        "{\"a\":[1,{\"b\":null}],\"c\":\"\\u00e9\\ud83d\\ude00\\n\"}",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) check(valid(good[i]), good[i]);

    const char *bad[] = {
        "", " ", "{", "[1,]", "{\"a\"}", "{\"a\":1,}", "01", "1.", "-", "1e", "tru", "nul",
        "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"",
        "\"a\nb\"", "{} {}", "{a:1}", "[1 2]", "\"\\",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) check(!valid(bad[i]), bad[i]);

    // Nesting: JSON_MAX_DEPTH levels pass, one more is refused.
    char deep[2 * (JSON_MAX_DEPTH + 1) + 1];
    for (int depth = JSON_MAX_DEPTH; depth <= JSON_MAX_DEPTH + 1; depth++) {
        memset(deep, '[', (size_t)depth);
        memset(deep + depth, ']', (size_t)depth);
        deep[2 * depth] = '\0';
        check(valid(deep) == (depth == JSON_MAX_DEPTH), "nesting limit");
    }

    // Members: found by decoded name, the last duplicate wins.
    json_value row, member;
    char *copy;
    check(parse("{ \"id\" : 1 , \"n\\u0061me\":\"x\\\"y\", \"id\":\"two\" }", &row, &copy), "row parses");
    check(json_object_get(row, "name", &member) && member.type == JSON_STRING, "escaped name found");
    size_t len;
    char *name = json_string_decode(member, &len);
    check(name != NULL && len == 3 && strcmp(name, "x\"y") == 0, "string decoded");
    free(name);
    check(json_object_get(row, "id", &member) && json_string_equals(member, "two"), "last duplicate wins");
    check(!json_object_get(row, "missing", &member), "absent member");
    check(!json_object_get(member, "id", &member), "a string has no members");
    free(copy);

    check(parse("\"\\u00e9\\ud83d\\ude00\"", &member, &copy), "unicode parses");
    char *text = json_string_decode(member, &len);
    check(text != NULL && len == 6 && strcmp(text, "\xc3\xa9\xf0\x9f\x98\x80") == 0, "unicode decoded to UTF-8");
    free(text);
    free(copy);

    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
