// export_cmd.c: qlora export: an adapter (or the base) in another runtime's format.
#include "export_cmd.h"

#include <stdio.h>
#include <string.h>

#include "../common/cli.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../common/model.h"
#include "../common/spm.h"
#include "../train/peft.h"
#include "llama_gguf.h"
#include "merge.h"

static int fail(int rc) {
    fprintf(stderr, "qlora export: error: %s\n", ql_errmsg());
    return rc == QL_EINVAL ? 2 : 1;
}

int cmd_export(int argc, char **argv) {
    const char *adapter, *base, *format, *out, *dtype_name;
    int verbose;
    cli_opt opts[] = {
        {"--adapter", OPT_STR, &adapter, "", "the adapter directory (PEFT layout) to export"},
        {"--base", OPT_STR, &base, "", "the base model (a Hugging Face directory or a qlora base file)"},
        {"--format", OPT_STR, &format, NULL,
         "gguf (a llama.cpp LoRA), merged (a Hugging Face model with the adapter merged in) or gguf-base (the base)"},
        {"--out", OPT_STR, &out, NULL, "the file (gguf, gguf-base) or new directory (merged) to write, atomically"},
        {"--dtype", OPT_STR, &dtype_name, "f16", "f16, bf16 or f32"},
        {"--verbose", OPT_FLAG, &verbose, NULL, "log more"},
    };
    int pr = cli_parse("export", "Write an adapter, or the base, in another runtime's format.", opts,
                       (int)(sizeof opts / sizeof *opts), argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (verbose) log_set_level(LOG_DEBUG);
    dtype dt = !strcmp(dtype_name, "f16") ? DT_F16 : !strcmp(dtype_name, "bf16") ? DT_BF16 : !strcmp(dtype_name, "f32") ? DT_F32 : DT_COUNT;
    if (dt == DT_COUNT) return fail(ql_err(QL_EINVAL, "--dtype: expected f16, bf16 or f32, found '%s'", dtype_name));
    int gguf = !strcmp(format, "gguf"), gbase = !strcmp(format, "gguf-base"), merged = !strcmp(format, "merged");
    if (!gguf && !gbase && !merged)
        return fail(ql_err(QL_EINVAL, "--format: expected gguf, merged or gguf-base, found '%s'", format));
    if (!base[0]) return fail(ql_err(QL_EINVAL, "--format %s needs --base (the model the adapter was trained on)", format));
    if ((gguf || merged) && !adapter[0]) return fail(ql_err(QL_EINVAL, "--format %s needs --adapter", format));
    model m;
    // f32: the checkpoint's own values (a base file holds NF4: those are dequantized)
    int rc = model_load(&m, base, DT_F32);
    if (rc) return fail(rc);
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
        spm *tok = NULL;
        rc = spm_load_bytes(&tok, m.tokenizer, m.tokenizer_len);
        if (!rc) rc = gguf_write_base(&m, tok, dt, out);
        if (!rc) log_info("wrote %s: the base model for llama.cpp (%s) in %.2f s", out, dtype_name, time_now() - t0);
        spm_free(tok);
    }
    model_free(&m);
    return rc ? fail(rc) : 0;
}
