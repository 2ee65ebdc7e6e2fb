// json.h: thin helpers around jsmn (libjsmn-dev) for every JSON we read.
// A document is parsed once into tokens; values are addressed by token index.
// Errors name the source ("config.json", "data.jsonl:17") and the field.
#ifndef QL_JSON_H
#define QL_JSON_H

#include <stddef.h>

#include "jsmn_types.h"

// Objects and arrays nest at most this deep (deeper is refused, with this number).
#define JSON_MAX_DEPTH 128

typedef struct {
    const char *js;   // the text (not owned)
    size_t len;
    jsmntok_t *tok;   // owned
    int *next;        // owned: next[i] is the token just past i's subtree
    int ntok;
    const char *what; // source name for messages (not owned)
    // where json_item / json_member last stopped (a cache; makes k = 0, 1, ... linear)
    int c_arr, c_arr_k, c_arr_i, c_obj, c_obj_k, c_obj_i;
} json_doc;

enum { JSON_OBJECT = 1, JSON_ARRAY = 2, JSON_STRING = 3, JSON_PRIMITIVE = 4 };

// Parse text; the root must be an object or array. Strict RFC 8259: no trailing,
// leading or doubled commas, items separated by commas, numbers as the grammar
// writes them (no "01", "1.", "0x10", "-"), only true/false/null as bare words,
// strings of well-formed UTF-8 without raw control bytes (NUL included), at most
// JSON_MAX_DEPTH levels, and no key twice in one object. QL_EFORMAT naming the line
// and column ("what: invalid JSON at line L column C: why") otherwise; linear time.
int json_parse(json_doc *d, const char *js, size_t len, const char *what);
void json_free(json_doc *d);

int json_type(const json_doc *d, int i);
int json_size(const json_doc *d, int i);           // children: keys of an object, items of an array
int json_next(const json_doc *d, int i);           // token index just past i's subtree
int json_find(const json_doc *d, int obj, const char *key);  // value token or -1
int json_item(const json_doc *d, int arr, int k);  // k-th item of an array or -1
// key of the k-th member of an object: returns key token, sets *val to the value token
int json_member(const json_doc *d, int obj, int k, int *val);

// A key with no value ({"a": }) or two ({"a": 1 2}), which jsmn alone accepted:
// json_parse now refuses both, so this always returns -1 (kept for its callers).
int json_bad_member(const json_doc *d, int *two_values);

int json_is_null(const json_doc *d, int i);
// "an object", "an array", "a string", "a number", "a boolean", "null" (for messages)
const char *json_type_name(const json_doc *d, int i);
int json_eq(const json_doc *d, int i, const char *s);  // string token equals s (no escapes)
// Typed getters: QL_OK, or QL_EFORMAT with "<what>: field '<name>': expected X, found Y".
int json_get_int(const json_doc *d, int i, const char *name, long long *out);
int json_get_double(const json_doc *d, int i, const char *name, double *out);
int json_get_bool(const json_doc *d, int i, const char *name, int *out);
// Member name of object obj as a number in [lo, hi] (an integer when is_int), into *out;
// absent (or null, when null_absent) leaves *out alone. QL_EFORMAT naming the field otherwise.
int json_get_ranged(const json_doc *d, int obj, const char *name, int is_int, int null_absent, double lo, double hi,
                    double *out);
// Unescaped UTF-8 string, malloc'd, NUL-terminated; *len_out (optional) excludes the NUL.
// A \u0000 escape is refused (QL_EFORMAT naming the field): a NUL would cut the string.
int json_get_string(const json_doc *d, int i, const char *name, char **out, size_t *len_out);

// Bytes in the well-formed UTF-8 character at s (n bytes available), or 0:
// overlong forms, surrogates (U+D800..DFFF) and code points past U+10FFFF are not.
int utf8_seq_len(const unsigned char *s, size_t n);
// s as a quoted, escaped JSON string, malloc'd (NULL when out of memory); bytes
// that are not well-formed UTF-8 become U+FFFD.
char *json_quote(const char *s);

// Whole-file reading with a size limit; the buffer is NUL-terminated and malloc'd.
// Only a regular file is read (a FIFO, device or directory is refused without waiting).
int file_read_all(const char *path, size_t limit, char **out, size_t *len_out);

#endif
