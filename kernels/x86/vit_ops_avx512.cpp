// vit_ops_avx512.cpp: the executor's float row operations (kernels/vit_ops_impl.h) compiled with
// the avx512 flags: the compiler vectorizes the same loops; results are bit-identical to
// kernels/vit_ref.cpp (no FMA contraction, no fast-math; tested in test_executor.cpp).
#include <cstdint>

#include "kernels/vit_ops.h"

namespace reparq {
namespace vitops_avx512 {
#define VO_NAME "avx512"
#include "kernels/vit_ops_impl.h"
#undef VO_NAME
}  // namespace vitops_avx512

namespace detail {
const VitRowOps& vit_row_ops_avx512() { return vitops_avx512::vo_table; }
}  // namespace detail
}  // namespace reparq
