/* The scdd evaluator plugin ABI. Generated from plugins/api (crate scdd-plugin-api) by
 * cbindgen: do not edit; see the crate docs for the memory-ownership rules. */

#ifndef SCDD_PLUGIN_H
#define SCDD_PLUGIN_H

#include <stdint.h>

/**
 * `"SCDDPLUG"` read as a little-endian u64: the first field of every descriptor.
 */
#define SCDD_PLUGIN_MAGIC 5140098457339708243

/**
 * Layout-breaking version of this ABI.
 */
#define SCDD_PLUGIN_ABI_MAJOR 1

/**
 * Additive version of this ABI (fields appended).
 */
#define SCDD_PLUGIN_ABI_MINOR 0

/**
 * Bits of [`ScddPluginDescriptor::needs`]: what the host must supply to `fit` and `predict`.
 */
#define SCDD_NEEDS_LOG_NORMALISED 1

/**
 * Gene names (`ScddFitInput::gene_names`; otherwise the host may pass null).
 */
#define SCDD_NEEDS_GENE_NAMES (1 << 1)

/**
 * Raw counts next to the log-normalised matrix (`ScddFitInput::counts`, `ScddPredictInput::counts`).
 */
#define SCDD_NEEDS_COUNTS (1 << 2)

/**
 * Every bit this version defines; a plugin asking for another is refused.
 */
#define SCDD_NEEDS_KNOWN ((SCDD_NEEDS_LOG_NORMALISED | SCDD_NEEDS_GENE_NAMES) | SCDD_NEEDS_COUNTS)

/**
 * Return values of `fit` and `predict`.
 */
#define SCDD_OK 0

/**
 * The call failed; `last_error(model)` says why.
 */
#define SCDD_ERROR 1

/**
 * The plugin panicked (Rust) or threw (C++); `last_error(model)` has the message.
 */
#define SCDD_PANIC 2

/**
 * An opaque model owned by the plugin (a forward-declared struct in C).
 */
typedef struct ScddModel ScddModel;

/**
 * `create(config_json, seed)`: a new model, or null (then `last_error(NULL)` says why).
 */
typedef struct ScddModel *(*ScddCreateFn)(const char *config_json, uint64_t seed);

/**
 * A dense row-major f32 matrix (`n_cells × n_genes`), borrowed for one call. `data` may be null
 * only where the descriptor did not ask for the matrix (e.g. counts without `SCDD_NEEDS_COUNTS`).
 */
typedef struct ScddMatrix {
  const float *data;
  uint64_t n_cells;
  uint64_t n_genes;
} ScddMatrix;

/**
 * What `fit` receives. Names are NUL-terminated UTF-8.
 */
typedef struct ScddFitInput {
  /**
   * Log-normalised cells (`log1p` of counts scaled to the bundle's total).
   */
  struct ScddMatrix x;
  /**
   * Raw counts of the same cells and genes (null data unless `SCDD_NEEDS_COUNTS`).
   */
  struct ScddMatrix counts;
  /**
   * Class id of each cell, `< n_classes`.
   */
  const uint32_t *labels;
  uint32_t n_classes;
  /**
   * `n_classes` names.
   */
  const char *const *class_names;
  /**
   * `n_genes` names (may be null unless `SCDD_NEEDS_GENE_NAMES`).
   */
  const char *const *gene_names;
} ScddFitInput;

/**
 * `fit(model, input)` → `SCDD_OK` / `SCDD_ERROR` / `SCDD_PANIC`.
 */
typedef int32_t (*ScddFitFn)(struct ScddModel *model, const struct ScddFitInput *input);

/**
 * What `predict` receives: cells with the genes of `fit`, in the same order.
 */
typedef struct ScddPredictInput {
  struct ScddMatrix x;
  struct ScddMatrix counts;
} ScddPredictInput;

/**
 * Host-allocated outputs of `predict`.
 */
typedef struct ScddPredictOutput {
  /**
   * `n_cells` class ids.
   */
  uint32_t *labels;
  /**
   * `n_cells × n_classes` probabilities, row-major; each row sums to 1.
   */
  float *probs;
} ScddPredictOutput;

/**
 * `predict(model, input, output)` → `SCDD_OK` / `SCDD_ERROR` / `SCDD_PANIC`.
 */
typedef int32_t (*ScddPredictFn)(struct ScddModel *model,
                                 const struct ScddPredictInput *input,
                                 struct ScddPredictOutput *output);

/**
 * `free(model)`: releases a model from `create` (null is ignored).
 */
typedef void (*ScddFreeFn)(struct ScddModel *model);

/**
 * `last_error(model)`: the last failure on this model (`NULL`: the last failed `create` on this
 * thread); an empty string when there was none. Owned by the plugin.
 */
typedef const char *(*ScddLastErrorFn)(const struct ScddModel *model);

/**
 * The static description every plugin exports. Field order is the ABI: the first four fields
 * never move.
 */
typedef struct ScddPluginDescriptor {
  /**
   * [`SCDD_PLUGIN_MAGIC`].
   */
  uint64_t magic;
  uint32_t abi_major;
  uint32_t abi_minor;
  /**
   * `sizeof(ScddPluginDescriptor)` as the plugin was built.
   */
  uint32_t descriptor_size;
  /**
   * `SCDD_NEEDS_*` bits.
   */
  uint32_t needs;
  /**
   * Plugin name (`[A-Za-z0-9_-]+`), static.
   */
  const char *name;
  /**
   * Plugin version, static.
   */
  const char *version;
  /**
   * Comma-separated names of optional resources the config may point to (e.g. `gmt`), static;
   * empty when none.
   */
  const char *resources;
  ScddCreateFn create;
  ScddFitFn fit;
  ScddPredictFn predict;
  ScddFreeFn free;
  ScddLastErrorFn last_error;
} ScddPluginDescriptor;

/**
 * The type of the one function a plugin exports, under the name `scdd_plugin_descriptor`
 * ([`DESCRIPTOR_SYMBOL`]): it returns the plugin's static descriptor.
 */
typedef const struct ScddPluginDescriptor *(*ScddDescriptorFn)(void);

#endif  /* SCDD_PLUGIN_H */
