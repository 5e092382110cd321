// vit_ops_avx2.cpp: the executor's float row operations (kernels/vit_ops_impl.h) compiled with
// the avx2 flags: the compiler vectorizes the same loops; results are bit-identical to
// kernels/vit_ref.cpp (no FMA contraction, no fast-math; tested in test_executor.cpp).
#include <cstdint>

#include "kernels/vit_ops.h"

namespace reparq {
namespace vitops_avx2 {
#define VO_NAME "avx2"
#include "kernels/vit_ops_impl.h"
#undef VO_NAME
}  // namespace vitops_avx2

namespace detail {
const VitRowOps& vit_row_ops_avx2() { return vitops_avx2::vo_table; }
}  // namespace detail
}  // namespace reparq
