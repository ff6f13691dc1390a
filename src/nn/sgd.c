/* src/nn/sgd.c - torch.optim.SGD (dampening 0) and learning-rate schedules.
 *   g = grad + wd * p        (unless the tensor is exempt from decay)
 *   buf = momentum * buf + g (buf starts at 0, so the first step is buf = g, as in PyTorch)
 *   p -= lr * (nesterov ? g + momentum * buf : buf)     (momentum 0: p -= lr * g) */
#include <math.h>

#include "bnorm/nn.h"
#include "util/internal.h"

bnorm_status bnorm_sgd_step(bnorm_model *model, const bnorm_sgd *sgd, double lr) {
    static const char fn[] = "bnorm_sgd_step";
    if (!model || !sgd) return bnorm__fail(BNORM_ERR_NULL_POINTER, "%s: NULL argument", fn);
    if (!(lr >= 0.0) || !(sgd->momentum >= 0.0 && sgd->momentum < 1.0) ||
        !(sgd->weight_decay >= 0.0))
        return bnorm__fail(BNORM_ERR_INVALID_ARGUMENT,
                           "%s: lr=%g, momentum=%g, weight_decay=%g out of range", fn, lr,
                           sgd->momentum, sgd->weight_decay);
    const float m = (float)sgd->momentum, flr = (float)lr;
    for (int i = 0; i < bnorm_model_tensor_count(model); i++) {
        bnorm_named_tensor t;
        bnorm_model_tensor(model, i, &t);
        if (!t.grad) continue; /* a buffer */
        const float wd = (t.no_decay && !sgd->decay_bn_bias) ? 0.0f : (float)sgd->weight_decay;
        float *p = t.data;
        for (int64_t k = 0; k < t.numel; k++) {
            float g = t.grad[k] + wd * p[k];
            if (m != 0.0f) {
                t.momentum[k] = m * t.momentum[k] + g;
                g = sgd->nesterov ? g + m * t.momentum[k] : t.momentum[k];
            }
            p[k] -= flr * g;
        }
    }
    return BNORM_OK;
}

double bnorm_schedule_lr(const bnorm_schedule *s, double base_lr, double t, double total) {
    double lr = base_lr;
    switch (s->kind) {
    case BNORM_SCHEDULE_STEP:
        if (s->step_epochs > 0) lr *= pow(s->gamma, floor(t / s->step_epochs));
        break;
    case BNORM_SCHEDULE_COSINE:
        if (total > 0) lr *= 0.5 * (1.0 + cos(3.141592653589793 * fmin(t / total, 1.0)));
        break;
    default:
        break;
    }
    if (s->warmup_epochs > 0 && t < s->warmup_epochs)
        lr *= 0.1 + 0.9 * t / s->warmup_epochs; /* linear from lr/10 */
    return lr;
}
