/* tests/test_cli.c - the bnorm tool end to end on a small synthetic IDX dataset this test writes:
 * train with metrics and checkpoints, resume (the checkpoint of an interrupted and resumed run is
 * byte-identical to an uninterrupted run's), eval, and the exit codes of bad input.
 * Usage: test_cli PATH_TO_BNORM */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "nn_testutil.h"

#define MODEL "conv(4,3,pad=1) bn relu maxpool(2) flatten linear(8) bn relu linear(10)"

static char dir[256], tool[1024];

static void put32(unsigned char *b, uint32_t v) {
    b[0] = (unsigned char)(v >> 24), b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8), b[3] = (unsigned char)v;
}

static void write_split(const char *prefix, int64_t count, uint64_t seed) {
    synth_data s;
    synth_make(&s, count, 12, 10, seed);
    char path[512];
    unsigned char head[16];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    gzFile f = gzopen(path, "wb");
    put32(head, 0x803), put32(head + 4, (uint32_t)count), put32(head + 8, 12), put32(head + 12, 12);
    gzwrite(f, head, 16);
    gzwrite(f, s.pixels, (unsigned)(count * 144));
    gzclose(f);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    f = gzopen(path, "wb");
    put32(head, 0x801), put32(head + 4, (uint32_t)count);
    gzwrite(f, head, 8);
    gzwrite(f, s.labels, (unsigned)count);
    gzclose(f);
    synth_free(&s);
}

/* runs the tool with arguments; returns its exit code, output in dir/out.txt */
static int run(const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s > %s/out.txt 2>&1", tool, args, dir);
    const int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *name, size_t *len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = calloc(1, (size_t)n + 1);
    const size_t got = fread(b, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(b);
        return NULL;
    }
    if (len) *len = (size_t)n;
    return b;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH_TO_BNORM\n", argv[0]);
        return 2;
    }
    snprintf(tool, sizeof tool, "%s", argv[1]);
    snprintf(dir, sizeof dir, "/tmp/bnorm_test_cli_%ld", (long)getpid());
    char cmd[600], args[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    if (system(cmd) != 0) return 1;
    write_split("train", 400, 1);
    write_split("t10k", 100, 2);
    const char *common = "--model '" MODEL "' --batch 32 --val 80 --lr 0.05 --seed 3 --quiet";

    /* uninterrupted: 3 epochs */
    snprintf(args, sizeof args,
             "train --data %s %s --epochs 3 --checkpoint %s/a.st --metrics %s/a.jsonl --tta", dir,
             common, dir, dir);
    CHECK_INT_EQ(run(args), 0);
    char *out = slurp("out.txt", NULL), *met = slurp("a.jsonl", NULL);
    CHECK(out && strstr(out, "epoch 3/3") && strstr(out, "test accuracy"));
    CHECK(met && strstr(met, "\"epoch\":3") && strstr(met, "\"test_acc\"") &&
          strstr(met, "\"images_per_sec\"") && strstr(met, "\"test_acc_flip\""));
    CHECK(out && strstr(out, "test accuracy with flip test-time augmentation"));
    free(out), free(met);

    /* interrupted after epoch 1 of the same 3-epoch run, then resumed: the same bytes */
    snprintf(
        args, sizeof args,
        "train --data %s %s --epochs 3 --stop-after 1 --checkpoint %s/b.st --metrics %s/b.jsonl",
        dir, common, dir, dir);
    CHECK_INT_EQ(run(args), 0);
    out = slurp("out.txt", NULL);
    CHECK(out && strstr(out, "stopped after epoch 1 of 3") && !strstr(out, "test accuracy"));
    free(out);
    snprintf(
        args, sizeof args,
        "train --data %s %s --epochs 3 --resume %s/b.st --checkpoint %s/b.st --metrics %s/b.jsonl",
        dir, common, dir, dir, dir);
    CHECK_INT_EQ(run(args), 0);
    out = slurp("out.txt", NULL);
    CHECK(out && strstr(out, "resumed") && strstr(out, "epoch 2/3") && !strstr(out, "epoch 1/3"));
    free(out);
    size_t la = 0, lb = 0;
    char *ca = slurp("a.st", &la), *cb = slurp("b.st", &lb);
    CHECK(ca && cb && la > 1000 && la == lb && memcmp(ca, cb, la) == 0);
    free(ca), free(cb);
    met = slurp("b.jsonl", NULL); /* epoch 1 kept from before the interruption */
    CHECK(met && strstr(met, "\"epoch\":1,") && strstr(met, "\"epoch\":3,") &&
          strstr(met, "test_acc"));
    free(met);

    /* eval of the uninterrupted run's checkpoint */
    snprintf(args, sizeof args, "eval --data %s --checkpoint %s/a.st --val 80", dir, dir);
    CHECK_INT_EQ(run(args), 0);
    out = slurp("out.txt", NULL);
    CHECK(out && strstr(out, "test accuracy"));
    free(out);
    snprintf(args, sizeof args, "eval --data %s --checkpoint %s/a.st --val 80 --tta", dir, dir);
    CHECK_INT_EQ(run(args), 0);
    out = slurp("out.txt", NULL);
    CHECK(out && strstr(out, "test accuracy with flip test-time augmentation"));
    free(out);
    /* without --val, eval's validation split is the one the run held out (80 images) */
    snprintf(args, sizeof args, "eval --data %s --checkpoint %s/a.st --split val", dir, dir);
    CHECK_INT_EQ(run(args), 0);
    out = slurp("out.txt", NULL);
    CHECK(out && strstr(out, "val accuracy") && strstr(out, "on 80 images"));
    free(out);

    /* every training image used (--val 0): no validation numbers, null in the metrics; and
     * --label-smoothing reaches the loss: the same run reports another training loss */
    double train_loss[2] = {0, 0};
    for (int smooth = 0; smooth < 2; smooth++) {
        snprintf(args, sizeof args,
                 "train --data %s --model '" MODEL "' --batch 32 --val 0 --seed 3 --quiet "
                 "--epochs 1 --metrics %s/c.jsonl --label-smoothing %s --checkpoint %s/c.st",
                 dir, dir, smooth ? "0.5" : "0", dir);
        CHECK_INT_EQ(run(args), 0);
        out = slurp("out.txt", NULL), met = slurp("c.jsonl", NULL);
        CHECK(out && strstr(out, "400 train / 0 val") && strstr(out, "val -  lr"));
        CHECK(met && strstr(met, "\"val_loss\":null,\"val_acc\":null,"));
        const char *at = met ? strstr(met, "\"train_loss\":") : NULL;
        if (CHECK(at)) train_loss[smooth] = atof(at + strlen("\"train_loss\":"));
        free(out), free(met);
    }
    CHECK(train_loss[0] > 0 && train_loss[1] > 0 && train_loss[1] != train_loss[0]);
    snprintf(args, sizeof args, "eval --data %s --checkpoint %s/c.st --split val", dir, dir);
    CHECK_INT_EQ(run(args), 1); /* that run held out nothing */
    out = slurp("out.txt", NULL);
    CHECK(out && strstr(out, "--split val: no images"));
    free(out);
    CHECK_INT_EQ(run("train --label-smoothing 1.5"), 2);

    /* bad input: usage errors exit 2, runtime errors 1 with one line naming the problem */
    CHECK_INT_EQ(run("train --epochs"), 2);
    CHECK_INT_EQ(run("train --frobnicate"), 2);
    CHECK_INT_EQ(run("fly"), 2);
    snprintf(args, sizeof args, "train --data %s/none --quiet", dir);
    CHECK_INT_EQ(run(args), 1);
    out = slurp("out.txt", NULL);
    CHECK(out && strstr(out, "/none/train-images-idx3-ubyte"));
    free(out);
    snprintf(args, sizeof args, "train --data %s --model 'conv(4,3) linear(10)' --val 80 --quiet",
             dir);
    CHECK_INT_EQ(run(args), 1);
    out = slurp("out.txt", NULL);
    CHECK(out && strstr(out, "add flatten"));
    free(out);
    snprintf(args, sizeof args,
             "train --data %s --model 'flatten linear(10)' --val 80 --quiet --resume %s/a.st", dir,
             dir);
    CHECK_INT_EQ(run(args), 1); /* another model's checkpoint */
    out = slurp("out.txt", NULL);
    CHECK(out && strstr(out, "holds model"));
    free(out);
    /* the same model resumed with another learning rate: refused, naming the option */
    snprintf(args, sizeof args, "train --data %s %s --epochs 3 --lr 0.1 --resume %s/b.st", dir,
             common, dir);
    CHECK_INT_EQ(run(args), 1);
    out = slurp("out.txt", NULL);
    CHECK(out && strstr(out, "trained with lr=0.05, this run has lr=0.1"));
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
    return check_report();
}
