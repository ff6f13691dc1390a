/* tests/test_checkpoint.c - safetensors checkpoints: a round trip restores every tensor bit for
 * bit; a resumed run equals an uninterrupted one; another model's file, a corrupt header, a
 * truncated file and a missing file fail with a message and change nothing. */
#define _POSIX_C_SOURCE 200809L
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "nn_testutil.h"

#define SPEC "conv(4,3,pad=1) bn relu maxpool(2) flatten linear(16) bn relu dropout(0.2) linear(4)"

static bnorm_model *make(const char *spec) {
    bnorm_model_options mo = bnorm_model_options_default();
    mo.in_h = mo.in_w = 8, mo.max_batch = 16, mo.seed = 4;
    bnorm_model *m = NULL;
    if (bnorm_model_create(&m, spec, &mo) != BNORM_OK) fprintf(stderr, "%s\n", bnorm_last_error());
    return m;
}

static int same_state_q(bnorm_model *a, bnorm_model *b, int quiet) {
    for (int i = 0; i < bnorm_model_tensor_count(a); i++) {
        bnorm_named_tensor ta, tb;
        bnorm_model_tensor(a, i, &ta);
        bnorm_model_tensor(b, i, &tb);
        const size_t bytes = (size_t)ta.numel * (ta.is_int64 ? 8 : 4);
        if (memcmp(ta.data, tb.data, bytes) != 0 ||
            (ta.momentum && memcmp(ta.momentum, tb.momentum, bytes) != 0)) {
            if (!quiet) fprintf(stderr, "  tensor %s differs\n", ta.name);
            return 0;
        }
    }
    return 1;
}

static int same_state(bnorm_model *a, bnorm_model *b) {
    return same_state_q(a, b, 0);
}

static size_t file_size(const char *p) {
    FILE *f = fopen(p, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fclose(f);
    return n > 0 ? (size_t)n : 0;
}

int main(void) {
    char path[256], other[256], tmp[300];
    snprintf(path, sizeof path, "/tmp/bnorm_ckpt_%ld.safetensors", (long)getpid());
    snprintf(other, sizeof other, "/tmp/bnorm_ckpt_%ld_bad.safetensors", (long)getpid());
    synth_data sd;
    synth_make(&sd, 96, 8, 4, 3);
    bnorm_train_config tc = bnorm_train_config_default();
    tc.batch = 16, tc.epochs = 2, tc.lr = 0.1, tc.mean = 0.2, tc.std = 0.3;
    tc.augment.hflip = 1;
    bnorm_epoch_stats es;

    /* uninterrupted: epochs 0 and 1 */
    bnorm_model *a = make(SPEC);
    CHECK_OK(bnorm_train_epoch(a, &sd.ds, &tc, 0, &es, NULL, NULL));
    CHECK_OK(bnorm_train_epoch(a, &sd.ds, &tc, 1, &es, NULL, NULL));
    /* interrupted after epoch 0, saved, resumed in a fresh model */
    bnorm_model *b = make(SPEC);
    CHECK_OK(bnorm_train_epoch(b, &sd.ds, &tc, 0, &es, NULL, NULL));
    const char *keys[] = {"epoch"}, *vals[] = {"1"};
    CHECK_OK(bnorm_checkpoint_save(b, path, keys, vals, 1));
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(access(tmp, F_OK) != 0); /* the temporary file was renamed */
    bnorm_model *c = make(SPEC);
    char *meta = NULL;
    CHECK_OK(bnorm_checkpoint_load(c, path, &meta));
    CHECK(meta && strstr(meta, "\"epoch\":\"1\"") && strstr(meta, "\"spec\":\"conv(4,3,pad=1)"));
    bnorm_free_string(meta);
    CHECK(same_state(b, c)); /* round trip, momentum buffers included */
    CHECK_OK(bnorm_train_epoch(c, &sd.ds, &tc, 1, &es, NULL, NULL));
    CHECK(same_state(a, c)); /* resumed == uninterrupted, bit for bit */
    CHECK_OK(bnorm_checkpoint_metadata(path, &meta));
    CHECK(meta && strstr(meta, "\"format\":\"pt\""));
    bnorm_free_string(meta);

    /* another model: named in the message, nothing changed */
    bnorm_model *d = make("conv(4,3,pad=1) bn relu maxpool(2) flatten linear(4)");
    bnorm_model *d0 = make("conv(4,3,pad=1) bn relu maxpool(2) flatten linear(4)");
    CHECK_STATUS(bnorm_checkpoint_load(d, path, NULL), BNORM_ERR_FORMAT);
    CHECK(strstr(bnorm_last_error(), "holds model") != NULL);
    CHECK(same_state(d, d0));

    /* corrupt and truncated files */
    FILE *f = fopen(path, "rb");
    const size_t n = file_size(path);
    unsigned char *bytes = malloc(n);
    CHECK(f && fread(bytes, 1, n, f) == n);
    fclose(f);
    unsigned char *bad = malloc(n);
    memcpy(bad, bytes, n);
    bad[0] = 0xff, bad[7] = 0x7f; /* absurd header length */
    f = fopen(other, "wb"), fwrite(bad, 1, n, f), fclose(f);
    CHECK_STATUS(bnorm_checkpoint_load(c, other, NULL), BNORM_ERR_FORMAT);
    memcpy(bad, bytes, n);
    memcpy(bad + 8, "{\"x\":", 5); /* broken JSON */
    f = fopen(other, "wb"), fwrite(bad, 1, n, f), fclose(f);
    CHECK_STATUS(bnorm_checkpoint_load(c, other, NULL), BNORM_ERR_FORMAT);
    f = fopen(other, "wb"), fwrite(bytes, 1, n - 100, f), fclose(f); /* truncated data */
    bnorm_model *e = make(SPEC);
    CHECK_STATUS(bnorm_checkpoint_load(e, other, NULL), BNORM_ERR_FORMAT);
    CHECK(strstr(bnorm_last_error(), "data offsets") != NULL);
    CHECK(!same_state_q(e, c, 1)); /* e kept its own (initial) state */
    CHECK_STATUS(bnorm_checkpoint_load(c, "/nonexistent/ckpt", NULL), BNORM_ERR_IO);
    CHECK_STATUS(bnorm_checkpoint_metadata("/nonexistent/ckpt", &meta), BNORM_ERR_IO);
    CHECK_STATUS(bnorm_checkpoint_metadata(other, NULL), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_checkpoint_save(c, "/nonexistent/dir/ckpt", NULL, NULL, 0), BNORM_ERR_IO);
    CHECK_STATUS(bnorm_checkpoint_load(NULL, path, NULL), BNORM_ERR_NULL_POINTER);
    free(bytes), free(bad);
    remove(path), remove(other);
    bnorm_model_free(a), bnorm_model_free(b), bnorm_model_free(c), bnorm_model_free(d);
    bnorm_model_free(d0), bnorm_model_free(e);
    synth_free(&sd);
    return check_report();
}
