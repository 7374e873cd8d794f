#pragma once
// Row-major GEMM on the CPU through OpenBLAS: C = alpha * op(A) op(B) + beta * C.
#include <cblas.h>

namespace cac::kernels::cpu {

inline void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* a, int lda,
                 const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}

// Accumulator type of the reference kernels: double for float data (the reference must be more
// accurate than what it checks), double for double.
template <class T> using Acc = double;

}  // namespace cac::kernels::cpu
