// tokenize_cmd.c: qlora tokenize, the tokenizer on its own (llama.cpp's
// llama-tokenize): one JSON string per line in, one JSON array of ids per line out,
// as the reference's encode(text, add_special_tokens=False) gives them.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/cli.h"
#include "../common/err.h"
#include "../common/json.h"
#include "../common/log.h"
#include "../model/model.h"
#include "../common/strbuf.h"
#include "../common/tokenizer.h"
#include "commands.h"

typedef struct {
    tokenizer *t;
    int bos;         // -1: none
} tok_pair;

// tokenizer_config.json's "bos_token" (a string or {"content"}) as an id, or -1.
static int bos_of_config(const char *dir, const tokenizer *t) {
    char p[4096], *buf = NULL, *s = NULL;
    size_t len;
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    if (file_read_all(p, 16u << 20, &buf, &len)) return -1;
    json_doc d;
    int id = -1;
    if (!json_parse(&d, buf, len, p)) {
        int v = json_find(&d, 0, "bos_token");
        if (v >= 0 && json_type(&d, v) == JSON_OBJECT) v = json_find(&d, v, "content");
        if (v >= 0 && json_type(&d, v) == JSON_STRING && !json_get_string(&d, v, "bos_token", &s, NULL))
            id = tok_piece_to_id(t, s);
        json_free(&d);
    }
    free(s), free(buf);
    return id;
}

static int open_tok(tok_pair *t, const char *dir, const char *base) {
    memset(t, 0, sizeof *t);
    t->bos = -1;
    if (dir[0]) {
        QL_CHECK(tok_load_dir(&t->t, dir));
        t->bos = tok_bos_id(t->t) >= 0 ? tok_bos_id(t->t) : bos_of_config(dir, t->t);
        return QL_OK;
    }
    model m;
    QL_CHECK(model_load(&m, base, DT_NF4));
    int rc = tok_load_bytes(&t->t, (tok_kind)m.tokenizer_kind, m.tokenizer, m.tokenizer_len, base);
    t->bos = m.cfg.bos_id;
    model_free(&m);
    return rc;
}

static int print_ids(const int *ids, int n, FILE *out) {
    fputc('[', out);
    for (int i = 0; i < n; i++) fprintf(out, i ? ", %d" : "%d", ids[i]);
    fputs("]\n", out);
    return QL_OK;
}

static int one_line(const tok_pair *t, const char *line, size_t len, int lineno, int bos, int pieces, int decode,
                    int literal, FILE *out) {
    // a JSON value on its own line: read it as the one item of an array
    strbuf w = {0};
    int rc = sb_add(&w, "[");
    if (!rc) rc = sb_addn(&w, line, len);
    if (!rc) rc = sb_add(&w, "]");
    char what[64];
    snprintf(what, sizeof what, "stdin:%d", lineno);
    json_doc d;
    if (!rc && (rc = json_parse(&d, w.s, w.n, what))) {
        sb_free(&w);
        return rc;
    }
    int v = rc ? -1 : json_item(&d, 0, 0);
    if (!rc && (json_size(&d, 0) != 1 || json_type(&d, v) != (decode ? JSON_ARRAY : JSON_STRING)))
        rc = ql_err(QL_EFORMAT, "%s: expected %s", what, decode ? "a JSON array of token ids" : "one JSON string");
    if (!rc && decode) {
        int n = json_size(&d, v), *ids = malloc(sizeof(int) * (size_t)(n + 1));
        if (!ids) rc = ql_err(QL_ENOMEM, "out of memory");
        for (int i = 0; i < n && !rc; i++) {
            long long x;
            rc = json_get_int(&d, json_item(&d, v, i), "id", &x);
            if (!rc && (x < 0 || x > 1 << 30)) rc = ql_err(QL_EFORMAT, "%s: id %lld out of range", what, x);
            if (!rc) ids[i] = (int)x;
        }
        char *text = NULL;
        size_t tl = 0;
        if (!rc) rc = tok_decode(t->t, ids, n, &text);
        if (!rc) {
            tl = strlen(text);
            strbuf q = {0};
            rc = sb_json(&q, text, tl);
            if (!rc) fprintf(out, "%s\n", q.s);
            sb_free(&q);
        }
        free(text), free(ids);
    } else if (!rc) {
        char *s = NULL;
        size_t sl = 0;
        int *ids = NULL, n = 0;
        rc = json_get_string(&d, v, "text", &s, &sl);
        if (!rc) rc = tok_encode(t->t, s, sl, literal ? 0 : TOK_SPECIAL, &ids, &n);
        if (!rc && bos) {
            if (t->bos < 0) rc = ql_err(QL_EINVAL, "--bos: this tokenizer has no BOS token");
            int *all = rc ? NULL : malloc(sizeof(int) * (size_t)(n + 1));
            if (!rc && !all) rc = ql_err(QL_ENOMEM, "out of memory");
            if (!rc) all[0] = t->bos, memcpy(all + 1, ids, sizeof(int) * (size_t)n), free(ids), ids = all, n++;
        }
        if (!rc && pieces) {
            strbuf q = {0};
            rc = sb_add(&q, "[");
            for (int i = 0; i < n && !rc; i++) {
                const char *p = tok_piece(t->t, ids[i]);
                if (i) rc = sb_add(&q, ", ");
                if (!rc) rc = sb_json(&q, p, strlen(p));
            }
            if (!rc) rc = sb_add(&q, "]");
            if (!rc) fprintf(out, "%s\n", q.s);
            sb_free(&q);
        } else if (!rc) rc = print_ids(ids, n, out);
        free(s), free(ids);
    }
    json_free(&d);
    sb_free(&w);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    const char *dir, *base;
    int bos, pieces, decode, literal, verbose;
    cli_opt opts[] = {
        {"--tokenizer", OPT_STR, &dir, "", "a directory with tokenizer.json (byte-level BPE) or tokenizer.model (SentencePiece)"},
        {"--base", OPT_STR, &base, "", "or a model: a Hugging Face directory or a qlora base file"},
        {"--bos", OPT_FLAG, &bos, NULL, "put the BOS token first"},
        {"--pieces", OPT_FLAG, &pieces, NULL, "print the pieces instead of the ids"},
        {"--decode", OPT_FLAG, &decode, NULL, "read JSON arrays of ids and print JSON strings"},
        {"--literal", OPT_FLAG, &literal, NULL, "special-token text is plain text (untrusted input)"},
        {"--verbose", OPT_FLAG, &verbose, NULL, "log more"},
    };
    int n = (int)(sizeof opts / sizeof *opts);
    int pr = cli_parse("tokenize",
                       "One JSON string per line on stdin -> one JSON array of token ids per line (special tokens "
                       "recognized, no BOS), as the reference tokenizer's encode(text, add_special_tokens=False).",
                       opts, n, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (verbose) log_set_level(LOG_DEBUG);
    if (!!dir[0] == !!base[0]) {
        fprintf(stderr, "qlora tokenize: error: give --tokenizer or --base (one of them)\n");
        return 2;
    }
    tok_pair t;
    int rc = open_tok(&t, dir, base);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    for (int lineno = 1; !rc && (len = getline(&line, &cap, stdin)) >= 0; lineno++) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        if (len == 0) continue;
        rc = one_line(&t, line, (size_t)len, lineno, bos, pieces, decode, literal, stdout);
    }
    free(line);
    fflush(stdout);
    tok_free(t.t);
    if (rc) {
        fprintf(stderr, "qlora tokenize: error: %s\n", ql_errmsg());
        return rc == QL_EINVAL ? 2 : 1;
    }
    return 0;
}
