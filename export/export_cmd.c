// export_cmd.c: qlora export: an adapter (or the base) in another runtime's format.
#include "export_cmd.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/cli.h"
#include "../common/err.h"
#include "../common/fileio.h"
#include "../common/json.h"
#include "../common/log.h"
#include "../model/model.h"
#include "../common/tokenizer.h"
#include "../train/peft.h"
#include "gguf.h"
#include "llama_gguf.h"
#include "merge.h"

static int fail(int rc) {
    fprintf(stderr, "qlora export: error: %s\n", ql_errmsg());
    return rc == QL_EINVAL ? 2 : 1;
}

// The adapter in our canonical PEFT form (the layout and config `qlora train`
// writes, in dt), from any PEFT writer's F32/F16/BF16, rsLoRA or not. Checked
// against --base when given, else against the shapes its own tensors imply.
// Built beside out (fileio.h adir) and renamed into place; out must not exist.
static int export_peft(const char *adapter, const char *base, dtype dt, const char *out) {
    model_config c;
    struct stat sb;
    if (strlen(out) > 4000 || strlen(adapter) > 4000) return ql_err(QL_EINVAL, "--out or --adapter: the path is too long");
    if (stat(out, &sb) == 0) return ql_err(QL_EINVAL, "--out %s already exists; remove it or choose another", out);
    int rc = base[0] ? (stat(base, &sb) == 0 && S_ISDIR(sb.st_mode) ? config_load_dir(&c, base) : QL_OK)
                     : lora_peft_shapes(&c, adapter);
    model m = {0};
    if (!rc && base[0] && !S_ISDIR(sb.st_mode)) {  // a base file: its embedded config
        rc = model_load(&m, base, DT_NF4);
        c = m.cfg;
    }
    lora_adapter a = {0};
    if (!rc) rc = lora_load_peft(&a, &c, adapter);
    if (!rc && base[0]) {  // base_model_name_or_path: --base's name (lora_base_model_name), not what the adapter said
        free(a.base_model);
        if (!(a.base_model = strdup(base))) rc = ql_err(QL_ENOMEM, "out of memory");
    }
    char *rec = NULL, rpath[8400];
    size_t rlen;
    snprintf(rpath, sizeof rpath, "%s/%s", adapter, PEFT_RECORD_NAME);
    if (!rc && stat(rpath, &sb) == 0) rc = file_read_all(rpath, (size_t)64 << 20, &rec, &rlen);
    adir od = {0};
    if (!rc && !(rc = adir_open(&od, out))) {
        od.no_replace = 1;
        rc = lora_write_peft_files(&a, od.tmp, rec, dt);
        if (rc) rc = adir_fail(&od, rc);  // nothing half-written stays
        else rc = adir_commit(&od);
    }
    if (!rc)
        log_info("wrote %s: r %d, alpha %g%s, %s; checked against %s", out, a.rank, (double)a.alpha,
                 a.use_rslora ? " (rsLoRA)" : "", dtype_name(dt), base[0] ? base : "its own shapes");
    free(rec);
    lora_free(&a);
    if (base[0] && m.layers) model_free(&m);
    return rc;
}

static int same_file(const char *a, const char *b) {
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

// A file --out (gguf, gguf-base): new, or with --overwrite an existing regular
// file that is not an input (the base file, or a file in the base's or the
// adapter's directory).
static int check_file_out(const char *out, int overwrite, const char *base, const char *adapter) {
    struct stat st;
    if (lstat(out, &st) != 0) return QL_OK;
    char *d = strdup(out);
    if (!d) return ql_err(QL_ENOMEM, "out of memory");
    char *slash = strrchr(d, '/');
    const char *parent = slash ? (slash == d ? "/" : (*slash = 0, d)) : ".";
    int input = same_file(out, base) || (base[0] && same_file(parent, base)) || (adapter[0] && same_file(parent, adapter));
    free(d);
    if (!S_ISREG(st.st_mode)) return ql_err(QL_EINVAL, "--out %s exists and is not a regular file; not replaced", out);
    if (input) return ql_err(QL_EINVAL, "--out %s is an input of this export (the base, or a file in the base's or the "
                             "adapter's directory); not replaced, even with --overwrite", out);
    if (!overwrite) return ql_err(QL_EINVAL, "--out %s already exists; give --overwrite to replace it", out);
    return QL_OK;
}

int cmd_export(int argc, char **argv) {
    const char *adapter, *base, *format, *out, *dtype_name, *qtype;
    int verbose, overwrite;
    cli_opt opts[] = {
        {"--adapter", OPT_STR, &adapter, "", "the adapter directory (PEFT layout) to export"},
        {"--base", OPT_STR, &base, "", "the base model (a Hugging Face directory or a qlora base file)"},
        {"--format", OPT_STR, &format, NULL,
         "peft (our canonical PEFT directory), gguf (a llama.cpp LoRA), merged (a Hugging Face model with the "
         "adapter merged in; its config.json loads in transformers) or gguf-base (the base, for llama.cpp)"},
        {"--out", OPT_STR, &out, NULL, "the file (gguf, gguf-base) or new directory (peft, merged) to write, atomically"},
        {"--dtype", OPT_STR, &dtype_name, "f16", "f16, bf16 or f32 (merged: config.json's torch_dtype says it)"},
        {"--type", OPT_STR, &qtype, "",
         "gguf-base only: q8_0 or q4_0, the weight matrices quantized as llama-quantize --pure does (norms stay f32; "
         "a matrix whose rows are not a multiple of 32 values is written f16); instead of --dtype"},
        {"--overwrite", OPT_FLAG, &overwrite, NULL, "gguf, gguf-base: replace an existing --out file (never an input)"},
        {"--verbose", OPT_FLAG, &verbose, NULL, "log more"},
    };
    int pr = cli_parse("export", "Write an adapter, or the base, in another runtime's format.", opts,
                       (int)(sizeof opts / sizeof *opts), argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (verbose) log_set_level(LOG_DEBUG);
    int rc;
    dtype dt = !strcmp(dtype_name, "f16") ? DT_F16 : !strcmp(dtype_name, "bf16") ? DT_BF16 : !strcmp(dtype_name, "f32") ? DT_F32 : DT_COUNT;
    if (dt == DT_COUNT) return fail(ql_err(QL_EINVAL, "--dtype: expected f16, bf16 or f32, found '%s'", dtype_name));
    int gguf = !strcmp(format, "gguf"), gbase = !strcmp(format, "gguf-base"), merged = !strcmp(format, "merged");
    int peft = !strcmp(format, "peft");
    if (!gguf && !gbase && !merged && !peft)
        return fail(ql_err(QL_EINVAL, "--format: expected peft, gguf, merged or gguf-base, found '%s'", format));
    // the GGUF base's matrices: --type when given, else --dtype
    int gtype = !qtype[0] ? gguf_type_of(dt) : !strcmp(qtype, "q8_0") ? GGML_Q8_0 : !strcmp(qtype, "q4_0") ? GGML_Q4_0 : -1;
    if (gtype < 0) return fail(ql_err(QL_EINVAL, "--type: expected q8_0 or q4_0, found '%s'", qtype));
    if (qtype[0] && !gbase)
        return fail(ql_err(QL_EINVAL, "--type %s: only --format gguf-base quantizes (found --format %s); use --dtype",
                           qtype, format));
    if (qtype[0] && dt != DT_F16)
        return fail(ql_err(QL_EINVAL, "--type %s with --dtype %s: give one of them (with --type the matrices are %s, "
                           "f16 where a row is not a multiple of 32 values)", qtype, dtype_name, qtype));
    if (!base[0] && !peft)
        return fail(ql_err(QL_EINVAL, "--format %s needs --base (the model the adapter was trained on)", format));
    if (!gbase && !adapter[0]) return fail(ql_err(QL_EINVAL, "--format %s needs --adapter", format));
    if ((gguf || gbase) && (rc = check_file_out(out, overwrite, base, adapter))) return fail(rc);
    // a directory out: one writer at a time (a second gets an error naming the first)
    out_lock_t lock = {.fd = -1};
    if ((peft || merged) && (rc = out_lock(&lock, out))) return fail(rc);
    if (peft) {
        rc = export_peft(adapter, base, dt, out);
        out_unlock(&lock);
        return rc ? fail(rc) : 0;
    }
    model m;
    // f32: the checkpoint's own values (a base file holds NF4: those are dequantized)
    rc = model_load(&m, base, DT_F32);
    if (rc) { out_unlock(&lock); return fail(rc); }
    if (m.base_dtype == DT_NF4 && !gguf)
        log_warn("%s holds NF4 weights: the output gets them dequantized, not the original checkpoint's values", base);
    double t0 = time_now();
    if (merged) {
        lora_adapter a = {0};
        rc = lora_load_peft(&a, &m.cfg, adapter);
        if (!rc) rc = export_merged(&m, &a, base, dt, out);
        if (!rc)  // say plainly what the adapter went into (merging into dequantized NF4: peft#1043)
            printf("merged %s into %s weights of %s -> %s (%s)\n", adapter,
                   m.base_dtype == DT_NF4 ? "the NF4-DEQUANTIZED (not the original)" : "the original", base, out,
                   dtype_name);
        lora_free(&a);
    } else if (gguf) {
        lora_adapter a = {0};
        rc = lora_load_peft(&a, &m.cfg, adapter);
        if (!rc) rc = gguf_write_lora(&a, &m.cfg, dt, out);
        if (!rc)
            log_info("wrote %s: a llama.cpp LoRA (r %d, scaling %g, %s) in %.2f s; use: llama-cli -m BASE.gguf --lora %s",
                     out, a.rank, (double)a.scaling, dtype_name, time_now() - t0, out);
        lora_free(&a);
    } else {
        tokenizer *tok = NULL;
        rc = tok_load_bytes(&tok, (tok_kind)m.tokenizer_kind, m.tokenizer, m.tokenizer_len, base);
        if (!rc) rc = gguf_write_base(&m, tok, gtype, out);
        if (!rc)
            log_info("wrote %s: the base model for llama.cpp (%s) in %.2f s", out, qtype[0] ? qtype : dtype_name,
                     time_now() - t0);
        tok_free(tok);
    }
    model_free(&m);
    out_unlock(&lock);
    return rc ? fail(rc) : 0;
}
