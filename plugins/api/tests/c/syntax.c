/* Compiled by tests/header.rs with the system C compiler: the header is valid C99 on its own. */
#include "scdd_plugin.h"
#include <stddef.h>

static ScddModel *create(const char *config_json, uint64_t seed) { (void)config_json; (void)seed; return NULL; }
static int32_t fit(ScddModel *m, const ScddFitInput *in) { (void)m; (void)in; return SCDD_ERROR; }
static int32_t predict(ScddModel *m, const ScddPredictInput *in, ScddPredictOutput *out) { (void)m; (void)in; (void)out; return SCDD_ERROR; }
static void release(ScddModel *m) { (void)m; }
static const char *last_error(const ScddModel *m) { (void)m; return "not implemented"; }

static const ScddPluginDescriptor DESCRIPTOR = {
    SCDD_PLUGIN_MAGIC, SCDD_PLUGIN_ABI_MAJOR, SCDD_PLUGIN_ABI_MINOR, sizeof(ScddPluginDescriptor),
    SCDD_NEEDS_LOG_NORMALISED, "syntax", "0.0.0", "", create, fit, predict, release, last_error,
};

const ScddPluginDescriptor *scdd_plugin_descriptor(void) { return &DESCRIPTOR; }
static const ScddDescriptorFn CHECK_TYPE = scdd_plugin_descriptor;
