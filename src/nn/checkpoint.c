/* src/nn/checkpoint.c - safetensors checkpoints: an 8-byte little-endian header length, a JSON
 * header ({"__metadata__": {string: string}, name: {"dtype", "shape", "data_offsets"}}) padded
 * with spaces to 8 bytes, then the tensors' bytes (little-endian, this library's hosts).
 * Loading checks the header's sizes, offsets, dtypes and shapes against the model before it
 * changes anything; saving goes to a temporary file that is fsynced and renamed over the old. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bnorm/nn.h"
#include "util/internal.h"

#define MAX_HEADER (64u << 20)

void bnorm_free_string(char *s) {
    free(s);
} /* cJSON's print allocates with malloc */

static void optimizer_name(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "optimizer.%s.momentum_buffer", name);
}

static cJSON *tensor_json(const char *dtype, const int64_t *shape, int ndim, size_t begin,
                          size_t end) {
    cJSON *o = cJSON_CreateObject(), *sh = cJSON_CreateArray(), *off = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "dtype", dtype);
    for (int i = 0; i < ndim; i++)
        cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)shape[i]));
    cJSON_AddItemToObject(o, "shape", sh);
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)begin));
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)end));
    cJSON_AddItemToObject(o, "data_offsets", off);
    return o;
}

bnorm_status bnorm_checkpoint_save(const bnorm_model *m, const char *path, const char *const *keys,
                                   const char *const *values, int nmeta) {
    static const char fn[] = "bnorm_checkpoint_save";
    if (!m || !path || (nmeta > 0 && (!keys || !values)))
        return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: NULL argument", fn);
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "format", "pt");
    cJSON_AddStringToObject(meta, "bnorm_format", "1");
    cJSON_AddStringToObject(meta, "spec", bnorm_model_spec(m));
    for (int i = 0; i < nmeta; i++)
        cJSON_AddStringToObject(meta, keys[i], values[i]);
    cJSON_AddItemToObject(root, "__metadata__", meta);
    size_t off = 0;
    const int n = bnorm_model_tensor_count(m);
    for (int pass = 0; pass < 2; pass++) /* the model's tensors, then the momentum buffers */
        for (int i = 0; i < n; i++) {
            bnorm_named_tensor t;
            bnorm_model_tensor(m, i, &t);
            if (pass == 1 && !t.momentum) continue;
            const size_t bytes = (size_t)t.numel * (t.is_int64 ? 8 : 4);
            char name[96];
            if (pass == 1) optimizer_name(name, sizeof name, t.name);
            cJSON_AddItemToObject(
                root, pass ? name : t.name,
                tensor_json(t.is_int64 ? "I64" : "F32", t.shape, t.ndim, off, off + bytes));
            off += bytes;
        }
    char *header = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!header) return bnorm__fail(BNORM_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
    const size_t hlen = strlen(header), padded = (hlen + 7) / 8 * 8;

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(header);
        return bnorm__fail(BNORM_ERR_IO, "%s: cannot create '%s'", fn, tmp);
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(header, 1, hlen, f) == hlen;
    for (size_t i = hlen; ok && i < padded; i++)
        ok = fputc(' ', f) != EOF;
    free(header);
    for (int pass = 0; pass < 2 && ok; pass++)
        for (int i = 0; i < n && ok; i++) {
            bnorm_named_tensor t;
            bnorm_model_tensor(m, i, &t);
            const void *src = pass ? (const void *)t.momentum : t.data;
            if (pass == 1 && !src) continue;
            const size_t bytes = (size_t)t.numel * (t.is_int64 ? 8 : 4);
            ok = fwrite(src, 1, bytes, f) == bytes;
        }
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return bnorm__fail(BNORM_ERR_IO, "%s: cannot write '%s'", fn, path);
    }
    return BNORM_OK;
}

/* The file's bytes and its parsed header. */
typedef struct {
    unsigned char *bytes;
    size_t size, data_off;
    cJSON *header;
} st_file;

static void st_close(st_file *f) {
    bnorm__free(f->bytes);
    cJSON_Delete(f->header);
}

static bnorm_status st_open(const char *path, st_file *out, const char *fn) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return bnorm__fail(BNORM_ERR_IO, "%s: cannot open '%s'", fn, path);
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return bnorm__fail(BNORM_ERR_IO, "%s: cannot read '%s'", fn, path);
    }
    out->bytes = bnorm__malloc((size_t)size + 1);
    if (!out->bytes) {
        fclose(f);
        return bnorm__fail(BNORM_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    const size_t got = fread(out->bytes, 1, (size_t)size, f);
    fclose(f);
    out->size = (size_t)size;
    if (got != (size_t)size) {
        st_close(out);
        return bnorm__fail(BNORM_ERR_IO, "%s: cannot read '%s'", fn, path);
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8 && out->size >= 8; i++)
        hlen |= (uint64_t)out->bytes[i] << (8 * i);
    if (out->size < 8 || hlen > MAX_HEADER || hlen > out->size - 8) {
        st_close(out);
        return bnorm__fail(BNORM_ERR_FORMAT,
                           "%s: '%s' is not a safetensors file (header length %llu, file %zu "
                           "bytes)",
                           fn, path, (unsigned long long)hlen, out->size);
    }
    out->header = cJSON_ParseWithLength((const char *)out->bytes + 8, (size_t)hlen);
    out->data_off = 8 + (size_t)hlen;
    if (!out->header || !cJSON_IsObject(out->header)) {
        st_close(out);
        return bnorm__fail(BNORM_ERR_FORMAT, "%s: '%s' has a malformed safetensors header", fn,
                           path);
    }
    return BNORM_OK;
}

/* Finds `name` and checks its dtype, shape and offsets; returns its bytes. */
static bnorm_status st_tensor(const st_file *f, const char *path, const char *name,
                              const char *dtype, const int64_t *shape, int ndim, size_t bytes,
                              const unsigned char **data, const char *fn) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(f->header, name);
    if (!t)
        return bnorm__fail(BNORM_ERR_FORMAT, "%s: '%s' has no tensor '%s' (another model?)", fn,
                           path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(t, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    if (!cJSON_IsString(dt) || strcmp(dt->valuestring, dtype) != 0)
        return bnorm__fail(BNORM_ERR_FORMAT, "%s: '%s': tensor '%s' is not %s", fn, path, name,
                           dtype);
    int ok = cJSON_IsArray(sh) && cJSON_GetArraySize(sh) == ndim;
    for (int i = 0; ok && i < ndim; i++) {
        const cJSON *d = cJSON_GetArrayItem(sh, i);
        ok = cJSON_IsNumber(d) && d->valuedouble == (double)shape[i];
    }
    if (!ok)
        return bnorm__fail(BNORM_ERR_FORMAT,
                           "%s: '%s': tensor '%s' has another shape than the "
                           "model's (another model?)",
                           fn, path, name);
    const cJSON *b = cJSON_GetArrayItem(off, 0), *e = cJSON_GetArrayItem(off, 1);
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !cJSON_IsNumber(b) ||
        !cJSON_IsNumber(e) || b->valuedouble < 0 ||
        e->valuedouble != b->valuedouble + (double)bytes ||
        e->valuedouble > (double)(f->size - f->data_off))
        return bnorm__fail(BNORM_ERR_FORMAT, "%s: '%s': tensor '%s' has bad data offsets", fn, path,
                           name);
    *data = f->bytes + f->data_off + (size_t)b->valuedouble;
    return BNORM_OK;
}

static bnorm_status meta_json(const st_file *f, char **out) {
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(f->header, "__metadata__");
    *out = meta ? cJSON_PrintUnformatted(meta) : NULL;
    if (!*out) {
        *out = malloc(3);
        if (*out) strcpy(*out, "{}");
    }
    return *out ? BNORM_OK : bnorm__fail(BNORM_ERR_OUT_OF_MEMORY, "checkpoint: out of memory");
}

bnorm_status bnorm_checkpoint_metadata(const char *path, char **meta) {
    static const char fn[] = "bnorm_checkpoint_metadata";
    if (!path || !meta) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: NULL argument", fn);
    st_file f;
    bnorm_status st = st_open(path, &f, fn);
    if (st) return st;
    st = meta_json(&f, meta);
    st_close(&f);
    return st;
}

bnorm_status bnorm_checkpoint_load(bnorm_model *m, const char *path, char **meta) {
    static const char fn[] = "bnorm_checkpoint_load";
    if (!m || !path) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: NULL argument", fn);
    st_file f;
    bnorm_status st = st_open(path, &f, fn);
    if (st) return st;
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(f.header, "__metadata__");
    const cJSON *spec = md ? cJSON_GetObjectItemCaseSensitive(md, "spec") : NULL;
    if (!cJSON_IsString(spec) || strcmp(spec->valuestring, bnorm_model_spec(m)) != 0) {
        st = bnorm__fail(BNORM_ERR_FORMAT, "%s: '%s' holds model '%s', not '%s'", fn, path,
                         cJSON_IsString(spec) ? spec->valuestring : "(no spec)",
                         bnorm_model_spec(m));
        st_close(&f);
        return st;
    }
    /* validate everything, then copy: an error changes nothing */
    const int n = bnorm_model_tensor_count(m);
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n && !st; i++) {
            bnorm_named_tensor t;
            bnorm_model_tensor(m, i, &t);
            char oname[96];
            optimizer_name(oname, sizeof oname, t.name);
            const size_t bytes = (size_t)t.numel * (t.is_int64 ? 8 : 4);
            const unsigned char *src;
            st = st_tensor(&f, path, t.name, t.is_int64 ? "I64" : "F32", t.shape, t.ndim, bytes,
                           &src, fn);
            if (!st && pass) memcpy(t.data, src, bytes);
            if (st || !t.momentum) continue;
            st = st_tensor(&f, path, oname, "F32", t.shape, t.ndim, bytes, &src, fn);
            if (!st && pass) memcpy(t.momentum, src, bytes);
        }
    if (!st && meta) st = meta_json(&f, meta);
    st_close(&f);
    return st;
}
