// tokenizer_fixture.h: checks common/spm.h against a fixture written by
// tests/reference/make_tokenizer_fixtures.sh (which documents the format): the
// ids spm_encode gave, the text spm_decode gave, and that streaming decode of the
// same ids concatenates to that text. Shared by tests/test_tokenizer.c (tiny
// tokenizer, label cpu) and tests/real/test_tokenizer_real.c (label real).
#ifndef QL_TOKENIZER_FIXTURE_H
#define QL_TOKENIZER_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/spm.h"
#include "testutil.h"

static int fixture_hex(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

// Undo the fixture escapes (\\ \t \n \r \xHH) of s[0..n); out needs n+1 bytes.
// Returns the length, or -1 on a bad escape.
static long fixture_unescape(char *out, const char *s, size_t n) {
    long k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') { out[k++] = s[i]; continue; }
        if (++i >= n) return -1;
        switch (s[i]) {
        case '\\': out[k++] = '\\'; break;
        case 't': out[k++] = '\t'; break;
        case 'n': out[k++] = '\n'; break;
        case 'r': out[k++] = '\r'; break;
        case 'x': {
            int hi, lo;
            if (i + 2 >= n || (hi = fixture_hex(s[i + 1])) < 0 || (lo = fixture_hex(s[i + 2])) < 0) return -1;
            out[k++] = (char)(hi * 16 + lo);
            i += 2;
            break;
        }
        default: return -1;
        }
    }
    out[k] = 0;
    return k;
}

// Parse space-separated decimal ids; *ids is malloc'd. Returns the count or -1.
static int fixture_parse_ids(const char *s, int **ids) {
    int n = 0, cap = 16;
    *ids = mallocCheck(cap * sizeof(int));
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) return -1;
        if (n == cap) {
            cap *= 2;
            int *p = realloc(*ids, cap * sizeof(int));
            QL_ASSERT(p);
            *ids = p;
        }
        (*ids)[n++] = (int)v;
        s = end;
        while (*s == ' ') s++;
    }
    return n;
}

// 1 when s[0..n) is valid UTF-8 (no overlongs, surrogates or values > U+10FFFF).
static int fixture_utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!len || i + len > n) return 0;
        for (size_t j = 1; j < len; j++)
            if ((s[i + j] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[i + 1] < 0xA0) return 0;
        if (c == 0xED && s[i + 1] > 0x9F) return 0;
        if (c == 0xF0 && s[i + 1] < 0x90) return 0;
        if (c == 0xF4 && s[i + 1] > 0x8F) return 0;
        i += len;
    }
    return 1;
}

// Streams ids through st one at a time; checks that the chunks concatenate to
// want[0..wn) and that each chunk is whole UTF-8 characters when want is.
static void fixture_check_stream(spm_stream *st, const int *ids, int n, const char *want, size_t wn, const char *what) {
    char *got = mallocCheck(wn + 64);
    size_t k = 0;
    int whole = fixture_utf8_valid((const unsigned char *)want, wn), overflow = 0;
    for (int i = 0; i <= n; i++) {
        const char *t;
        size_t len;
        int rc = i < n ? spm_stream_push(st, ids[i], &t, &len) : spm_stream_finish(st, &t, &len);
        CHECKF(rc == QL_OK, "%s: stream at token %d: %s", what, i, ql_errmsg());
        if (rc != QL_OK) { spm_stream_reset(st); break; }
        CHECKF(strlen(t) <= len, "%s: chunk %d not NUL-terminated at its length", what, i);
        if (whole) CHECKF(fixture_utf8_valid((const unsigned char *)t, len), "%s: chunk %d splits a UTF-8 character", what, i);
        if (k + len > wn) { overflow = 1; len = wn - k; }
        memcpy(got + k, t, len);
        k += len;
    }
    CHECKF(!overflow && k == wn && memcmp(got, want, wn) == 0, "%s: streamed %zu bytes \"%.*s\", decode is %zu bytes \"%.*s\"",
           what, k, (int)k, got, wn, (int)wn, want);
    free(got);
}

// Loads model_path, checks every record of fixture_path. Returns the number of
// records checked (failures are counted in test_failures).
static int fixture_check(const char *model_path, const char *fixture_path) {
    spm *s = NULL, *sb = NULL;
    CHECK_OK(spm_load_file(&s, model_path));
    if (!s) return 0;
    FILE *f = fopen(fixture_path, "rb");
    CHECKF(f != NULL, "cannot open fixture %s", fixture_path);
    if (!f) { spm_free(s); return 0; }

    // the same model loaded from memory must behave the same
    {
        FILE *m = fopen(model_path, "rb");
        QL_ASSERT(m);
        fseek(m, 0, SEEK_END);
        long sz = ftell(m);
        fseek(m, 0, SEEK_SET);
        char *bytes = mallocCheck(sz);
        QL_ASSERT(fread(bytes, 1, sz, m) == (size_t)sz);
        fclose(m);
        CHECK_OK(spm_load_bytes(&sb, bytes, sz));
        free(bytes);  // spm_load_bytes copies
    }

    // pieces round-trip through ids
    int nv = spm_vocab_size(s), bad = 0;
    for (int id = 0; id < nv; id++) {
        const char *p = spm_piece(s, id);
        if (!p || spm_piece_to_id(s, p) != id) bad++;
    }
    CHECKF(bad == 0, "%s: %d of %d pieces do not round-trip through spm_piece_to_id", model_path, bad, nv);
    CHECK(spm_piece(s, -1) == NULL && spm_piece(s, nv) == NULL);
    CHECK(spm_piece_to_id(s, "no such piece, surely") == -1);

    spm_stream *st = NULL;
    CHECK_OK(spm_stream_init(&st, s));
    QL_ASSERT(st);

    // every record's ids, BOS-separated, for one long stream at the end
    int *all = NULL, nall = 0, capall = 0;

    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, records = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[len - 1] == '\n') line[--len] = 0;
        if (len == 0 || line[0] == '#') continue;
        char *field[4] = {0};
        int nf = 0;
        for (char *p = line; nf < 4 && p; nf++) {
            field[nf] = p;
            p = strchr(p, '\t');
            if (p) *p++ = 0;
        }
        char where[256];
        snprintf(where, sizeof where, "%s:%d", fixture_path, lineno);
        if (strcmp(field[0], "model") == 0) {
            int v, unk, bos, eos, pad;
            CHECKF(nf == 3 && sscanf(field[2], "vocab=%d unk=%d bos=%d eos=%d pad=%d", &v, &unk, &bos, &eos, &pad) == 5,
                   "%s: bad model record", where);
            if (nf != 3) continue;
            CHECKF(v == nv, "%s: vocab %d, fixture says %d", where, nv, v);
            CHECKF(unk == spm_unk_id(s) && bos == spm_bos_id(s) && eos == spm_eos_id(s) && pad == spm_pad_id(s),
                   "%s: special ids unk=%d bos=%d eos=%d pad=%d, fixture says %s", where, spm_unk_id(s), spm_bos_id(s),
                   spm_eos_id(s), spm_pad_id(s), field[2]);
            continue;
        }
        int is_enc = strcmp(field[0], "enc") == 0;
        CHECKF(nf == 4 && (is_enc || strcmp(field[0], "dec") == 0), "%s: bad record (%d fields, kind %s)", where, nf, field[0]);
        if (nf != 4) continue;
        records++;

        int *want = NULL;
        int nwant = fixture_parse_ids(field[2], &want);
        char *text = mallocCheck(strlen(field[3]) + 1);
        long ntext = fixture_unescape(text, field[3], strlen(field[3]));
        CHECKF(nwant >= 0 && ntext >= 0, "%s: bad ids or escape", where);
        if (nwant < 0 || ntext < 0) { free(want); free(text); continue; }

        if (is_enc) {
            char *in = mallocCheck(strlen(field[1]) + 1);
            long nin = fixture_unescape(in, field[1], strlen(field[1]));
            CHECKF(nin >= 0, "%s: bad escape in input", where);
            for (int pass = 0; pass < 2 && nin >= 0; pass++) {
                const spm *m = pass ? sb : s;
                if (!m) continue;
                int *ids = NULL, n = -1;
                CHECK_OK(spm_encode(m, in, (size_t)nin, &ids, &n));
                int same = ids && n == nwant && (n == 0 || memcmp(ids, want, n * sizeof(int)) == 0);
                if (!same) {
                    fprintf(stderr, "%s: encode \"%s\"%s:\n  got ", where, field[1], pass ? " (model from bytes)" : "");
                    for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
                    fprintf(stderr, "\n  want %s\n", field[2]);
                }
                CHECKF(same, "%s: encode", where);
                free(ids);
            }
            free(in);
        }

        char *dec = NULL;
        CHECK_OK(spm_decode(s, want, nwant, &dec));
        CHECKF(dec && strlen(dec) == (size_t)ntext && memcmp(dec, text, ntext) == 0, "%s: decode gives \"%s\", want \"%s\"",
               where, dec ? dec : "(null)", field[3]);
        free(dec);
        fixture_check_stream(st, want, nwant, text, (size_t)ntext, where);

        if (nall + nwant + 1 > capall) {
            capall = 2 * (nall + nwant + 1);
            int *p = realloc(all, capall * sizeof(int));
            QL_ASSERT(p);
            all = p;
        }
        if (spm_bos_id(s) >= 0) all[nall++] = spm_bos_id(s);
        memcpy(all + nall, want, nwant * sizeof(int));
        nall += nwant;
        free(want);
        free(text);
    }
    free(line);
    fclose(f);
    CHECKF(records > 0, "%s: no records", fixture_path);

    // one long stream over all records: the window logic past many safe points
    char *dec = NULL;
    CHECK_OK(spm_decode(s, all, nall, &dec));
    if (dec) fixture_check_stream(st, all, nall, dec, strlen(dec), "all records in one stream");
    free(dec);
    free(all);

    fprintf(stderr, "%s: %d records, %d pieces checked\n", fixture_path, records, nv);
    spm_stream_free(st);
    spm_free(sb);
    spm_free(s);
    return records;
}

#endif
