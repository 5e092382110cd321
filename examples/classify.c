/* classify.c: classifies one PGM image with a reparq quantized model, through the C API only.
 *
 *   classify MODEL.safetensors IMAGE.pgm [THREADS]
 *
 * Prints the top class and the three best logits. The image must be 8-bit grayscale PGM
 * (binary "P5" or text "P2", maxval <= 255); one of another size is resampled to the model's
 * input size (nearest neighbour). Exit codes: 0 ok, 1 usage, 2 bad model or image, 3 internal.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reparq.h"

/* Next whitespace-separated token of a PGM header as an int (skips '#' comments); -1 on error. */
static int pgm_int(FILE* f) {
  int c = fgetc(f), v = 0, digits = 0;
  for (;;) {
    while (c != EOF && isspace(c)) c = fgetc(f);
    if (c != '#') break;
    while (c != EOF && c != '\n') c = fgetc(f);
  }
  while (c != EOF && isdigit(c) && v < 100000) {
    v = v * 10 + (c - '0');
    ++digits;
    c = fgetc(f);
  }
  return digits > 0 && v < 100000 ? v : -1; /* the one whitespace after maxval is consumed */
}

/* Reads a PGM file; returns a malloc'ed w x h buffer scaled to 0..255, or NULL with a message. */
static unsigned char* read_pgm(const char* path, int* w, int* h) {
  FILE* f = fopen(path, "rb");
  unsigned char* px = NULL;
  int magic0, magic1, maxval;
  long i, n;
  if (f == NULL) {
    fprintf(stderr, "error: %s: cannot open\n", path);
    return NULL;
  }
  magic0 = fgetc(f);
  magic1 = fgetc(f);
  if (magic0 != 'P' || (magic1 != '5' && magic1 != '2')) {
    fprintf(stderr, "error: %s: not a PGM file (P5 or P2)\n", path);
    goto fail;
  }
  *w = pgm_int(f);
  *h = pgm_int(f);
  maxval = pgm_int(f);
  if (*w < 1 || *h < 1 || maxval < 1 || maxval > 255) {
    fprintf(stderr, "error: %s: bad PGM header (only 8-bit grayscale is supported)\n", path);
    goto fail;
  }
  n = (long)*w * *h;
  px = (unsigned char*)malloc((size_t)n);
  if (px == NULL) goto fail;
  if (magic1 == '5') {
    if (fread(px, 1, (size_t)n, f) != (size_t)n) {
      fprintf(stderr, "error: %s: truncated pixel data\n", path);
      goto fail;
    }
  } else {
    for (i = 0; i < n; ++i) {
      const int v = pgm_int(f);
      if (v < 0 || v > maxval) {
        fprintf(stderr, "error: %s: bad pixel value at %ld\n", path, i);
        goto fail;
      }
      px[i] = (unsigned char)v;
    }
  }
  if (maxval != 255)
    for (i = 0; i < n; ++i) px[i] = (unsigned char)((px[i] * 255 + maxval / 2) / maxval);
  fclose(f);
  return px;
fail:
  free(px);
  fclose(f);
  return NULL;
}

int main(int argc, char** argv) {
  reparq_model* model = NULL;
  unsigned char *img = NULL, *input = NULL;
  float* logits = NULL;
  int iw, ih, mw, mh, classes, threads = 1, status, x, y, k, rank;
  int best[3] = {-1, -1, -1};

  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: %s MODEL.safetensors IMAGE.pgm [THREADS]\n", argv[0]);
    return 1;
  }
  if (argc == 4) threads = atoi(argv[3]);

  status = reparq_open(argv[1], &model);
  if (status != REPARQ_OK) {
    fprintf(stderr, "error: %s\n", reparq_last_error(NULL));
    return status;
  }
  if ((status = reparq_set_threads(model, threads)) != REPARQ_OK ||
      (status = reparq_input_shape(model, &mh, &mw)) != REPARQ_OK ||
      (status = reparq_num_classes(model, &classes)) != REPARQ_OK) {
    fprintf(stderr, "error: %s\n", reparq_last_error(model));
    goto done;
  }

  img = read_pgm(argv[2], &iw, &ih);
  if (img == NULL) {
    status = 2;
    goto done;
  }
  input = (unsigned char*)malloc((size_t)mw * mh);
  logits = (float*)malloc(sizeof(float) * (size_t)classes);
  if (input == NULL || logits == NULL) {
    fprintf(stderr, "error: out of memory\n");
    status = 3;
    goto done;
  }
  if (iw != mw || ih != mh)
    fprintf(stderr, "note: resampling %dx%d to the model's %dx%d (nearest neighbour)\n", iw, ih, mw, mh);
  for (y = 0; y < mh; ++y)
    for (x = 0; x < mw; ++x) input[y * mw + x] = img[(long)(y * ih / mh) * iw + x * iw / mw];

  status = reparq_run_checked(model, input, (size_t)mw * mh, 1, logits, (size_t)classes);
  if (status != REPARQ_OK) {
    fprintf(stderr, "error: %s\n", reparq_last_error(model));
    goto done;
  }
  for (k = 0; k < classes; ++k) {
    for (rank = 0; rank < 3; ++rank) {
      if (best[rank] < 0 || logits[k] > logits[best[rank]]) {
        memmove(best + rank + 1, best + rank, sizeof(int) * (size_t)(2 - rank));
        best[rank] = k;
        break;
      }
    }
  }
  printf("%s: class %d\n", argv[2], best[0]);
  for (rank = 0; rank < 3 && best[rank] >= 0; ++rank)
    printf("  #%d class %d logit %.4f\n", rank + 1, best[rank], logits[best[rank]]);
  printf("  (%s, %d thread%s)\n", reparq_isa(model), threads, threads == 1 ? "" : "s");

done:
  free(logits);
  free(input);
  free(img);
  reparq_close(model);
  return status;
}
