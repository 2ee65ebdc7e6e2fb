// playground.h: the playground, the web page `qlora serve` answers GET / with
// (serve/web/: HTML, CSS and JavaScript compiled into the binary, web_assets.h),
// and the two qlora-specific endpoints it reads besides the OpenAI ones:
//   GET /v1/qlora/store                  every adapter folder of the store (and
//        every adapter in memory) with what training recorded: rank, alpha,
//        targets, the data file's name, final losses, steps, chat template,
//        loaded or not (docs/playground.md has every field)
//   GET /v1/qlora/store/NAME/loss.svg    the loss curve `qlora train` wrote
// Both keep to the store's boundary (infer/store.h): NAME is one folder of the
// store, what it resolves to stays inside unless --follow-symlinks, and only
// regular files are read, up to a size limit.
#ifndef QL_PLAYGROUND_H
#define QL_PLAYGROUND_H

#include <stddef.h>

#include "../common/strbuf.h"
#include "../datasets/dataset.h"
#include "registry.h"
#include "web_assets.h"

// The page may use only this server: no inline script or style, nothing remote,
// no frames, no plugins, no form posts elsewhere.
#define PG_CSP                                                                                              \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "      \
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
// A loss curve is shown as an image, never run: an SVG opened on its own gets no
// script and an origin of its own.
#define PG_SVG_CSP "default-src 'none'; style-src 'unsafe-inline'; sandbox"
// loss.svg files past this are refused (qlora train's are a few KB).
#define PG_CURVE_MAX ((size_t)4 << 20)

typedef struct {
    const char *id;             // the base's served name
    int max_model_len;          // the context per sequence
    ds_template tmpl;           // chat requests without an adapter template of their own use this
    const char *tmpl_from;      // "tokenizer_config.json" or "--chat-template"
} pg_base;

// The embedded file served at url (the path, without a query), or NULL.
const web_asset *pg_asset(const char *url);

// GET /v1/qlora/store into b.
int pg_store_json(strbuf *b /* out */, registry *g, const pg_base *base);

// The adapter name in a URL of the form /v1/qlora/store/NAME/loss.svg, copied
// into name (NAME as the client sent it, already percent-decoded by
// libmicrohttpd): 1, or 0 when url is not of that form.
int pg_curve_url(const char *url, char *name /* out */, size_t cap);

// The loss.svg of the store's adapter name, malloc'd into *svg. QL_EINVAL: not a
// single folder name, or a link out of the store; QL_ENOENT: no such adapter or
// it has no curve; QL_EFORMAT: not a regular file, or past PG_CURVE_MAX.
int pg_curve(registry *g, const char *name, char **svg /* out */, size_t *len /* out */);

#endif
