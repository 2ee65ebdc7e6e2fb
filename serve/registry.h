// registry.h: the server's adapters in memory, over a LoRA store on disk
// (--adapter-dir: each subfolder is one PEFT adapter, named after the folder).
//
// An adapter is loaded on first use (NIM's LoRA store, vLLM's filesystem
// resolver), so a folder that `qlora train` has just written is servable without
// a restart; it is loaded again when its files change. At most max_loras stay in
// memory: past that the least recently used one that no request holds is
// retired. Requests hold a reference (reg_acquire / reg_release) for as long as
// they run, so nothing they use is freed under them: a retired adapter leaves the
// name table at once and is freed by reg_collect, on the scheduler's thread (the
// one that owns the backend copies), once the last reference is gone.
//
// Every entry is a separate allocation: pointers stay valid while referenced.
// Thread-safe: HTTP threads acquire and load, the scheduler collects.
#ifndef QL_REGISTRY_H
#define QL_REGISTRY_H

#include <pthread.h>
#include <stdint.h>

#include "../common/config.h"
#include "../common/strbuf.h"
#include "../datasets/dataset.h"
#include "../model/lora.h"
#include "openai.h"

typedef struct reg_adapter {
    char name[OAI_NAME_MAX];
    char *path;                 // its directory
    lora_adapter a;
    int has_template;           // training_record.json named the chat template it was trained with
    ds_template tmpl;
    uint64_t stamp;             // mtime (ns) and size of its files when loaded, folded: a change reloads it
    int refs;                   // requests using it
    int pinned;                 // loaded by /v1/load_lora_adapter: never evicted, only unloaded
    double last_used, load_s;
    struct reg_adapter *next;
} reg_adapter;

typedef struct {
    pthread_mutex_t mu;
    const model_config *cfg;
    char *dir;                  // the store, resolved (realpath); NULL when there is none
    int max_loras, allow_any_path, follow_symlinks;
    reg_adapter *live;          // in the name table
    reg_adapter *retired;       // out of it: freed by reg_collect when refs reach 0
    long long loads, evictions;
} registry;

// dir may be "" (no store: adapters come only from /v1/load_lora_adapter).
// follow_symlinks (--follow-symlinks): a link in the store may point out of it;
// allow_any_path (--allow-any-adapter-path): /v1/load_lora_adapter's lora_path may be anywhere.
int reg_init(registry *g, const model_config *c, const char *dir, int max_loras, int allow_any_path,
             int follow_symlinks);
void reg_free(registry *g);

// The adapter called name, with a reference, loading it from the store when it is
// not in memory or its files changed. Errors: QL_EINVAL (not a single folder
// name; the name points out of the store), QL_ENOENT (no such adapter), others
// (the directory's files are bad: the message names the file and what is wrong).
int reg_acquire(registry *g, const char *name, reg_adapter **out /* out */);
void reg_release(registry *g, reg_adapter *a);
// /v1/load_lora_adapter: loads path as name (pinned). path must resolve inside the
// store unless allow_any_path; a link in the store out of it needs follow_symlinks.
// A name already loaded is replaced.
int reg_load(registry *g, const char *name, const char *path);
// /v1/unload_lora_adapter: retires name (requests running on it finish first).
// QL_ENOENT when it is not loaded.
int reg_unload(registry *g, const char *name);
// Frees retired adapters no request holds; forget(ctx, a) is called first.
void reg_collect(registry *g, void (*forget)(void *ctx, const lora_adapter *a), void *ctx);
// Adapters in memory.
int reg_loaded(registry *g);
// The "data" entries of /v1/models for the adapters: every folder of the store and
// every loaded adapter, each {"id", "object": "model", "owned_by", "parent",
// "root", "rank", "targets", "loaded"} (a folder that does not read has "error").
int reg_list_json(registry *g, strbuf *b, const char *parent, long long created);
// One such entry (GET /v1/models/{id}): QL_ENOENT when name is neither loaded nor
// an adapter folder of the store, QL_EINVAL when it is not a single folder name.
int reg_model_json(registry *g, strbuf *b, const char *name, const char *parent, long long created);

// What the playground's store listing (serve/playground.c) needs of the registry.
// An adapter in memory, copied under the lock.
typedef struct {
    char name[OAI_NAME_MAX];
    int rank, use_rslora, pinned;
    unsigned targets;
    float alpha, scaling;
    int has_template;
    ds_template tmpl;
} reg_info;
// Every adapter in memory (malloc'd array in *out, *n entries; NULL and 0 when none).
int reg_snapshot(registry *g, reg_info **out /* out */, int *n /* out */);
// The folders of the store that could be adapters (hidden ones and names no
// request could give left out), sorted; *out is a malloc'd array of malloc'd names.
int reg_store_names(registry *g, char ***out /* out */, int *n /* out */);
// LORA_* bits as a JSON list of module names (["q_proj", "v_proj"]).
int reg_targets_json(strbuf *b, unsigned targets);
// name's folder in the store, resolved and checked to be inside it (store_resolve)
// into out. QL_EINVAL for a bad name or a link out of the store, QL_ENOENT when
// there is no such folder or it has no adapter_config.json yet.
int reg_store_path(registry *g, const char *name, char *out /* out */, size_t cap);

#endif
