// web_assets.h: the playground's files (serve/web/), compiled into the binary.
// serve/web/embed.cmake writes the table at build time from the files
// themselves, so the page a binary serves is the one it was built with and
// nothing is read from disk (or the network) to serve it.
#ifndef QL_WEB_ASSETS_H
#define QL_WEB_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *url;          // "/" (index.html) or "/playground/NAME"
    const char *type;         // its Content-Type
    const unsigned char *data;
    size_t len;               // bytes
} web_asset;

extern const web_asset web_assets[];
extern const int web_n_assets;

#endif
