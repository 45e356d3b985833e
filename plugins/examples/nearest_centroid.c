/* A third-party scdd evaluator plugin in plain C, written from plugins/api/include/scdd_plugin.h
 * alone: nearest centroid on the log-normalised cells, probabilities softmax(-distance).
 *
 *   cc -std=c99 -O2 -shared -fPIC -I plugins/api/include plugins/examples/nearest_centroid.c \
 *      -o libnearest_centroid.so -lm
 *
 * Config (JSON): ignored; the seed is unused (the method is deterministic). */
#include "scdd_plugin.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Model {
    float *centroids; /* n_classes x n_genes */
    uint64_t n_genes;
    uint32_t n_classes;
    char error[256];
} Model;

static char create_error[256];

static ScddModel *nc_create(const char *config_json, uint64_t seed) {
    (void)seed;
    if (config_json != NULL && config_json[0] != '\0' && config_json[0] != '{') {
        snprintf(create_error, sizeof create_error, "config is not a JSON object");
        return NULL;
    }
    Model *m = calloc(1, sizeof(Model));
    if (m == NULL) {
        snprintf(create_error, sizeof create_error, "out of memory");
        return NULL;
    }
    return (ScddModel *)m;
}

static int32_t nc_fit(ScddModel *handle, const ScddFitInput *in) {
    Model *m = (Model *)handle;
    if (m == NULL || in == NULL || in->x.data == NULL || in->labels == NULL || in->n_classes == 0) return SCDD_ERROR;
    uint64_t n = in->x.n_cells, g = in->x.n_genes;
    uint32_t k = in->n_classes;
    float *c = calloc((size_t)(k * g), sizeof(float));
    uint64_t *count = calloc(k, sizeof(uint64_t));
    if (c == NULL || count == NULL) {
        free(c);
        free(count);
        snprintf(m->error, sizeof m->error, "out of memory for %u x %llu centroids", k, (unsigned long long)g);
        return SCDD_ERROR;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint32_t l = in->labels[i];
        if (l >= k) {
            free(c);
            free(count);
            snprintf(m->error, sizeof m->error, "label %u of cell %llu >= %u classes", l, (unsigned long long)i, k);
            return SCDD_ERROR;
        }
        count[l]++;
        for (uint64_t j = 0; j < g; j++) c[l * g + j] += in->x.data[i * g + j];
    }
    for (uint32_t l = 0; l < k; l++)
        for (uint64_t j = 0; j < g; j++) c[l * g + j] /= count[l] ? (float)count[l] : 1.0f;
    free(count);
    free(m->centroids);
    m->centroids = c;
    m->n_genes = g;
    m->n_classes = k;
    m->error[0] = '\0';
    return SCDD_OK;
}

static int32_t nc_predict(ScddModel *handle, const ScddPredictInput *in, ScddPredictOutput *out) {
    Model *m = (Model *)handle;
    if (m == NULL || in == NULL || out == NULL) return SCDD_ERROR;
    if (m->centroids == NULL) {
        snprintf(m->error, sizeof m->error, "predict before fit");
        return SCDD_ERROR;
    }
    if (in->x.n_genes != m->n_genes) {
        snprintf(m->error, sizeof m->error, "%llu genes, fit on %llu", (unsigned long long)in->x.n_genes, (unsigned long long)m->n_genes);
        return SCDD_ERROR;
    }
    uint64_t g = m->n_genes;
    uint32_t k = m->n_classes;
    for (uint64_t i = 0; i < in->x.n_cells; i++) {
        const float *x = in->x.data + i * g;
        float *p = out->probs + i * k;
        uint32_t best = 0;
        for (uint32_t l = 0; l < k; l++) {
            double d = 0.0;
            for (uint64_t j = 0; j < g; j++) {
                double diff = (double)x[j] - (double)m->centroids[l * g + j];
                d += diff * diff;
            }
            p[l] = (float)sqrt(d);
            if (p[l] < p[best]) best = l;
        }
        double z = 0.0, lo = p[best];
        for (uint32_t l = 0; l < k; l++) z += exp(-(p[l] - lo));
        for (uint32_t l = 0; l < k; l++) p[l] = (float)(exp(-(p[l] - lo)) / z);
        out->labels[i] = best;
    }
    m->error[0] = '\0';
    return SCDD_OK;
}

static void nc_free(ScddModel *handle) {
    Model *m = (Model *)handle;
    if (m != NULL) free(m->centroids);
    free(m);
}

static const char *nc_last_error(const ScddModel *handle) {
    return handle == NULL ? create_error : ((const Model *)handle)->error;
}

static const ScddPluginDescriptor DESCRIPTOR = {
    SCDD_PLUGIN_MAGIC, SCDD_PLUGIN_ABI_MAJOR, SCDD_PLUGIN_ABI_MINOR, sizeof(ScddPluginDescriptor),
    SCDD_NEEDS_LOG_NORMALISED, "nearest-centroid-c", "1.0.0", "",
    nc_create, nc_fit, nc_predict, nc_free, nc_last_error,
};

const ScddPluginDescriptor *scdd_plugin_descriptor(void) { return &DESCRIPTOR; }
