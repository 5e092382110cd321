/* bench.c: times reparq_run through the C API, for latency on a board (or, with 0 and N runs
 * under qemu's instruction-counting plugin, instructions per inference: .ci/arm-tests.sh).
 *
 *   bench MODEL.safetensors [RUNS=20] [THREADS=1] [BATCH=1]
 *
 * Images are fixed pseudo-random pixels. Prints the ISA and the mean milliseconds per image.
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "reparq.h"

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char** argv) {
  reparq_model* model = NULL;
  unsigned char* pixels = NULL;
  float* logits = NULL;
  int runs = 20, threads = 1, batch = 1, h, w, classes, status, i;
  unsigned state = 12345u;
  double t0, t1;
  long n;

  if (argc < 2 || argc > 5) {
    fprintf(stderr, "usage: %s MODEL.safetensors [RUNS=20] [THREADS=1] [BATCH=1]\n", argv[0]);
    return 1;
  }
  if (argc > 2) runs = atoi(argv[2]);
  if (argc > 3) threads = atoi(argv[3]);
  if (argc > 4) batch = atoi(argv[4]);
  if (runs < 0 || batch < 1) {
    fprintf(stderr, "error: RUNS must be >= 0 and BATCH >= 1\n");
    return 1;
  }
  status = reparq_open(argv[1], &model);
  if (status != REPARQ_OK) {
    fprintf(stderr, "error: %s\n", reparq_last_error(NULL));
    return status;
  }
  if ((status = reparq_set_threads(model, threads)) != REPARQ_OK ||
      (status = reparq_input_shape(model, &h, &w)) != REPARQ_OK ||
      (status = reparq_num_classes(model, &classes)) != REPARQ_OK) {
    fprintf(stderr, "error: %s\n", reparq_last_error(model));
    reparq_close(model);
    return status;
  }
  n = (long)batch * h * w;
  pixels = (unsigned char*)malloc((size_t)n);
  logits = (float*)malloc(sizeof(float) * (size_t)batch * (size_t)classes);
  if (pixels == NULL || logits == NULL) {
    fprintf(stderr, "error: out of memory\n");
    status = 3;
    goto done;
  }
  for (i = 0; i < n; ++i) {
    state = state * 1664525u + 1013904223u;
    pixels[i] = (unsigned char)(state >> 24);
  }
  t0 = now_seconds();
  for (i = 0; i < runs; ++i) {
    if ((status = reparq_run(model, pixels, batch, logits)) != REPARQ_OK) {
      fprintf(stderr, "error: %s\n", reparq_last_error(model));
      goto done;
    }
  }
  t1 = now_seconds();
  printf("%s: %d runs x batch %d, %d thread%s, %s: %.3f ms per image\n", argv[1], runs, batch, threads,
         threads == 1 ? "" : "s", reparq_isa(model), runs > 0 ? 1e3 * (t1 - t0) / ((double)runs * batch) : 0.0);
done:
  free(logits);
  free(pixels);
  reparq_close(model);
  return status;
}
