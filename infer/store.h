// store.h: a LoRA store: adapters in PEFT layout, loaded beside one frozen base.
//   --adapter-dir DIR   each subfolder of DIR is one adapter, named after the
//                       folder (NIM's store layout)
//   --adapters LIST     a comma-separated subset: names in DIR, or paths to adapter
//                       directories (named after their last component);
//                       "name:0.5" sets a scale. Empty: every adapter in DIR.
// Adapters are loaded into host memory as fp32 (train/peft.h), checked against the
// base's shapes, and never touch the base. One bad adapter is reported with its
// reason and the others still load.
#ifndef QL_STORE_H
#define QL_STORE_H

#include <stddef.h>

#include "../common/config.h"
#include "../model/lora.h"

#define STORE_NAME_MAX 128

typedef struct {
    char name[STORE_NAME_MAX];
    char *path;           // its directory
    float scale;          // from "name:scale", else 1
    int ok;               // loaded; else err holds why not
    char err[1024];
    lora_adapter a;
    size_t bytes;         // memory of its fp32 A and B
    double load_s;
    int serial;           // unique within the store's life (1, 2, ...): a reloaded adapter gets a new one
} store_entry;

typedef struct {
    store_entry *e;       // may move when an adapter is added: hold names or serials, not pointers
    int n;
    int serials;
} adapter_store;

// Fills st from the two options (either may be empty, not both). Returns an error
// only for a bad option (an unreadable --adapter-dir, a malformed entry, a
// duplicate name) or no memory; adapters that fail to load are kept with ok = 0.
int store_open(adapter_store *st, const model_config *c, const char *adapter_dir, const char *list);
void store_free(adapter_store *st);
// Hot-loading: store_add loads one more item ("name", "path", with ":scale") the
// way --adapters does; it fails only as store_open does, and an adapter that does
// not load stays as an entry with ok = 0 (the last one). store_drop frees the
// entry called name (loaded or not); QL_EINVAL when there is none. Neither
// touches the base or the other adapters.
int store_add(adapter_store *st, const model_config *c, const char *adapter_dir, const char *item);
int store_drop(adapter_store *st, const char *name);
// The loaded entry called name, or NULL.
const store_entry *store_find(const adapter_store *st, const char *name);
// Entries loaded (ok).
int store_loaded(const adapter_store *st);

#endif
