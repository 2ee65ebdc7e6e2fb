// store.h: a LoRA store: adapters in PEFT layout, loaded beside one frozen base.
//   --adapter-dir DIR   each subfolder of DIR is one adapter, named after the
//                       folder (NIM's store layout); folders whose name starts
//                       with '.' are hidden (adapters being written, see train/)
//   --adapters LIST     a comma-separated subset: with --adapter-dir, names of
//                       its folders; without, paths to adapter directories (named
//                       after their last component); "name:0.5" sets a scale.
//                       Empty: every adapter in DIR.
// The store is a boundary: a name from anywhere (the command line, a requests
// line, a chat command, an HTTP body) is one folder of the store
// (store_check_name), and what it resolves to must lie inside the store unless
// follow_symlinks (--follow-symlinks): a symbolic link in the store that points
// out of it, for the folder or for one of its files, is refused with how to
// allow it. The store itself may be a link.
// Adapters are loaded into host memory as fp32 (train/peft.h), checked against the
// base's shapes, and never touch the base. One bad adapter is reported with its
// reason and the others still load.
#ifndef QL_STORE_H
#define QL_STORE_H

#include <stddef.h>

#include "../common/config.h"
#include "../datasets/dataset.h"
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
    int has_tmpl;         // its training_record.json names the chat template it was trained in:
    ds_template tmpl;     // the one its chat prompts are rendered with by default
} store_entry;

typedef struct {
    store_entry *e;       // may move when an adapter is added: hold names or serials, not pointers
    int n;
    int serials;
    int follow_symlinks;  // --follow-symlinks: links in the store may point out of it
} adapter_store;

// What a name may be, for the messages of every caller.
#define STORE_NAME_RULE                                                                                           \
    "a name is one folder of the store: 1 to 127 bytes, not starting with '.', without '/', '\\', ',', ':', " \
    "NUL or control bytes"

// QL_OK when name[0..len) is one folder name of a store: 1 to STORE_NAME_MAX-1
// bytes; no NUL (len is the length the caller read, so "a\u0000b" from JSON is
// caught), no '/' or '\\' (so no path, absolute or relative), not starting with
// '.' (".", ".." and hidden folders), no ',' or ':' (they separate --adapters
// items and scales), no control byte. QL_EINVAL otherwise, with a message that
// says what is wrong and STORE_NAME_RULE.
int store_check_name(const char *name, size_t len);
// The adapter folder called name in the store dir, resolved (realpath, malloc'd)
// into *out. Checks the name; the folder and its adapter_config.json,
// adapter_model.safetensors and training_record.json must resolve inside the
// store (dir resolved too, so a linked store is fine) unless follow_symlinks.
// QL_ENOENT: no such folder (or a dangling link); QL_EINVAL: a bad name, or a
// link out of the store (the message names the link and its target and says to
// pass --follow-symlinks); QL_EIO: dir is not readable.
int store_resolve(char **out /* out */, const char *dir, const char *name, int follow_symlinks);
// The same checks for dir_real (a resolved folder) against root_real (a resolved
// store): dir_real must be inside root_real and its adapter files must not link
// out of it, unless follow_symlinks. shown: how to name dir_real in the message.
int store_check_inside(const char *root_real, const char *dir_real, const char *shown, int follow_symlinks);
// 1 when real (a resolved path) is strictly inside root (a resolved folder).
int store_path_inside(const char *root, const char *real);

// The chat template dir's training_record.json says the adapter learned its
// turns in (qlora train records it for messages, Alpaca and ShareGPT data): 1
// and *t, or 0 when there is no record, no template in it (text data) or one we
// do not know.
int store_record_template(const char *dir, ds_template *t /* out */);
// The template for adapter name's prompts: given when given_set (a --chat-template
// by hand), else rec when has_rec (its recorded one), else fallback. A given
// template that differs from the recorded one is warned about, saying how it is
// used ("adapter NAME was trained in the T chat template; <use> --chat-template G
// as asked"), unless *warned (then set; NULL: always warned).
ds_template store_pick_template(const char *name, int has_rec, ds_template rec, int given_set, ds_template given,
                                ds_template fallback, const char *use, int *warned);

// Fills st from the two options (either may be empty). Returns an error only for
// a bad option (an unreadable --adapter-dir, a malformed entry or name, a
// duplicate name) or no memory; adapters that fail to load (a missing folder, a
// link out of the store, bad files) are kept with ok = 0 and their reason.
int store_open(adapter_store *st, const model_config *c, const char *adapter_dir, const char *list,
               int follow_symlinks);
void store_free(adapter_store *st);
// Hot-loading: store_add loads one more item ("name" with adapter_dir, "path"
// without, with ":scale") the way --adapters does; it fails only as store_open does, and an adapter that does
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
