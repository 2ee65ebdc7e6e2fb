// openai.h: the OpenAI API's request bodies (POST /v1/completions and
// /v1/chat/completions), parsed and checked through the jsmn layer, and the error
// object every failure answers with. Where OpenAI is silent we follow vLLM
// (top_k, ignore_eos); qlora's own extensions are lora_scale and adapters.
//
// A body is parsed by the HTTP thread that received it; nothing here touches the
// model, so a bad body never reaches the scheduler.
#ifndef QL_OPENAI_H
#define QL_OPENAI_H

#include <stddef.h>

#include "../common/strbuf.h"
#include "../datasets/dataset.h"
#include "../infer/engine.h"

typedef enum { OAI_COMPLETIONS = 0, OAI_CHAT } oai_kind;

#define OAI_MAX_TARGETS 64  // entries of "adapters"
#define OAI_MAX_N 64        // choices per target
#define OAI_NAME_MAX 128

// One entry of the `adapters` extension: "name", "name:scale" or "base".
typedef struct {
    char name[OAI_NAME_MAX];  // an adapter, or "base"
    float scale;              // < 0: lora_scale
} oai_target;

typedef struct {
    oai_kind kind;
    char *model;                      // the "model" field
    char *prompt;                     // completions: the prompt (UTF-8)
    ds_message *msgs;                 // chat: the conversation (last turn: user)
    int n_msgs;
    int max_tokens;                   // -1: absent (completions: 16, chat: what the context leaves)
    float temperature, top_p;         // 1, 1 when absent
    int top_k;                        // 0 (off) when absent; vLLM's -1 reads as 0
    long long seed;                   // -1: absent
    char *stop[ENGINE_USER_STOPS + 1];  // NULL-terminated
    int stream, include_usage, n, ignore_eos;
    float lora_scale;                 // 1 when absent
    oai_target *targets;              // the `adapters` extension (n_targets 0: the model alone)
    int n_targets;
} oai_request;

// Parses body (len bytes) as a request of the given kind into r. On error: a
// QL_EFORMAT (or QL_ENOMEM) code, a message naming the field, what was expected
// and what was found (ql_errmsg), and the field's name in param (empty when the
// body as a whole is wrong). r is always safe to oai_request_free.
int oai_parse(oai_request *r /* out */, oai_kind kind, const char *body, size_t len, char *param, size_t param_cap);
void oai_request_free(oai_request *r);

// {"error": {"message", "type", "param", "code"}} into b. type: OpenAI's
// ("invalid_request_error", "authentication_error", "not_found_error", ...);
// param and code may be NULL (JSON null). qlora's extension, for a request that
// runs on several adapters (`adapters`): "adapter", the one the error concerns
// (a name given in `adapters`, "base" for the base), when adapter is not NULL,
// and "index", the choice it ended in a stream, when index >= 0.
int oai_error_json(strbuf *b, const char *message, const char *type, const char *param, const char *code,
                   const char *adapter, int index);

// Adapter and model names: infer/store.h's store_check_name (one folder of the
// store; OAI_NAME_MAX is STORE_NAME_MAX). QL_EINVAL with the reason otherwise.
int oai_check_name(const char *name);

#endif
