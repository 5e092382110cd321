// ef.cpp: the error-feedback gains of a Linear (docs/FORMAT.md "Error-feedback rounding").
//
// With W^ the dequantized weights (out x n) and H = W^T W^ + lambda I, lambda = ef_damp * trace / n,
// the output error |W^ (x - x^)|^2 of a rounded input row is H's quadratic form. Rounding the
// row's elements in order 0..n-1 and moving each one's error e_i onto the elements not rounded
// yet, x_j -= e_i G[i][j], with G[i][j] = U[i][j] / U[i][i] and U the upper-triangular factor
// of H^-1 = U^T U, is GPTQ's update applied to one activation row (OBQ's optimal compensation
// for the elements that remain). U = R^-1 where H = R R^T with R upper triangular, so
// G[i][j] = -sum_{k=i+1..j} R[i][k] U[k][j].
//
// Everything is double, summed in a fixed order, and this file is compiled with
// -ffp-contract=off: the gains are the same bits on every ISA, in the executor and in the
// simulated engine (which calls this function).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "kernels/qmodel.h"

namespace reparq {

namespace {

// The three O(n^3) loops below are written as axpys (a[j] -= c * b[j] over contiguous j, each
// element updated in a fixed order), never as dot products: they vectorize without
// reassociation, so every vector width gives the same bits as the scalar loop. On x86-64 with
// GCC they are compiled for AVX-512 and AVX2 too and picked at load time (target_clones;
// -ffp-contract=off keeps FMA out of every clone).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define REPARQ_EF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define REPARQ_EF_CLONES
#endif

constexpr int64_t kEfPanel = 32;   // rows of W (Gram), columns (factor), rows (inverse) per cache block

// Upper triangle of H += W^T W, each element summed over the rows r = 0..m-1 in order; a block
// of kEfPanel rows of W is applied to one row of H at a time, so that row stays in cache.
REPARQ_EF_CLONES void gram_upper(const double* w, int64_t m, int64_t n, double* h) {
  for (int64_t r0 = 0; r0 < m; r0 += kEfPanel) {
    const int64_t r1 = r0 + kEfPanel < m ? r0 + kEfPanel : m;
    for (int64_t i = 0; i < n; ++i) {
      double* hi = h + i * n;
      for (int64_t r = r0; r < r1; ++r) {
        const double* wr = w + r * n;
        const double wi = wr[i];
        for (int64_t j = i; j < n; ++j) hi[j] += wi * wr[j];
      }
    }
  }
}

// H = R R^T with R upper triangular (row-major in rr), right-looking from the last column:
// column j of R is the current column j of the updated H over R[j][j]; then H[i][l] -=
// R[i][j] R[l][j] for i <= l < j. Every H[i][l] receives these updates for j = n-1, n-2, ...
// in that order; the columns of a panel of kEfPanel are applied to the rest of the triangle
// together (row by row, still in decreasing j), which changes the memory traffic, not the
// order. h (upper triangle) is overwritten; cols holds kEfPanel x n doubles.
// R[j][j] >= sqrt(lambda) (exact arithmetic gives d >= lambda).
REPARQ_EF_CLONES void factor_upper(double* h, int64_t n, double lambda, double* rr, double* cols) {
  for (int64_t jb = n - 1; jb >= 0; jb -= kEfPanel) {
    const int64_t j0 = jb - kEfPanel + 1 > 0 ? jb - kEfPanel + 1 : 0;
    for (int64_t j = jb; j >= j0; --j) {
      double* col = cols + (jb - j) * n;
      const double d = h[j * n + j];
      const double rjj = std::sqrt(d > lambda ? d : lambda);
      for (int64_t i = 0; i < j; ++i) col[i] = h[i * n + j] / rjj;
      col[j] = rjj;
      for (int64_t i = 0; i <= j; ++i) rr[i * n + j] = col[i];
      for (int64_t i = 0; i < j; ++i) {   // inside the panel: columns j0..j-1
        const double ci = col[i];
        double* hi = h + i * n;
        for (int64_t l = i > j0 ? i : j0; l < j; ++l) hi[l] -= ci * col[l];
      }
    }
    for (int64_t i = 0; i < j0; ++i) {   // the rest: columns i..j0-1 of the rows above the panel
      double* hi = h + i * n;
      for (int64_t j = jb; j >= j0; --j) {
        const double* col = cols + (jb - j) * n;
        const double ci = col[i];
        for (int64_t l = i; l < j0; ++l) hi[l] -= ci * col[l];
      }
    }
  }
}

// U = R^-1 (upper triangular), from the last row up: U[i][j] = -acc[j] / R[i][i] with
// acc[j] = sum_{k=j, j-1, ..., i+1} R[i][k] U[k][j] (decreasing k); G[i][j] = U[i][j] / U[i][i]
// = -acc[j]. The rows of a block of kEfPanel share each read of U[k] for k below the block;
// acc holds kEfPanel x n doubles.
REPARQ_EF_CLONES void gains_from_factor(const double* rr, int64_t n, double* u, double* acc, float* g) {
  for (int64_t ib = n - 1; ib >= 0; ib -= kEfPanel) {
    const int64_t i0 = ib - kEfPanel + 1 > 0 ? ib - kEfPanel + 1 : 0;
    for (int64_t i = i0; i <= ib; ++i) {
      double* a = acc + (ib - i) * n;
      for (int64_t j = i; j < n; ++j) a[j] = 0.0;
    }
    for (int64_t k = n - 1; k > ib; --k) {   // rows of U below the block, decreasing k
      const double* uk = u + k * n;
      for (int64_t i = i0; i <= ib; ++i) {
        const double rik = rr[i * n + k];
        double* a = acc + (ib - i) * n;
        for (int64_t j = k; j < n; ++j) a[j] += rik * uk[j];
      }
    }
    for (int64_t i = ib; i >= i0; --i) {   // inside the block, then the row itself
      const double* ri = rr + i * n;
      double* a = acc + (ib - i) * n;
      for (int64_t k = ib; k > i; --k) {
        const double rik = ri[k];
        const double* uk = u + k * n;
        for (int64_t j = k; j < n; ++j) a[j] += rik * uk[j];
      }
      const double rii = ri[i];
      double* ui = u + i * n;
      ui[i] = 1.0 / rii;
      for (int64_t j = i + 1; j < n; ++j) {
        ui[j] = -a[j] / rii;
        g[i * n + j] = float(-a[j]);
      }
    }
  }
}

}  // namespace

namespace {

// Gains (n x n into g, zero-initialized) of the m x n weights w (row-major, double).
void block_gains(const std::vector<double>& w, int64_t m, int64_t n, float damp, float* g) {
  std::vector<double> h(size_t(n * n), 0.0);
  gram_upper(w.data(), m, n, h.data());
  double trace = 0.0;
  for (int64_t i = 0; i < n; ++i) trace += h[size_t(i * n + i)];
  const double lambda = double(damp) * trace / double(n);
  if (!(lambda > 0) || !std::isfinite(lambda)) return;   // all-zero weights: nothing to feed back
  for (int64_t i = 0; i < n; ++i) h[size_t(i * n + i)] += lambda;
  std::vector<double> rr(size_t(n * n), 0.0), panel(size_t(kEfPanel * n), 0.0);
  factor_upper(h.data(), n, lambda, rr.data(), panel.data());
  std::vector<double> u(size_t(n * n), 0.0);
  gains_from_factor(rr.data(), n, u.data(), panel.data(), g);
}

}  // namespace

std::vector<float> ef_gains(const QLinear& l) {
  const int64_t n = l.in, m = l.out, K = ef_block_size(l);
  if (!(l.ef_damp > 0) || n <= 0) return std::vector<float>(size_t(n * n), 0.0f);
  const int64_t last = n - (n - 1) / K * K;   // columns of the last block
  std::vector<float> g(size_t((n - last) * K + last * last), 0.0f);
  for (int64_t s = 0; s < n; s += K) {
    const int64_t b = std::min(K, n - s);
    std::vector<double> w(size_t(m * b));
    for (int64_t r = 0; r < m; ++r)
      for (int64_t k = 0; k < b; ++k) w[size_t(r * b + k)] = double(l.weight(r, s + k));
    block_gains(w, m, b, l.ef_damp, g.data() + s * K);
  }
  return g;
}

std::vector<float> ef_gains_dense(const QLinear& l) {
  const int64_t n = l.in, K = ef_block_size(l);
  const std::vector<float> g = ef_gains(l);
  if (K == n) return g;
  std::vector<float> d(size_t(n * n), 0.0f);
  for (int64_t s = 0; s < n; s += K) {
    const int64_t b = std::min(K, n - s);
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < b; ++j) d[size_t((s + i) * n + s + j)] = g[size_t(s * K + i * b + j)];
  }
  return d;
}

}  // namespace reparq
