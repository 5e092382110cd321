/* reparq.h: the C API of reparq's standalone runtime (static library reparq_runtime).
 *
 * Loads a quantized model written by `reparq quantize` (docs/FORMAT.md) and runs the integer
 * executor on batches of 8-bit grayscale images. Plain C declarations (C89 and later); the
 * implementation (kernels/c_api.cpp) is C++ but no exception crosses this boundary: every
 * function catches everything and returns a status code, with a message for
 * reparq_last_error(). A handle must not be used by two threads at once; different handles
 * are independent.
 *
 *   reparq_model* m = NULL;
 *   if (reparq_open("w8a8.safetensors", &m) != REPARQ_OK) {
 *     fprintf(stderr, "error: %s\n", reparq_last_error(NULL));
 *     return 2;
 *   }
 *   int h, w, classes;
 *   reparq_input_shape(m, &h, &w);
 *   reparq_num_classes(m, &classes);
 *   ... pixels: batch x h x w bytes; logits: batch x classes floats ...
 *   if (reparq_run(m, pixels, batch, logits) != REPARQ_OK) fprintf(stderr, "%s\n", reparq_last_error(m));
 *   reparq_close(m);
 */
#ifndef REPARQ_H
#define REPARQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes (the same numbers as the reparq CLI's exit codes). */
enum reparq_status {
  REPARQ_OK = 0,
  REPARQ_ERROR_USAGE = 1,    /* bad argument: null pointer, batch or thread count out of range,
                                REPARQ_MAX_ISA naming an ISA this CPU lacks */
  REPARQ_ERROR_INPUT = 2,    /* the model file is missing, truncated, corrupt or not a
                                reparq quantized model */
  REPARQ_ERROR_INTERNAL = 3  /* a bug, or out of memory */
};

/* An opened model with its executor (weights packed for the best ISA of this CPU, capped by
 * the environment variable REPARQ_MAX_ISA: scalar | neon | neondot | neoni8mm on Arm64,
 * scalar | avx2 | avx512vnni on x86-64). */
typedef struct reparq_model reparq_model;

/* Opens the quantized model at `path` and prepares it to run on one thread. On success
 * *model is the new handle; on failure *model is NULL and reparq_last_error(NULL) says why,
 * naming the file. */
int reparq_open(const char* path, reparq_model** model);

/* The message of the last failed call on `model`, or, for model == NULL, of the last failed
 * call on this thread that had no usable handle (reparq_open, or any call given NULL).
 * "" when there was none. The pointer stays valid until the next call on the same handle
 * (or thread). Never NULL. */
const char* reparq_last_error(const reparq_model* model);

/* Input images are height x width bytes, row-major, one gray channel (models with three
 * input channels replicate it). */
int reparq_input_shape(const reparq_model* model, int* height, int* width);

/* Number of logits per image. */
int reparq_num_classes(const reparq_model* model, int* num_classes);

/* Classifies `batch` images (1 <= batch <= 65536): pixels holds batch x height x width bytes,
 * logits receives batch x num_classes floats. Results do not depend on the thread count or on
 * how images are split into batches, and are bit-identical across ISAs and platforms. */
int reparq_run(reparq_model* model, const uint8_t* pixels, int batch, float* logits);

/* reparq_run with the sizes of both buffers, for callers that can state them (recommended):
 * pixel_bytes must equal batch x height x width and logits_capacity (in floats) must be at
 * least batch x num_classes, else REPARQ_ERROR_USAGE names the mismatch and nothing is written. */
int reparq_run_checked(reparq_model* model, const uint8_t* pixels, size_t pixel_bytes, int batch,
                       float* logits, size_t logits_capacity);

/* Uses `threads` threads (1..256) in the following reparq_run calls. Re-packs the weights;
 * on failure the handle keeps its previous thread count. */
int reparq_set_threads(reparq_model* model, int threads);

/* Name of the instruction set the kernels use, e.g. "neondot" or "avx512vnni" ("" for NULL). */
const char* reparq_isa(const reparq_model* model);

/* Frees the handle; NULL is allowed. */
void reparq_close(reparq_model* model);

#ifdef __cplusplus
}
#endif

#endif /* REPARQ_H */
