/* tests/test_spec.c - model specs: the source network's parameters, names and shapes match
 * PyTorch's nn.Sequential; --no-bn puts the biases back; bad specs fail naming the layer. */
#include <string.h>

#include "check.h"
#include "nn_testutil.h"

static int has(const char *needle) {
    if (strstr(bnorm_last_error(), needle)) return 1;
    fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", bnorm_last_error(), needle);
    return 0;
}

static const bnorm_named_tensor *find(bnorm_model *m, const char *name, bnorm_named_tensor *t) {
    for (int i = 0; i < bnorm_model_tensor_count(m); i++) {
        bnorm_model_tensor(m, i, t);
        if (strcmp(t->name, name) == 0) return t;
    }
    return NULL;
}

static void source_network(void) {
    bnorm_model_options mo = bnorm_model_options_default();
    bnorm_model *m;
    CHECK_OK(bnorm_model_create(&m, BNORM_DEFAULT_SPEC, &mo));
    /* PyTorch: convs/linears before bn have no bias; the last linear has one */
    CHECK_INT_EQ(bnorm_model_param_count(m), 288 + 64 + 18432 + 128 + 401408 + 256 + 1290);
    CHECK_INT_EQ(bnorm_model_classes(m), 10);
    bnorm_named_tensor t;
    if (CHECK(find(m, "0.weight", &t)))
        CHECK(t.ndim == 4 && t.shape[0] == 32 && t.shape[1] == 1 && t.shape[2] == 3);
    CHECK(find(m, "0.bias", &t) == NULL);
    if (CHECK(find(m, "1.running_var", &t))) {
        CHECK(t.grad == NULL && t.numel == 32 && ((float *)t.data)[5] == 1.0f);
    }
    if (CHECK(find(m, "1.num_batches_tracked", &t))) CHECK(t.is_int64 && t.ndim == 0);
    if (CHECK(find(m, "9.weight", &t)))
        CHECK(t.ndim == 2 && t.shape[0] == 128 && t.shape[1] == 3136);
    if (CHECK(find(m, "10.weight", &t))) CHECK(t.no_decay && t.numel == 128);
    if (CHECK(find(m, "13.bias", &t))) CHECK(t.numel == 10 && t.no_decay);
    CHECK(strcmp(bnorm_model_spec(m), BNORM_DEFAULT_SPEC) == 0);
    bnorm_model_free(m);

    mo.no_bn = 1;
    CHECK_OK(bnorm_model_create(&m, BNORM_DEFAULT_SPEC, &mo));
    CHECK_INT_EQ(bnorm_model_param_count(m), 320 + 18496 + 401536 + 1290);
    CHECK(strstr(bnorm_model_spec(m), "bn") == NULL);
    CHECK(find(m, "0.bias", &t) != NULL);
    CHECK(find(m, "7.weight", &t) != NULL); /* linear(128): index 9 with the two bn, 7 without */
    bnorm_model_free(m);

    /* the same seed gives the same weights; initializations differ */
    bnorm_model *a, *b;
    mo.no_bn = 0;
    CHECK_OK(bnorm_model_create(&a, "flatten linear(10)", &mo));
    CHECK_OK(bnorm_model_create(&b, "flatten linear(10)", &mo));
    bnorm_named_tensor ta, tb;
    bnorm_model_tensor(a, 0, &ta);
    bnorm_model_tensor(b, 0, &tb);
    CHECK(memcmp(ta.data, tb.data, (size_t)ta.numel * 4) == 0);
    /* PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    float mx = 0;
    for (int64_t i = 0; i < ta.numel; i++)
        mx = fmaxf(mx, fabsf(((float *)ta.data)[i]));
    CHECK(mx <= 1.0f / 28.0f && mx > 0.9f / 28.0f);
    bnorm_model_free(a), bnorm_model_free(b);
}

/* residual blocks: torchvision's names and shapes, projection only when the shape changes */
static void residual_blocks(void) {
    bnorm_model_options mo = bnorm_model_options_default();
    bnorm_model *m;
    CHECK_OK(bnorm_model_create(&m,
                                "conv(16,3,pad=1) bn relu res(16) res(32,stride=2) gap flatten "
                                "linear(10)",
                                &mo));
    bnorm_named_tensor t;
    if (CHECK(find(m, "3.conv1.weight", &t)))
        CHECK(t.ndim == 4 && t.shape[0] == 16 && t.shape[1] == 16);
    CHECK(find(m, "3.bn2.running_var", &t) != NULL);
    CHECK(find(m, "3.shortcut.0.weight", &t) == NULL); /* same shape: identity */
    if (CHECK(find(m, "4.shortcut.0.weight", &t)))
        CHECK(t.shape[0] == 32 && t.shape[1] == 16 && t.shape[2] == 1);
    CHECK(find(m, "4.shortcut.1.num_batches_tracked", &t) != NULL);
    if (CHECK(find(m, "7.weight", &t))) CHECK(t.shape[1] == 32); /* gap -> 32 features */
    /* conv 144 + bn 32 + res(16) 2*(2304+32) + res(32) 4608+64+9216+64+512+64 + linear 330 */
    CHECK_INT_EQ(bnorm_model_param_count(m),
                 144 + 32 + 2 * (2304 + 32) + 4608 + 64 + 9216 + 64 + 512 + 64 + 330);
    bnorm_model_free(m);
    m = (bnorm_model *)&m;
    CHECK_STATUS(bnorm_model_create(&m, "res(0) flatten linear(2)", &mo), BNORM_ERR_PARSE);
    CHECK_STATUS(bnorm_model_create(&m, "res(8,3) flatten linear(2)", &mo), BNORM_ERR_PARSE);
    CHECK(strstr(bnorm_last_error(), "res(8,3)") != NULL);
}

static void bad_specs(void) {
    bnorm_model_options mo = bnorm_model_options_default();
    bnorm_model *m = (bnorm_model *)&m;
    struct {
        const char *spec, *says;
        bnorm_status st;
    } cases[] = {
        {"conv(32)", "conv(32)", BNORM_ERR_PARSE},
        {"conv(32,3) foo linear(10)", "layer 1 'foo'", BNORM_ERR_PARSE},
        {"conv(32,3,pad=1) linear(10)", "add flatten", BNORM_ERR_INVALID_SHAPE},
        {"maxpool(64) flatten linear(10)", "larger than the input", BNORM_ERR_INVALID_SHAPE},
        {"conv(32,3,pad=1", "unbalanced", BNORM_ERR_PARSE},
        {"flatten dropout(1.5) linear(10)", "0 <= p < 1", BNORM_ERR_PARSE},
        {"   ", "no layers", BNORM_ERR_PARSE},
        {"conv(0,3) flatten linear(10)", "out_channels", BNORM_ERR_PARSE},
        {"conv(8,3,padding=1)", "padding=1", BNORM_ERR_PARSE},
        {"conv(8,40) flatten linear(2)", "does not fit", BNORM_ERR_INVALID_SHAPE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_STATUS(bnorm_model_create(&m, cases[i].spec, &mo), cases[i].st);
        CHECK(m == NULL);
        CHECK(has(cases[i].says));
    }
    CHECK_STATUS(bnorm_model_create(NULL, "relu", &mo), BNORM_ERR_NULL_POINTER);
    CHECK_STATUS(bnorm_model_create(&m, NULL, &mo), BNORM_ERR_NULL_POINTER);
    mo.max_batch = 0;
    CHECK_STATUS(bnorm_model_create(&m, "flatten linear(2)", &mo), BNORM_ERR_INVALID_ARGUMENT);
    mo = bnorm_model_options_default();
    mo.init_scale = 0;
    CHECK_STATUS(bnorm_model_create(&m, "flatten linear(2)", &mo), BNORM_ERR_INVALID_ARGUMENT);

    /* forward/loss/backward misuse */
    mo = bnorm_model_options_default();
    mo.max_batch = 4;
    CHECK_OK(bnorm_model_create(&m, "flatten linear(3)", &mo));
    float x[4 * 784] = {0};
    int32_t y[4] = {0, 1, 2, 3};
    CHECK_STATUS(bnorm_model_backward(m, NULL, NULL), BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bnorm_model_forward(m, x, 5, 1, NULL, NULL), BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bnorm_model_forward(m, NULL, 4, 1, NULL, NULL), BNORM_ERR_NULL_POINTER);
    CHECK_OK(bnorm_model_forward(m, x, 4, 1, NULL, NULL));
    CHECK_STATUS(bnorm_model_loss(m, y, 3, 1, NULL, NULL), BNORM_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(bnorm_model_loss(m, y, 4, 1, NULL, NULL), BNORM_ERR_INVALID_ARGUMENT);
    CHECK(has("label 3"));
    bnorm_named_tensor t;
    CHECK_STATUS(bnorm_model_tensor(m, 99, &t), BNORM_ERR_INVALID_ARGUMENT);
    bnorm_model_free(m);
    bnorm_model_free(NULL);
}

int main(void) {
    source_network();
    residual_blocks();
    bad_specs();
    return check_report();
}
