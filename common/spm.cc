// spm.cc: see spm.h. The project's only C++ file: a thin shim over
// sentencepiece::SentencePieceProcessor. Every entry point catches all exceptions
// (allocation failures included) and turns them into a status and a message.
#include "common/spm.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <sentencepiece_processor.h>

extern "C" {
#include "common/err.h"
}

struct spm {
    sentencepiece::SentencePieceProcessor sp;
    int n;  // vocab size
};

struct spm_stream {
    const spm *s;
    // The ids decoded together: [anchor] + ids since the last safe point. Once the
    // output is non-empty, the decoding of what follows no longer depends on the
    // earlier ids (no leading "▁" left to strip), so they are replaced by one
    // anchor piece of known text; only a byte run that may still grow into a
    // UTF-8 character keeps the window open.
    std::vector<int> win;
    std::string done;  // decode(win minus held tail): the part already returned
    size_t total;      // bytes returned since the start of the sequence
    int anchor;        // a piece whose decoding alone is non-empty, or -1
    std::string anchor_text;
    std::string out;  // what the last call returned
};

namespace {

int err_status(int code, const char *what, const sentencepiece::util::Status &st) {
    return ql_err(code, "%s: %s", what, st.ToString().c_str());
}

int load_serialized(spm **out, const char *name, const char *data, size_t len) {
    spm *s = new spm();
    sentencepiece::util::Status st = s->sp.LoadFromSerializedProto(std::string_view(data, len));
    if (!st.ok()) {
        delete s;
        std::string why = st.ToString();
        while (!why.empty() && (why.back() == ' ' || why.back() == '\n')) why.pop_back();
        return ql_err(QL_EFORMAT, "%s: not a valid SentencePiece model (%zu bytes; want a serialized ModelProto "
                      "such as tokenizer.model): %s", name, len, why.c_str());
    }
    s->n = s->sp.GetPieceSize();
    if (s->n <= 0) {
        delete s;
        return ql_err(QL_EFORMAT, "%s: SentencePiece model has no pieces", name);
    }
    *out = s;
    return QL_OK;
}

// byte value of a byte fallback piece "<0xNN>"
int piece_byte(const spm *s, int id) {
    const std::string &p = s->sp.IdToPiece(id);
    unsigned v = 0;
    if (p.size() != 6 || std::sscanf(p.c_str(), "<0x%2X>", &v) != 1) return -1;
    return (int)v;
}

// How many ids at the end of win to hold back: the byte pieces from the last
// UTF-8 lead byte on, when that character is not complete yet. Holding is always
// safe: a lead byte can never be the continuation of an earlier character, so the
// decoding of everything before it is final.
size_t held_tail(const spm_stream *st) {
    const std::vector<int> &w = st->win;
    size_t n = w.size();
    for (size_t k = 1; k <= 4 && k <= n; k++) {
        int id = w[n - k];
        if (!st->s->sp.IsByte(id)) return 0;
        int b = piece_byte(st->s, id);
        if (b < 0) return 0;
        if ((b & 0xC0) == 0x80) continue;  // continuation byte: look further back
        size_t need = b >= 0xF0 && b <= 0xF7 ? 4 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xC0 && b <= 0xDF ? 2 : 1;
        return k < need ? k : 0;
    }
    return 0;
}

int decode_vec(const spm *s, const std::vector<int> &ids, std::string *text) {
    sentencepiece::util::Status st = s->sp.Decode(ids, text);
    if (!st.ok()) return err_status(QL_EINVAL, "spm_decode", st);
    return QL_OK;
}

void stream_clear(spm_stream *st) {
    st->win.clear();
    st->done.clear();
    st->total = 0;
}

int stream_emit(spm_stream *st, size_t hold, const char **text_out, size_t *len_out) {
    std::vector<int> ids(st->win.begin(), st->win.end() - (std::ptrdiff_t)hold);
    std::string full;
    QL_CHECK(decode_vec(st->s, ids, &full));
    // Held back bytes make this impossible; a model with denormalization rules could.
    if (full.compare(0, st->done.size(), st->done) != 0)
        return ql_err(QL_EUNSUP, "spm_stream: the decoding of earlier tokens changed (model with denormalization rules?)");
    st->out.assign(full, st->done.size(), std::string::npos);
    st->done.swap(full);
    st->total += st->out.size();
    *text_out = st->out.c_str();
    *len_out = st->out.size();
    return QL_OK;
}

}  // namespace

extern "C" {

int spm_load_file(spm **out, const char *path) {
    *out = nullptr;
    try {
        FILE *f = std::fopen(path, "rb");
        if (!f) return ql_err(QL_EIO, "%s: cannot open tokenizer: %s", path, std::strerror(errno));
        std::string data;
        char buf[1 << 16];
        size_t got;
        while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) data.append(buf, got);
        int bad = std::ferror(f);
        int e = errno;
        std::fclose(f);
        if (bad) return ql_err(QL_EIO, "%s: cannot read tokenizer: %s", path, std::strerror(e));
        if (data.empty()) return ql_err(QL_EFORMAT, "%s: tokenizer file is empty", path);
        return load_serialized(out, path, data.data(), data.size());
    } catch (const std::bad_alloc &) {
        return ql_err(QL_ENOMEM, "%s: out of memory loading tokenizer", path);
    } catch (const std::exception &ex) {
        return ql_err(QL_EFORMAT, "%s: loading tokenizer failed: %s", path, ex.what());
    } catch (...) {
        return ql_err(QL_EFORMAT, "%s: loading tokenizer failed", path);
    }
}

int spm_load_bytes(spm **out, const void *data, size_t len) {
    *out = nullptr;
    if (!data || len == 0) return ql_err(QL_EFORMAT, "tokenizer bytes: empty (%zu bytes)", len);
    try {
        return load_serialized(out, "tokenizer bytes", (const char *)data, len);
    } catch (const std::bad_alloc &) {
        return ql_err(QL_ENOMEM, "tokenizer bytes: out of memory loading tokenizer");
    } catch (...) {
        return ql_err(QL_EFORMAT, "tokenizer bytes: loading tokenizer failed");
    }
}

void spm_free(spm *s) {
    delete s;
}

int spm_vocab_size(const spm *s) { return s->n; }
int spm_bos_id(const spm *s) { return s->sp.bos_id(); }
int spm_eos_id(const spm *s) { return s->sp.eos_id(); }
int spm_unk_id(const spm *s) { return s->sp.unk_id(); }
int spm_pad_id(const spm *s) { return s->sp.pad_id(); }

int spm_encode(const spm *s, const char *text, size_t len, int **ids_out, int *n_out) {
    *ids_out = nullptr;
    *n_out = 0;
    try {
        std::vector<int> ids;
        sentencepiece::util::Status st = s->sp.Encode(std::string_view(text ? text : "", text ? len : 0), &ids);
        if (!st.ok()) return err_status(QL_EINVAL, "spm_encode", st);
        int *p = (int *)std::malloc((ids.size() ? ids.size() : 1) * sizeof(int));
        if (!p) return ql_err(QL_ENOMEM, "spm_encode: out of memory for %zu ids", ids.size());
        if (!ids.empty()) std::memcpy(p, ids.data(), ids.size() * sizeof(int));
        *ids_out = p;
        *n_out = (int)ids.size();
        return QL_OK;
    } catch (const std::bad_alloc &) {
        return ql_err(QL_ENOMEM, "spm_encode: out of memory encoding %zu bytes", len);
    } catch (...) {
        return ql_err(QL_EINVAL, "spm_encode: encoding %zu bytes failed", len);
    }
}

int spm_decode(const spm *s, const int *ids, int n, char **text_out) {
    *text_out = nullptr;
    if (n < 0) return ql_err(QL_EINVAL, "spm_decode: negative length %d", n);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->n)
            return ql_err(QL_EINVAL, "spm_decode: id %d at index %d is out of range [0, %d)", ids[i], i, s->n);
    try {
        std::string text;
        QL_CHECK(decode_vec(s, std::vector<int>(ids, ids + n), &text));
        char *p = (char *)std::malloc(text.size() + 1);
        if (!p) return ql_err(QL_ENOMEM, "spm_decode: out of memory for %zu bytes", text.size());
        std::memcpy(p, text.data(), text.size());
        p[text.size()] = 0;
        *text_out = p;
        return QL_OK;
    } catch (const std::bad_alloc &) {
        return ql_err(QL_ENOMEM, "spm_decode: out of memory decoding %d ids", n);
    } catch (...) {
        return ql_err(QL_EINVAL, "spm_decode: decoding %d ids failed", n);
    }
}

float spm_piece_score(const spm *s, int id) {
    if (id < 0 || id >= s->n) return 0;
    return s->sp.GetScore(id);
}

int spm_piece_kind(const spm *s, int id) {
    if (id < 0 || id >= s->n) return 0;
    if (s->sp.IsUnknown(id)) return 2;
    if (s->sp.IsControl(id)) return 3;
    if (s->sp.IsUnused(id)) return 5;
    if (s->sp.IsByte(id)) return 6;
    return 1;  // user-defined pieces too: the processor's public API does not tell them apart
}

const char *spm_piece(const spm *s, int id) {
    if (id < 0 || id >= s->n) return nullptr;
    try {
        return s->sp.IdToPiece(id).c_str();
    } catch (...) {
        return nullptr;
    }
}

int spm_piece_to_id(const spm *s, const char *piece) {
    try {
        int id = s->sp.PieceToId(piece);
        // PieceToId answers unk_id for anything unknown: tell the two apart.
        if (id < 0 || id >= s->n || s->sp.IdToPiece(id) != piece) return -1;
        return id;
    } catch (...) {
        return -1;
    }
}

int spm_stream_init(spm_stream **out, const spm *s) {
    *out = nullptr;
    try {
        spm_stream *st = new spm_stream();
        st->s = s;
        st->anchor = -1;
        // The anchor: unk (" ⁇ ") when it decodes to text, else the first normal piece that does.
        std::string t;
        for (int id = -1; id < s->n && st->anchor < 0; id++) {
            int cand = id < 0 ? s->sp.unk_id() : id;
            if (cand < 0 || cand >= s->n || s->sp.IsControl(cand) || s->sp.IsByte(cand)) continue;
            if (id >= 0 && (s->sp.IsUnknown(cand) || s->sp.IsUnused(cand))) continue;
            if (!s->sp.Decode(std::vector<int>{cand}, &t).ok() || t.empty()) continue;
            st->anchor = cand;
            st->anchor_text = t;
        }
        stream_clear(st);
        *out = st;
        return QL_OK;
    } catch (const std::bad_alloc &) {
        return ql_err(QL_ENOMEM, "spm_stream_init: out of memory");
    } catch (...) {
        return ql_err(QL_EINVAL, "spm_stream_init: failed");
    }
}

void spm_stream_free(spm_stream *st) {
    delete st;
}

void spm_stream_reset(spm_stream *st) {
    stream_clear(st);
}

int spm_stream_push(spm_stream *st, int id, const char **text_out, size_t *len_out) {
    *text_out = "";
    *len_out = 0;
    if (id < 0 || id >= st->s->n)
        return ql_err(QL_EINVAL, "spm_stream_push: id %d is out of range [0, %d)", id, st->s->n);
    try {
        st->win.push_back(id);
        size_t hold = held_tail(st);
        int rc = stream_emit(st, hold, text_out, len_out);
        if (rc != QL_OK) {
            st->win.pop_back();
            return rc;
        }
        // Safe point: nothing held and the output is non-empty, so no later piece
        // loses a leading space; restart the window from the anchor.
        if (hold == 0 && st->total > 0 && st->anchor >= 0 && st->win.size() > 1) {
            st->win.assign(1, st->anchor);
            st->done = st->anchor_text;
        }
        return QL_OK;
    } catch (const std::bad_alloc &) {
        return ql_err(QL_ENOMEM, "spm_stream_push: out of memory");
    } catch (...) {
        return ql_err(QL_EINVAL, "spm_stream_push: failed on id %d", id);
    }
}

int spm_stream_finish(spm_stream *st, const char **text_out, size_t *len_out) {
    *text_out = "";
    *len_out = 0;
    try {
        int rc = stream_emit(st, 0, text_out, len_out);
        stream_clear(st);
        return rc;
    } catch (const std::bad_alloc &) {
        return ql_err(QL_ENOMEM, "spm_stream_finish: out of memory");
    } catch (...) {
        return ql_err(QL_EINVAL, "spm_stream_finish: failed");
    }
}

}  // extern "C"
