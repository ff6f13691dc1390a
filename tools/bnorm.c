/* tools/bnorm.c - the bnorm command: train and evaluate networks with batch norm on IDX data
 * (Fashion-MNIST by default). Uses the public API only.
 *
 *   bnorm train [options]     train, watch a validation split, report test accuracy
 *   bnorm eval --checkpoint FILE [--data DIR] [--split test|val|train]
 *
 * Exit codes: 0 success, 1 runtime error (with its message), 2 usage. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "bnorm.h"
#include "bnorm/nn.h"

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"

static void usage(FILE *f) {
    fprintf(f,
            "usage: bnorm train [options]\n"
            "       bnorm eval --checkpoint FILE [--data DIR] [--split test|val|train] [--tta]\n"
            "\n"
            "train options (defaults in brackets):\n"
            "  --data DIR          IDX files (train-images-idx3-ubyte.gz, ...) [" DEFAULT_DATA "]\n"
            "  --model SPEC        layers, e.g. 'conv(32,3,pad=1) bn relu maxpool(2) ...'\n"
            "                      [the source network: " BNORM_DEFAULT_SPEC "]\n"
            "  --no-bn             the same network without batch norm (biases put back)\n"
            "  --epochs N [5]  --batch N [128]  --lr X [0.05]  --momentum X [0.9]  --nesterov\n"
            "  --wd X [5e-4]  --wd-all (also decay bn parameters and biases)\n"
            "  --schedule constant|step|cosine [cosine]  --step-epochs N [2]  --gamma X [0.1]\n"
            "  --warmup EPOCHS [0]  --augment (random crop, pad 2, and horizontal flip)\n"
            "  --cutout N          also set a random NxN square to the mean (0: off) [0]\n"
            "  --label-smoothing X target 1-X+X/K on the label, X/K elsewhere (PyTorch's) [0]\n"
            "  --init default|he|xavier [default]  --init-scale X [1]\n"
            "  --seed N [1]  --threads N [all cores]  --val N (held-out images) [5000]\n"
            "  --checkpoint FILE   save after every epoch (atomically)\n"
            "  --resume FILE       continue a run from its checkpoint (same options as the run)\n"
            "  --stop-after N      train at most N epochs now (a later --resume continues)\n"
            "  --metrics FILE      one JSON object per epoch, then {\"test_acc\": ...}\n"
            "  --quiet             no progress bar\n"
            "  --tta               also report test accuracy with flip test-time augmentation\n"
            "                      (each image's prediction averaged with its mirror image's)\n");
}

typedef struct {
    const char *cmd, *data, *spec, *checkpoint, *resume, *metrics, *split;
    int no_bn, quiet, threads, stop_after, tta;
    int64_t val;
    int val_given; /* --val on the command line (eval otherwise takes the run's own) */
    bnorm_train_config tc;
    bnorm_model_options mo;
} options;

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->data = DEFAULT_DATA;
    o->spec = BNORM_DEFAULT_SPEC;
    o->split = "test";
    o->val = 5000;
    o->tc = bnorm_train_config_default();
    o->tc.schedule.step_epochs = 2, o->tc.schedule.gamma = 0.1;
    o->mo = bnorm_model_options_default();
    if (argc < 2) return 0;
    o->cmd = argv[1];
    if (strcmp(o->cmd, "train") != 0 && strcmp(o->cmd, "eval") != 0) return 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
#define VALUE()                                                                                    \
    do {                                                                                           \
        if (!v) {                                                                                  \
            fprintf(stderr, "bnorm: %s needs a value\n", a);                                       \
            return 0;                                                                              \
        }                                                                                          \
        i++;                                                                                       \
    } while (0)
#define STRING(dst)                                                                                \
    do {                                                                                           \
        VALUE();                                                                                   \
        dst = v;                                                                                   \
    } while (0)
#define NUMBER(dst, lo, hi)                                                                        \
    do {                                                                                           \
        VALUE();                                                                                   \
        const double x_ = strtod(v, &end);                                                         \
        if (end == v || *end || !(x_ >= (lo) && x_ <= (hi))) {                                     \
            fprintf(stderr, "bnorm: %s %s: expected a number in [%g, %g]\n", a, v, (double)(lo),   \
                    (double)(hi));                                                                 \
            return 0;                                                                              \
        }                                                                                          \
        dst = x_;                                                                                  \
    } while (0)
        if (!strcmp(a, "--data"))
            STRING(o->data);
        else if (!strcmp(a, "--model"))
            STRING(o->spec);
        else if (!strcmp(a, "--checkpoint"))
            STRING(o->checkpoint);
        else if (!strcmp(a, "--resume"))
            STRING(o->resume);
        else if (!strcmp(a, "--metrics"))
            STRING(o->metrics);
        else if (!strcmp(a, "--split"))
            STRING(o->split);
        else if (!strcmp(a, "--no-bn"))
            o->no_bn = 1;
        else if (!strcmp(a, "--nesterov"))
            o->tc.sgd.nesterov = 1;
        else if (!strcmp(a, "--wd-all"))
            o->tc.sgd.decay_bn_bias = 1;
        else if (!strcmp(a, "--augment"))
            o->tc.augment.crop_pad = 2, o->tc.augment.hflip = 1;
        else if (!strcmp(a, "--quiet"))
            o->quiet = 1;
        else if (!strcmp(a, "--tta"))
            o->tta = 1;
        else if (!strcmp(a, "--cutout"))
            NUMBER(o->tc.augment.cutout, 0, 1000);
        else if (!strcmp(a, "--label-smoothing"))
            NUMBER(o->tc.label_smoothing, 0, 1);
        else if (!strcmp(a, "--epochs"))
            NUMBER(o->tc.epochs, 1, 10000);
        else if (!strcmp(a, "--batch"))
            NUMBER(o->tc.batch, 2, 65536);
        else if (!strcmp(a, "--lr"))
            NUMBER(o->tc.lr, 0, 100);
        else if (!strcmp(a, "--momentum"))
            NUMBER(o->tc.sgd.momentum, 0, 0.999);
        else if (!strcmp(a, "--wd"))
            NUMBER(o->tc.sgd.weight_decay, 0, 1);
        else if (!strcmp(a, "--step-epochs"))
            NUMBER(o->tc.schedule.step_epochs, 0.01, 10000);
        else if (!strcmp(a, "--gamma"))
            NUMBER(o->tc.schedule.gamma, 0, 1);
        else if (!strcmp(a, "--warmup"))
            NUMBER(o->tc.schedule.warmup_epochs, 0, 10000);
        else if (!strcmp(a, "--init-scale"))
            NUMBER(o->mo.init_scale, 1e-6, 1e6);
        else if (!strcmp(a, "--seed"))
            NUMBER(o->tc.seed, 0, 9007199254740991.0);
        else if (!strcmp(a, "--threads"))
            NUMBER(o->threads, 1, 1024);
        else if (!strcmp(a, "--stop-after"))
            NUMBER(o->stop_after, 1, 10000);
        else if (!strcmp(a, "--val")) {
            NUMBER(o->val, 0, 1e9);
            o->val_given = 1;
        } else if (!strcmp(a, "--schedule")) {
            VALUE();
            if (!strcmp(v, "constant"))
                o->tc.schedule.kind = BNORM_SCHEDULE_CONSTANT;
            else if (!strcmp(v, "step"))
                o->tc.schedule.kind = BNORM_SCHEDULE_STEP;
            else if (!strcmp(v, "cosine"))
                o->tc.schedule.kind = BNORM_SCHEDULE_COSINE;
            else {
                fprintf(stderr, "bnorm: --schedule %s: expected constant, step or cosine\n", v);
                return 0;
            }
        } else if (!strcmp(a, "--init")) {
            VALUE();
            if (!strcmp(v, "default"))
                o->mo.init = BNORM_INIT_DEFAULT;
            else if (!strcmp(v, "he"))
                o->mo.init = BNORM_INIT_HE;
            else if (!strcmp(v, "xavier"))
                o->mo.init = BNORM_INIT_XAVIER;
            else {
                fprintf(stderr, "bnorm: --init %s: expected default, he or xavier\n", v);
                return 0;
            }
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "bnorm: unknown option '%s'\n", a);
            return 0;
        }
#undef NUMBER
#undef STRING
#undef VALUE
    }
    o->mo.seed = o->tc.seed;
    o->mo.no_bn = o->no_bn;
    o->mo.max_batch = o->tc.batch;
    return 1;
}

static int fail(const char *what) {
    fprintf(stderr, "bnorm: %s: %s\n", what, bnorm_last_error());
    return 1;
}

static bnorm_status load_split(const char *dir, const char *prefix, bnorm_dataset *ds) {
    char img[4096], lab[4096];
    snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    snprintf(lab, sizeof lab, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    if (access(img, R_OK) != 0) snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte", dir, prefix);
    if (access(lab, R_OK) != 0) snprintf(lab, sizeof lab, "%s/%s-labels-idx1-ubyte", dir, prefix);
    return bnorm_idx_load(ds, img, lab);
}

/* ---- progress ------------------------------------------------------------------------------ */

typedef struct {
    int epoch, epochs;
    double t0;
} progress_ctx;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void progress(void *vctx, int64_t done, int64_t total, double loss) {
    progress_ctx *c = vctx;
    const double el = now_s() - c->t0, rate = el > 0 ? done / el : 0;
    const double eta = rate > 0 ? (total - done) / rate : 0;
    char bar[31];
    const int fill = (int)(30.0 * done / (total ? total : 1));
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    fprintf(stderr, "\r  epoch %d/%d [%s] %lld/%lld  %5.0f img/s  loss %.4f  ETA %d:%02d ",
            c->epoch, c->epochs, bar, (long long)done, (long long)total, rate, loss, (int)eta / 60,
            (int)eta % 60);
    fflush(stderr);
}

/* ---- metrics: the whole file rewritten atomically after every epoch ------------------------- */

typedef struct {
    char *text;
    size_t len, cap;
} strbuf;

static int sb_add(strbuf *b, const char *s) {
    const size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        const size_t cap = (b->len + n + 1) * 2;
        char *t = realloc(b->text, cap);
        if (!t) return 0;
        b->text = t, b->cap = cap;
    }
    memcpy(b->text + b->len, s, n + 1);
    b->len += n;
    return 1;
}

static int write_atomic(const char *path, const char *text) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return 0;
    int ok = fputs(text, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return 0;
    }
    return 1;
}

/* x to 7 significant digits, so that the metrics read 0.9438 rather than 0.94379999999999997 */
static double sig7(double x) {
    char b[32];
    snprintf(b, sizeof b, "%.7g", x);
    return strtod(b, NULL);
}

/* Appends obj as one line (cJSON writes null for a non-finite number, e.g. the loss of a run
 * that diverged) and frees it; then rewrites the file. 0 when either fails. */
static int metrics_add(strbuf *b, const char *path, cJSON *obj) {
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    const int ok = text && sb_add(b, text) && sb_add(b, "\n") && write_atomic(path, b->text);
    cJSON_free(text);
    if (!ok) fprintf(stderr, "bnorm: cannot write metrics file '%s'\n", path);
    return ok;
}

/* On resume, keeps the lines of epochs up to `upto` from an existing metrics file. */
static void metrics_resume(strbuf *b, const char *path, int upto) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        cJSON *obj = cJSON_Parse(line);
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(obj, "epoch");
        if (cJSON_IsNumber(e) && e->valuedouble <= upto) sb_add(b, line);
        cJSON_Delete(obj);
    }
    fclose(f);
}

/* Copies the string value of "key" in the JSON object `json` into out ("" when absent). */
static void meta_value(const char *json, const char *key, char *out, size_t n) {
    cJSON *obj = cJSON_Parse(json);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    snprintf(out, n, "%s", cJSON_IsString(v) ? v->valuestring : "");
    cJSON_Delete(obj);
}

/* The options that decide a run's numbers from a given epoch on, as "name=value ..." in the
 * checkpoint's metadata, so that --resume with other options is refused instead of silently
 * giving a run that nobody ran. Not in it: the model (the checkpoint's own check), the paths,
 * --threads, --quiet, --tta, --stop-after and the initialization (used only before epoch 1).
 * 15 significant digits: every number typed on a command line reads back as typed. */
static void run_settings(const options *o, char *out, size_t n) {
    static const char *const kinds[] = {"constant", "step", "cosine"};
    const bnorm_train_config *t = &o->tc;
    const int k = (int)t->schedule.kind;
    snprintf(out, n,
             "epochs=%d batch=%lld lr=%.15g momentum=%.15g nesterov=%d wd=%.15g wd_all=%d "
             "schedule=%s step_epochs=%.15g gamma=%.15g warmup=%.15g crop_pad=%d hflip=%d "
             "cutout=%d label_smoothing=%.15g val=%lld seed=%llu",
             t->epochs, (long long)t->batch, t->lr, t->sgd.momentum, t->sgd.nesterov,
             t->sgd.weight_decay, t->sgd.decay_bn_bias, k >= 0 && k < 3 ? kinds[k] : "?",
             t->schedule.step_epochs, t->schedule.gamma, t->schedule.warmup_epochs,
             t->augment.crop_pad, t->augment.hflip, t->augment.cutout, t->label_smoothing,
             (long long)o->val, (unsigned long long)t->seed);
}

/* 0 when `saved` (from a checkpoint; "" for one written before settings were saved) matches
 * this run's settings; otherwise says which one differs. */
static int check_settings(const char *path, const char *saved, const char *now) {
    if (!saved[0] || !strcmp(saved, now)) return 0;
    const char *a = saved, *b = now;
    while (*a && *b) { /* first differing "name=value" item */
        const size_t la = strcspn(a, " "), lb = strcspn(b, " ");
        if (la != lb || strncmp(a, b, la)) {
            fprintf(stderr, "bnorm: --resume %s: it was trained with %.*s, this run has %.*s\n",
                    path, (int)la, a, (int)lb, b);
            return 1;
        }
        a += la + (a[la] == ' '), b += lb + (b[lb] == ' ');
    }
    fprintf(stderr, "bnorm: --resume %s: other training options (%s)\n", path, saved);
    return 1;
}

/* ---- commands -------------------------------------------------------------------------------- */

static int cmd_train(options *o) {
    bnorm_dataset all = {0}, train, val, test = {0};
    bnorm_model *m = NULL;
    strbuf metrics = {0};
    int rc = 1, start = 0;
    if (o->threads) bnorm_set_threads(o->threads);
    if (load_split(o->data, "train", &all) || load_split(o->data, "t10k", &test)) {
        rc = fail("data");
        goto done;
    }
    if (bnorm_dataset_split(&all, o->val, &train, &val)) {
        rc = fail("--val");
        goto done;
    }
    o->mo.in_c = 1, o->mo.in_h = all.rows, o->mo.in_w = all.cols;
    double mean, std;
    bnorm_dataset_pixel_stats(&train, &mean, &std);
    o->tc.mean = mean, o->tc.std = std;
    if (bnorm_model_create(&m, o->spec, &o->mo)) {
        rc = fail("model");
        goto done;
    }
    /* the checkpoint metadata that is the same every epoch: the input normalization travels
     * with the weights, so eval uses the same, and the settings guard --resume */
    char seed[32], mean_s[32], std_s[32], settings[1024];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->tc.seed);
    snprintf(mean_s, sizeof mean_s, "%.17g", mean);
    snprintf(std_s, sizeof std_s, "%.17g", std);
    run_settings(o, settings, sizeof settings);
    if (o->resume) {
        char *meta = NULL;
        if (bnorm_checkpoint_load(m, o->resume, &meta)) {
            rc = fail("resume");
            goto done;
        }
        char ep[32], saved[1024];
        meta_value(meta, "epoch", ep, sizeof ep);
        meta_value(meta, "train_settings", saved, sizeof saved);
        bnorm_free_string(meta);
        start = atoi(ep);
        if (check_settings(o->resume, saved, settings)) goto done;
        if (o->metrics) metrics_resume(&metrics, o->metrics, start);
        printf("resumed from %s after epoch %d\n", o->resume, start);
    }
    printf("model: %s\n  %lld parameters, input 1x%lldx%lld, %lld train / %lld val / %lld test "
           "images, kernels %s\n",
           bnorm_model_spec(m), (long long)bnorm_model_param_count(m), (long long)all.rows,
           (long long)all.cols, (long long)train.count, (long long)val.count, (long long)test.count,
           bnorm_kernels());
    const int tty = !o->quiet && isatty(STDERR_FILENO);
    const int end = o->stop_after && start + o->stop_after < o->tc.epochs ? start + o->stop_after
                                                                          : o->tc.epochs;
    for (int epoch = start; epoch < end; epoch++) {
        bnorm_epoch_stats es;
        progress_ctx pc = {epoch + 1, o->tc.epochs, now_s()};
        if (bnorm_train_epoch(m, &train, &o->tc, epoch, &es, tty ? progress : NULL, &pc)) {
            if (tty) fprintf(stderr, "\n");
            rc = fail("training");
            goto done;
        }
        if (tty) fprintf(stderr, "\r%*s\r", 110, "");
        double vloss = NAN, vacc = NAN;
        if (val.count && bnorm_evaluate(m, &val, mean, std, &vloss, &vacc)) {
            rc = fail("validation");
            goto done;
        }
        /* --val 0 (train on every image) has no validation numbers: "-" here, null in JSON */
        char vtext[64] = "val -";
        if (val.count) snprintf(vtext, sizeof vtext, "val loss %.4f acc %.2f%%", vloss, 100 * vacc);
        printf("epoch %d/%d  train loss %.4f acc %.2f%%  %s  lr %.4f  %.1fs  %.0f img/s\n",
               epoch + 1, o->tc.epochs, es.loss, 100 * es.accuracy, vtext, es.lr, es.seconds,
               es.images_per_sec);
        fflush(stdout);
        if (o->metrics) {
            cJSON *obj = cJSON_CreateObject();
            cJSON_AddNumberToObject(obj, "epoch", epoch + 1);
            cJSON_AddNumberToObject(obj, "train_loss", sig7(es.loss));
            cJSON_AddNumberToObject(obj, "train_acc", sig7(es.accuracy));
            /* NaN without a validation set, written as null */
            cJSON_AddNumberToObject(obj, "val_loss", sig7(vloss));
            cJSON_AddNumberToObject(obj, "val_acc", sig7(vacc));
            cJSON_AddNumberToObject(obj, "lr", sig7(es.lr));
            cJSON_AddNumberToObject(obj, "seconds", sig7(es.seconds));
            cJSON_AddNumberToObject(obj, "images_per_sec", sig7(es.images_per_sec));
            if (!metrics_add(&metrics, o->metrics, obj)) goto done;
        }
        if (o->checkpoint) {
            char ep[16];
            snprintf(ep, sizeof ep, "%d", epoch + 1);
            const char *keys[] = {"epoch", "seed", "input_mean", "input_std", "train_settings"};
            const char *vals[] = {ep, seed, mean_s, std_s, settings};
            if (bnorm_checkpoint_save(m, o->checkpoint, keys, vals, 5)) {
                rc = fail("checkpoint");
                goto done;
            }
        }
    }
    if (end < o->tc.epochs) {
        printf("stopped after epoch %d of %d%s\n", end, o->tc.epochs,
               o->checkpoint ? "; --resume the checkpoint to continue" : "");
        rc = 0;
        goto done;
    }
    double tloss, tacc;
    if (bnorm_evaluate(m, &test, mean, std, &tloss, &tacc)) {
        rc = fail("test");
        goto done;
    }
    printf("test accuracy %.2f%% (loss %.4f) on %lld images\n", 100 * tacc, tloss,
           (long long)test.count);
    double floss = NAN, facc = NAN;
    if (o->tta) {
        if (bnorm_evaluate_flip(m, &test, mean, std, &floss, &facc)) {
            rc = fail("test (flip)");
            goto done;
        }
        printf("test accuracy with flip test-time augmentation %.2f%% (loss %.4f)\n", 100 * facc,
               floss);
    }
    if (o->metrics) {
        cJSON *obj = cJSON_CreateObject();
        cJSON_AddNumberToObject(obj, "test_acc", sig7(tacc));
        cJSON_AddNumberToObject(obj, "test_loss", sig7(tloss));
        if (o->tta) {
            cJSON_AddNumberToObject(obj, "test_acc_flip", sig7(facc));
            cJSON_AddNumberToObject(obj, "test_loss_flip", sig7(floss));
        }
        if (!metrics_add(&metrics, o->metrics, obj)) goto done;
    }
    rc = 0;
done:
    free(metrics.text);
    bnorm_model_free(m);
    bnorm_dataset_free(&all);
    bnorm_dataset_free(&test);
    return rc;
}

static int cmd_eval(options *o) {
    if (!o->checkpoint) {
        fprintf(stderr, "bnorm: eval needs --checkpoint FILE\n");
        return 2;
    }
    if (o->threads) bnorm_set_threads(o->threads);
    char *meta = NULL;
    if (bnorm_checkpoint_metadata(o->checkpoint, &meta)) return fail("checkpoint");
    char spec[4096] = {0}, mean_s[64] = {0}, std_s[64] = {0}, settings[1024];
    meta_value(meta, "spec", spec, sizeof spec);
    meta_value(meta, "input_mean", mean_s, sizeof mean_s);
    meta_value(meta, "input_std", std_s, sizeof std_s);
    meta_value(meta, "train_settings", settings, sizeof settings);
    bnorm_free_string(meta);
    /* the validation split is the one the run held out, unless --val says otherwise */
    const char *held = strstr(settings, " val=");
    if (!o->val_given && held) o->val = atoll(held + 5);
    if (!spec[0]) {
        /* no spec: not a bnorm checkpoint */
        fprintf(stderr, "bnorm: %s has no model spec in its metadata\n", o->checkpoint);
        return 1;
    }
    bnorm_dataset all = {0}, train, val, ds = {0};
    bnorm_model *m = NULL;
    int rc = 1;
    const int test = strcmp(o->split, "test") == 0;
    if (!test && strcmp(o->split, "val") && strcmp(o->split, "train")) {
        fprintf(stderr, "bnorm: --split %s: expected test, val or train\n", o->split);
        return 2;
    }
    if (load_split(o->data, "train", &all) || (test && load_split(o->data, "t10k", &ds))) {
        rc = fail("data");
        goto done;
    }
    if (bnorm_dataset_split(&all, o->val, &train, &val)) {
        rc = fail("--val");
        goto done;
    }
    double mean, std, loss, acc;
    bnorm_dataset_pixel_stats(&train, &mean, &std); /* checkpoints from before input_mean */
    if (mean_s[0] && std_s[0]) mean = strtod(mean_s, NULL), std = strtod(std_s, NULL);
    o->mo.in_h = all.rows, o->mo.in_w = all.cols;
    if (bnorm_model_create(&m, spec, &o->mo) || bnorm_checkpoint_load(m, o->checkpoint, NULL)) {
        rc = fail("model");
        goto done;
    }
    const bnorm_dataset *which = test ? &ds : strcmp(o->split, "val") == 0 ? &val : &train;
    if (which->count == 0) {
        fprintf(stderr, "bnorm: --split %s: no images (the run held out %lld)\n", o->split,
                (long long)o->val);
        goto done;
    }
    const double t0 = now_s();
    if ((o->tta ? bnorm_evaluate_flip : bnorm_evaluate)(m, which, mean, std, &loss, &acc)) {
        rc = fail("eval");
        goto done;
    }
    const double secs = now_s() - t0;
    printf("%s accuracy%s %.2f%% (loss %.4f) on %lld images, %.0f images/s\n", o->split,
           o->tta ? " with flip test-time augmentation" : "", 100 * acc, loss,
           (long long)which->count, secs > 0 ? which->count / secs : 0.0);
    rc = 0;
done:
    bnorm_model_free(m);
    bnorm_dataset_free(&all);
    bnorm_dataset_free(&ds);
    return rc;
}

/* OpenBLAS runs generic kernels on CPUs it does not recognise (this project's VMs among them),
 * 2-3x slower; its OPENBLAS_CORETYPE is read only when the library loads, so the tool sets it
 * from what the CPU supports and starts itself once more. */
static void pick_blas_kernels(char **argv) {
#if defined(__x86_64__)
    if (getenv("OPENBLAS_CORETYPE") || strcmp(bnorm_blas_corename(), "Prescott") != 0) return;
    __builtin_cpu_init();
    const char *core = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        core = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        core = "Haswell";
    if (!core || setenv("OPENBLAS_CORETYPE", core, 1) != 0) return;
    execv("/proc/self/exe", argv); /* on failure, go on with the generic kernels */
#else
    (void)argv;
#endif
}

int main(int argc, char **argv) {
    pick_blas_kernels(argv);
    options o;
    if (!parse_args(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    return strcmp(o.cmd, "train") == 0 ? cmd_train(&o) : cmd_eval(&o);
}
