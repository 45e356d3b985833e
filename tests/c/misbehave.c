/* A plugin that misbehaves on request, for the host's isolation tests. Config: {"do": "MODE"}
 * with MODE one of ok (predict class 0 for every cell), error, segfault, abort, hang, nan,
 * range (a class id out of range). */
#include "scdd_plugin.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct Model { char mode[32]; uint32_t k; char error[128]; } Model;
static char create_error[128] = "";

static ScddModel *create(const char *config, uint64_t seed) {
    (void)seed;
    Model *m = calloc(1, sizeof(Model));
    const char *modes[] = {"error", "segfault", "abort", "hang", "nan", "range"};
    strcpy(m->mode, "ok");
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (config != NULL && strstr(config, modes[i]) != NULL) strcpy(m->mode, modes[i]);
    return (ScddModel *)m;
}

static int32_t fit(ScddModel *h, const ScddFitInput *in) {
    Model *m = (Model *)h;
    m->k = in->n_classes;
    if (strcmp(m->mode, "error") == 0) { strcpy(m->error, "this plugin refuses to fit"); return SCDD_ERROR; }
    if (strcmp(m->mode, "segfault") == 0) { volatile int *p = NULL; *p = 1; }
    if (strcmp(m->mode, "abort") == 0) abort();
    if (strcmp(m->mode, "hang") == 0) { volatile int x = 0; for (;;) x++; }
    return SCDD_OK;
}

static int32_t predict(ScddModel *h, const ScddPredictInput *in, ScddPredictOutput *out) {
    Model *m = (Model *)h;
    for (uint64_t i = 0; i < in->x.n_cells; i++) {
        out->labels[i] = strcmp(m->mode, "range") == 0 ? m->k : 0;
        for (uint32_t c = 0; c < m->k; c++)
            out->probs[i * m->k + c] = strcmp(m->mode, "nan") == 0 ? NAN : (c == 0 ? 1.0f : 0.0f);
    }
    return SCDD_OK;
}

static void release(ScddModel *h) { free(h); }
static const char *last_error(const ScddModel *h) { return h == NULL ? create_error : ((const Model *)h)->error; }

static const ScddPluginDescriptor D = {
    SCDD_PLUGIN_MAGIC, SCDD_PLUGIN_ABI_MAJOR, SCDD_PLUGIN_ABI_MINOR, sizeof(ScddPluginDescriptor),
    SCDD_NEEDS_LOG_NORMALISED, "misbehave", "0.1.0", "", create, fit, predict, release, last_error,
};
const ScddPluginDescriptor *scdd_plugin_descriptor(void) { return &D; }
