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
#include <cmath>
#include <cstddef>
#include <vector>

#include "kernels/qmodel.h"

namespace reparq {

std::vector<float> ef_gains(const QLinear& l) {
  const int64_t n = l.in, m = l.out;
  std::vector<float> g(size_t(n * n), 0.0f);
  if (!(l.ef_damp > 0) || n <= 0) return g;
  std::vector<double> w(size_t(m * n));
  for (int64_t r = 0; r < m; ++r)
    for (int64_t k = 0; k < n; ++k) w[size_t(r * n + k)] = double(l.weight(r, k));
  // Upper triangle of H = W^T W (each element summed over the rows in order).
  std::vector<double> h(size_t(n * n), 0.0);
  for (int64_t r = 0; r < m; ++r) {
    const double* wr = w.data() + r * n;
    for (int64_t i = 0; i < n; ++i) {
      const double wi = wr[i];
      double* hi = h.data() + i * n;
      for (int64_t j = i; j < n; ++j) hi[j] += wi * wr[j];
    }
  }
  double trace = 0.0;
  for (int64_t i = 0; i < n; ++i) trace += h[size_t(i * n + i)];
  const double lambda = double(l.ef_damp) * trace / double(n);
  if (!(lambda > 0) || !std::isfinite(lambda)) return g;   // all-zero weights: nothing to feed back
  for (int64_t i = 0; i < n; ++i) h[size_t(i * n + i)] += lambda;
  // H = R R^T, R upper triangular, from the last column back.
  std::vector<double> rr(size_t(n * n), 0.0);
  for (int64_t j = n - 1; j >= 0; --j) {
    const double* rj = rr.data() + j * n;
    double d = h[size_t(j * n + j)];
    for (int64_t k = j + 1; k < n; ++k) d -= rj[k] * rj[k];
    const double rjj = std::sqrt(d > lambda ? d : lambda);   // d >= lambda in exact arithmetic
    rr[size_t(j * n + j)] = rjj;
    for (int64_t i = 0; i < j; ++i) {
      const double* ri = rr.data() + i * n;
      double s = h[size_t(i * n + j)];
      for (int64_t k = j + 1; k < n; ++k) s -= ri[k] * rj[k];
      rr[size_t(i * n + j)] = s / rjj;
    }
  }
  // U = R^-1 (upper triangular), from the last row up; G[i][j] = U[i][j] / U[i][i].
  std::vector<double> u(size_t(n * n), 0.0);
  std::vector<double> acc(static_cast<size_t>(n), 0.0);
  for (int64_t i = n - 1; i >= 0; --i) {
    const double* ri = rr.data() + i * n;
    for (int64_t j = i; j < n; ++j) acc[size_t(j)] = 0.0;
    for (int64_t k = i + 1; k < n; ++k) {   // acc[j] = sum_{k=i+1..j} R[i][k] U[k][j], k ascending
      const double rik = ri[k];
      const double* uk = u.data() + k * n;
      for (int64_t j = k; j < n; ++j) acc[size_t(j)] += rik * uk[j];
    }
    const double rii = ri[i];
    double* ui = u.data() + i * n;
    ui[i] = 1.0 / rii;
    for (int64_t j = i + 1; j < n; ++j) {
      ui[j] = -acc[size_t(j)] / rii;
      g[size_t(i * n + j)] = float(-acc[size_t(j)]);
    }
  }
  return g;
}

}  // namespace reparq
