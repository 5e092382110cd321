// qmodel.cpp: reading and writing "reparq-quant-1" .. "reparq-quant-7" files (docs/FORMAT.md).
#include "kernels/qmodel.h"

#include <cstring>
#include <sstream>

#include "kernels/error.h"
#include "kernels/gemm.h"
#include "kernels/safetensors.h"

namespace reparq {

namespace {

const char* const kFormat = "reparq-quant-1";
// Version 2 = version 1 + the optional GELU output multiplier (mlp.fc2.input_mul). A file is
// written as version 2 only when it uses the multiplier, so that a reader that does not know
// the tensor refuses the file instead of ignoring it; version-1 files are unchanged.
const char* const kFormat2 = "reparq-quant-2";
// Version 3 = version 2 + optional non-uniform activation levels (<site>.lut, FORMAT.md); written
// only when some site has them.
const char* const kFormat3 = "reparq-quant-3";
// Version 4 = version 3 + optional class-token quantizers (blocks.i.cls.*, FORMAT.md); written
// only when the blocks have them.
const char* const kFormat4 = "reparq-quant-4";
// Version 5 = version 4 + optional error-feedback rounding of a block Linear's input
// (<p>.input.ef_damp, FORMAT.md); written only when some Linear has it.
const char* const kFormat5 = "reparq-quant-5";
// Version 6 = version 5 + optional power-of-two weight column factors (<p>.weight_shift) and
// error-feedback blocks (<p>.input.ef_block), FORMAT.md; written only when some Linear has them.
const char* const kFormat6 = "reparq-quant-6";
// Version 7 = version 6 + the optional dynamic scale of the class token's post-Softmax row
// (blocks.i.attn.softmax.cls_dynamic), FORMAT.md; written only when some block has it.
const char* const kFormat7 = "reparq-quant-7";
// Tensor names of ClsQuant::sites(), in its order.
const char* const kClsSites[] = {"qkv.input", "q", "k", "softmax", "proj.input", "fc1.input", "fc2.input"};
const char* const kKinds[] = {"uniform", "log2", "logsqrt2", "tanq"};

int kind_id(const std::string& k) {
  for (int i = 0; i < 4; ++i)
    if (k == kKinds[i]) return i;
  return -1;
}

std::string num(double v) {
  std::ostringstream o;
  o.precision(9);
  o << v;
  return o.str();
}

struct Writer {
  SafeTensorsWriter w;
  void f32(const std::string& n, const std::vector<float>& v, std::vector<int64_t> shape = {}) {
    if (shape.empty()) shape = {int64_t(v.size())};
    w.add(n, DType::F32, shape, v.data(), v.size() * 4);
  }
  void i32(const std::string& n, const std::vector<int32_t>& v) { w.add(n, DType::I32, {int64_t(v.size())}, v.data(), v.size() * 4); }
  void act(const std::string& p, const ActQuant& a) {
    f32(p + ".scale", {a.scale});
    i32(p + ".zero_bits", {a.zero, a.bits});
    if (!a.lut.empty()) w.add(p + ".lut", DType::U8, {int64_t(a.lut.size())}, a.lut.data(), a.lut.size());
  }
  void linear(const std::string& p, const QLinear& l) {
    if (l.wbits <= 4) {
      std::vector<uint8_t> packed = pack_int4_rows(l.w.data(), int(l.out), int(l.in));
      w.add(p + ".weight", DType::U8, {l.out, (l.in + 1) / 2}, packed.data(), packed.size());
    } else {
      w.add(p + ".weight", DType::I8, {l.out, l.in}, l.w.data(), l.w.size());
    }
    f32(p + ".weight_scale", l.w_scale);
    i32(p + ".weight_zero", l.w_zero);
    i32(p + ".weight_bits", {l.wbits});
    f32(p + ".bias", l.bias);
    act(p + ".input", l.input);
    if (l.ef_damp > 0) f32(p + ".input.ef_damp", {l.ef_damp});
    if (l.ef_block > 0) i32(p + ".input.ef_block", {l.ef_block});
    if (!l.w_shift.empty()) w.add(p + ".weight_shift", DType::U8, {l.in}, l.w_shift.data(), l.w_shift.size());
  }
};

struct Reader {
  const SafeTensorsFile& f;
  const std::string& path;
  bool v3 = false;   // the file's format allows level tables
  bool v5 = false;   // ... and error-feedback rounding
  bool v6 = false;   // ... and weight column shifts and error-feedback blocks
  [[noreturn]] void fail(const std::string& m) const { throw InputError(path + ": " + m); }
  const TensorView& t(const std::string& n, DType dt, std::vector<int64_t> shape) const {
    const TensorView& v = f.get(n, shape);
    if (v.dtype != dt) fail("tensor '" + n + "' has dtype " + dtype_name(v.dtype) + ", expected " + dtype_name(dt));
    return v;
  }
  std::vector<float> f32(const std::string& n, std::vector<int64_t> shape, bool positive = false) const {
    const TensorView& v = t(n, DType::F32, shape);
    std::vector<float> out(v.numel());
    std::memcpy(out.data(), v.data, v.nbytes);
    for (float x : out) {
      if (!std::isfinite(x)) fail("tensor '" + n + "' holds NaN or infinite values");
      if (positive && !(x > 0)) fail("tensor '" + n + "' holds a scale <= 0 (" + num(x) + ")");
    }
    return out;
  }
  std::vector<int32_t> i32(const std::string& n, std::vector<int64_t> shape) const {
    const TensorView& v = t(n, DType::I32, shape);
    std::vector<int32_t> out(v.numel());
    std::memcpy(out.data(), v.data, v.nbytes);
    return out;
  }
  ActQuant act(const std::string& p) const {
    ActQuant a;
    a.scale = f32(p + ".scale", {1}, true)[0];
    auto zb = i32(p + ".zero_bits", {2});
    a.zero = zb[0];
    a.bits = zb[1];
    if (a.bits < 2 || a.bits > 8) fail("'" + p + "' has " + std::to_string(a.bits) + "-bit activations; supported: 2..8");
    if (a.zero < 0 || a.zero > a.qmax()) fail("'" + p + "' zero point " + std::to_string(a.zero) + " is outside [0, " + std::to_string(a.qmax()) + "]");
    if (f.find(p + ".lut")) {
      if (!v3) fail("'" + p + ".lut' needs format " + kFormat3);
      const TensorView& v = t(p + ".lut", DType::U8, {int64_t(a.qmax()) + 1});
      a.lut.assign(v.data, v.data + v.nbytes);
      if (!a.levels_valid()) fail("'" + p + ".lut' must be non-decreasing codes in [0, " + std::to_string(a.qmax()) + "]");
    }
    return a;
  }
  QLinear linear(const std::string& p, int64_t out, int64_t in) const {
    QLinear l;
    l.out = out;
    l.in = in;
    l.wbits = i32(p + ".weight_bits", {1})[0];
    if (l.wbits < 2 || l.wbits > 8) fail("'" + p + "' has " + std::to_string(l.wbits) + "-bit weights; supported: 2..8");
    const int32_t lo = -(1 << (l.wbits - 1)), hi = (1 << (l.wbits - 1)) - 1;
    if (l.wbits <= 4) {
      const TensorView& v = t(p + ".weight", DType::U8, {out, (in + 1) / 2});
      l.w.resize(out * in);  // after the shape check: the file really holds out x in codes
      for (int64_t n = 0; n < out; ++n)
        for (int64_t k = 0; k < in; ++k) {
          uint8_t byte = v.data[n * ((in + 1) / 2) + k / 2];
          int nib = (k % 2) ? (byte >> 4) : (byte & 15);
          l.w[n * in + k] = static_cast<int8_t>(nib >= 8 ? nib - 16 : nib);
        }
    } else {
      const TensorView& v = t(p + ".weight", DType::I8, {out, in});
      l.w.resize(out * in);
      std::memcpy(l.w.data(), v.data, v.nbytes);
    }
    for (int8_t x : l.w)
      if (x < lo || x > hi) fail("'" + p + ".weight' holds " + std::to_string(x) + ", outside the " + std::to_string(l.wbits) + "-bit range");
    l.w_scale = f32(p + ".weight_scale", {out}, true);
    if (f.find(p + ".input.ef_damp")) {
      if (!v5) fail("'" + p + ".input.ef_damp' needs format " + kFormat5);
      l.ef_damp = f32(p + ".input.ef_damp", {1})[0];
      if (!(l.ef_damp > 0) || l.ef_damp > 1e6f) fail("'" + p + ".input.ef_damp' must be in (0, 1e6], found " + num(l.ef_damp));
    }
    if (f.find(p + ".input.ef_block")) {
      if (!v6) fail("'" + p + ".input.ef_block' needs format " + kFormat6);
      if (!(l.ef_damp > 0)) fail("'" + p + ".input.ef_block' needs '" + p + ".input.ef_damp'");
      l.ef_block = i32(p + ".input.ef_block", {1})[0];
      if (l.ef_block < 1 || l.ef_block > in)
        fail("'" + p + ".input.ef_block' must be in [1, " + std::to_string(in) + "], found " + std::to_string(l.ef_block));
    }
    l.w_zero = i32(p + ".weight_zero", {out});
    for (int32_t z : l.w_zero)
      if (z < lo || z > hi) fail("'" + p + ".weight_zero' holds " + std::to_string(z) + ", outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    l.bias = f32(p + ".bias", {out});
    l.input = act(p + ".input");
    if (f.find(p + ".weight_shift")) {
      if (!v6) fail("'" + p + ".weight_shift' needs format " + kFormat6);
      if (l.wbits > 7) fail("'" + p + ".weight_shift' needs weights of at most 7 bits, found " + std::to_string(l.wbits));
      const TensorView& v = t(p + ".weight_shift", DType::U8, {in});
      l.w_shift.assign(v.data, v.data + v.nbytes);
      for (uint8_t s : l.w_shift)
        if (s > max_col_shift(l.wbits))
          fail("'" + p + ".weight_shift' holds " + std::to_string(s) + ", above " + std::to_string(max_col_shift(l.wbits)) +
               " for " + std::to_string(l.wbits) + "-bit weights");
    }
    const int gbits = l.wbits <= 4 && l.w_shift.empty() ? 4 : 8;   // the executor's GEMM operand
    if (in > gemm_max_k(gbits, l.input.bits))
      fail("'" + p + "' has K = " + std::to_string(in) + ", above the int32 accumulation bound " +
           std::to_string(gemm_max_k(gbits, l.input.bits)));
    return l;
  }
};

}  // namespace

void save_quant_model(const QuantModel& m, const std::string& path) {
  Writer W;
  const int64_t D = m.dim, T = m.tokens();
  W.linear("patch_embed", m.patch_embed);
  W.f32("cls_token", m.cls_token, {1, 1, D});
  W.f32("pos_embed", m.pos_embed, {1, T, D});
  for (size_t i = 0; i < m.blocks.size(); ++i) {
    const QBlock& b = m.blocks[i];
    std::string p = "blocks." + std::to_string(i) + ".";
    W.f32(p + "norm1.weight", b.ln1_w);
    W.f32(p + "norm1.bias", b.ln1_b);
    W.linear(p + "attn.qkv", b.qkv);
    W.act(p + "attn.q", b.q);
    W.act(p + "attn.k", b.k);
    W.act(p + "attn.v", b.v);
    int kid = kind_id(b.attn.kind);
    if (kid < 0) throw Error(kExitInternal, "unknown softmax quantizer kind '" + b.attn.kind + "'");
    W.i32(p + "attn.softmax.kind_bits", {kid, b.attn.bits});
    W.f32(p + "attn.softmax.params", {b.attn.scale, b.attn.param, b.attn.lut_scale});
    W.f32(p + "attn.softmax.thresholds", b.attn.thresholds);
    W.w.add(p + "attn.softmax.lut", DType::U8, {int64_t(b.attn.lut.size())}, b.attn.lut.data(), b.attn.lut.size());
    W.linear(p + "attn.proj", b.proj);
    W.f32(p + "norm2.weight", b.ln2_w);
    W.f32(p + "norm2.bias", b.ln2_b);
    W.linear(p + "mlp.fc1", b.fc1);
    W.linear(p + "mlp.fc2", b.fc2);
    if (!b.fc2_in_mul.empty()) W.f32(p + "mlp.fc2.input_mul", b.fc2_in_mul);
    if (b.attn_cls_dynamic) {
      if (b.cls) throw Error(kExitInternal, "a block with class-token quantizers cannot also have a dynamic class-row softmax scale");
      W.i32(p + "attn.softmax.cls_dynamic", {1});
    }
    if (b.cls) {
      for (int j = 0; j < 7; ++j) {
        const ActQuant& a = *b.cls->sites()[size_t(j)];
        if (!a.lut.empty()) throw Error(kExitInternal, "class-token quantizers have no level tables");
        W.act(p + "cls." + kClsSites[j], a);
      }
    }
  }
  W.f32("norm.weight", m.norm_w);
  W.f32("norm.bias", m.norm_b);
  W.linear("head", m.head);
  for (const auto& [k, v] : m.metadata) W.w.set_metadata(k, v);
  bool v2 = false, v3 = !m.head.input.lut.empty(), v4 = false, v5 = false;
  bool v6 = !m.patch_embed.w_shift.empty() || !m.head.w_shift.empty();
  bool v7 = false;
  for (const QBlock& b : m.blocks) {
    for (const QLinear* l : {&b.qkv, &b.proj, &b.fc1, &b.fc2}) v6 = v6 || !l->w_shift.empty() || l->ef_block > 0;
    for (const QLinear* l : {&b.qkv, &b.proj, &b.fc1, &b.fc2}) v5 = v5 || l->ef_damp > 0;
    v2 = v2 || !b.fc2_in_mul.empty();
    v4 = v4 || b.cls.has_value();
    v7 = v7 || b.attn_cls_dynamic;
    for (const ActQuant* a : {&b.qkv.input, &b.q, &b.k, &b.v, &b.proj.input, &b.fc1.input, &b.fc2.input})
      v3 = v3 || !a->lut.empty();
  }
  if (m.patch_embed.ef_damp > 0 || m.head.ef_damp > 0)
    throw Error(kExitInternal, "error-feedback rounding is for the blocks' Linears only");
  W.w.set_metadata("format", v7 ? kFormat7 : v6 ? kFormat6 : v5 ? kFormat5 : v4 ? kFormat4 : v3 ? kFormat3 : v2 ? kFormat2 : kFormat);
  W.w.set_metadata("arch", m.arch);
  W.w.set_metadata("image_size", std::to_string(m.image_size));
  W.w.set_metadata("patch_size", std::to_string(m.patch));
  W.w.set_metadata("in_chans", std::to_string(m.in_chans));
  W.w.set_metadata("embed_dim", std::to_string(m.dim));
  W.w.set_metadata("depth", std::to_string(m.depth));
  W.w.set_metadata("num_heads", std::to_string(m.heads));
  W.w.set_metadata("mlp_hidden", std::to_string(m.mlp_hidden));
  W.w.set_metadata("num_classes", std::to_string(m.num_classes));
  W.w.set_metadata("ln_eps", num(m.ln_eps));
  W.w.set_metadata("mean", num(m.mean));
  W.w.set_metadata("std", num(m.std));
  W.w.write(path);
}

bool is_quant_model_format(const std::string& fmt) {
  return fmt == kFormat || fmt == kFormat2 || fmt == kFormat3 || fmt == kFormat4 || fmt == kFormat5 || fmt == kFormat6 ||
         fmt == kFormat7;
}

bool is_quant_model_file(const std::string& path) {
  return is_quant_model_format(SafeTensorsFile::open(path).meta_str("format", ""));
}

QuantModel load_quant_model(const std::string& path) { return load_quant_model(SafeTensorsFile::open(path)); }

QuantModel load_quant_model(const SafeTensorsFile& f) {
  const std::string& path = f.path();
  Reader R{f, path};
  std::string fmt = f.meta_str("format", "");
  if (!is_quant_model_format(fmt))
    R.fail(fmt.empty() ? "not a reparq quantized model (no 'format' metadata; a float model? quantize it first)"
                       : "format '" + fmt + "' is not supported (expected " + kFormat + ", " + kFormat2 + ", " + kFormat3 +
                             ", " + kFormat4 + ", " + kFormat5 + ", " + kFormat6 + " or " + kFormat7 + ")");
  R.v3 = fmt == kFormat3 || fmt == kFormat4 || fmt == kFormat5 || fmt == kFormat6 || fmt == kFormat7;
  const bool v4 = R.v3 && fmt != kFormat3;
  R.v5 = fmt == kFormat5 || fmt == kFormat6 || fmt == kFormat7;
  R.v6 = fmt == kFormat6 || fmt == kFormat7;
  const bool v7 = fmt == kFormat7;
  QuantModel m;
  m.metadata = f.metadata();
  m.arch = f.meta_str("arch", "vit");
  m.image_size = f.meta_int("image_size");
  m.patch = f.meta_int("patch_size");
  m.in_chans = f.meta_int("in_chans");
  m.dim = f.meta_int("embed_dim");
  m.depth = f.meta_int("depth");
  m.heads = f.meta_int("num_heads");
  m.mlp_hidden = f.meta_int("mlp_hidden");
  m.num_classes = f.meta_int("num_classes");
  m.ln_eps = f.meta_double("ln_eps", 1e-6);
  m.mean = float(f.meta_double("mean", 0));
  m.std = float(f.meta_double("std", 1));
  auto bad = [&](bool c, const std::string& msg) { if (c) R.fail(msg); };
  bad(m.patch <= 0 || m.image_size <= 0 || m.image_size % m.patch || m.image_size > 4096, "image_size/patch_size metadata are inconsistent");
  bad(m.in_chans <= 0 || m.in_chans > 16, "in_chans metadata out of range");
  bad(m.dim <= 0 || m.dim > 65536 || m.heads <= 0 || m.dim % m.heads, "embed_dim/num_heads metadata are inconsistent");
  bad(m.depth <= 0 || m.depth > 1024, "depth metadata out of range");
  bad(m.mlp_hidden <= 0 || m.mlp_hidden > 1 << 20 || m.num_classes <= 0 || m.num_classes > 1 << 20, "mlp_hidden/num_classes metadata out of range");
  bad(!(m.ln_eps > 0) || !(m.std > 0) || !std::isfinite(m.mean), "ln_eps/mean/std metadata invalid");
  const int64_t D = m.dim, T = m.tokens(), H = m.mlp_hidden, P = m.in_chans * m.patch * m.patch;
  m.patch_embed = R.linear("patch_embed", D, P);
  bad(m.patch_embed.ef_damp > 0, "'patch_embed.input.ef_damp': error-feedback rounding is for the blocks' Linears only");
  bad(m.patch_embed.input.bits != 8 || m.patch_embed.input.zero != 0 || !m.patch_embed.input.lut.empty(),
      "'patch_embed.input' must be 8-bit with zero point 0 (raw pixels), found " +
          std::to_string(m.patch_embed.input.bits) + "-bit with zero point " + std::to_string(m.patch_embed.input.zero));
  bad(T > gemm_max_k(8, 8), std::to_string(T) + " tokens exceed the int32 accumulation bound of attention x V (" +
                                std::to_string(gemm_max_k(8, 8)) + ")");
  m.cls_token = R.f32("cls_token", {1, 1, D});
  m.pos_embed = R.f32("pos_embed", {1, T, D});
  m.blocks.resize(m.depth);
  for (int64_t i = 0; i < m.depth; ++i) {
    QBlock& b = m.blocks[i];
    std::string p = "blocks." + std::to_string(i) + ".";
    b.ln1_w = R.f32(p + "norm1.weight", {D});
    b.ln1_b = R.f32(p + "norm1.bias", {D});
    b.qkv = R.linear(p + "attn.qkv", 3 * D, D);
    b.q = R.act(p + "attn.q");
    b.k = R.act(p + "attn.k");
    b.v = R.act(p + "attn.v");
    auto kb = R.i32(p + "attn.softmax.kind_bits", {2});
    bad(kb[0] < 0 || kb[0] > 3, "'" + p + "attn.softmax' has an unknown quantizer kind " + std::to_string(kb[0]));
    bad(kb[1] < 2 || kb[1] > 8, "'" + p + "attn.softmax' has " + std::to_string(kb[1]) + " bits; supported: 2..8");
    b.attn.kind = kKinds[kb[0]];
    b.attn.bits = kb[1];
    auto pr = R.f32(p + "attn.softmax.params", {3});
    b.attn.scale = pr[0];
    b.attn.param = pr[1];
    b.attn.lut_scale = pr[2];
    bad(!(b.attn.lut_scale > 0), "'" + p + "attn.softmax' lut scale must be > 0");
    const int64_t L = int64_t(1) << b.attn.bits;
    b.attn.thresholds = R.f32(p + "attn.softmax.thresholds", {L - 1});
    for (int64_t j = 1; j < L - 1; ++j)
      bad(!(b.attn.thresholds[j] < b.attn.thresholds[j - 1]), "'" + p + "attn.softmax.thresholds' are not strictly decreasing");
    const TensorView& lut = R.t(p + "attn.softmax.lut", DType::U8, {L});
    b.attn.lut.assign(lut.data, lut.data + L);
    b.proj = R.linear(p + "attn.proj", D, D);
    b.ln2_w = R.f32(p + "norm2.weight", {D});
    b.ln2_b = R.f32(p + "norm2.bias", {D});
    b.fc1 = R.linear(p + "mlp.fc1", H, D);
    b.fc2 = R.linear(p + "mlp.fc2", D, H);
    if (f.find(p + "mlp.fc2.input_mul")) {
      bad(fmt == kFormat, "'" + p + "mlp.fc2.input_mul' needs format " + kFormat2 + " (the file says " + fmt + ")");
      b.fc2_in_mul = R.f32(p + "mlp.fc2.input_mul", {H});
      for (float v : b.fc2_in_mul)
        bad(!(v > 0) || !std::isfinite(v), "'" + p + "mlp.fc2.input_mul' must hold positive finite multipliers, found " + num(v));
    }
    if (f.find(p + "cls.q.scale")) {
      bad(!v4, "'" + p + "cls.*' needs format " + std::string(kFormat4) + " (the file says " + fmt + ")");
      ClsQuant c;
      for (int j = 0; j < 7; ++j) {
        ActQuant& a = *c.sites()[size_t(j)];
        a = R.act(p + "cls." + kClsSites[j]);
        bad(!a.lut.empty(), "'" + p + "cls." + kClsSites[j] + "' must not have a level table");
      }
      b.cls = c;
    }
    if (f.find(p + "attn.softmax.cls_dynamic")) {
      bad(!v7, "'" + p + "attn.softmax.cls_dynamic' needs format " + std::string(kFormat7) + " (the file says " + fmt + ")");
      const auto d = R.i32(p + "attn.softmax.cls_dynamic", {1});
      bad(d[0] != 1, "'" + p + "attn.softmax.cls_dynamic' must be 1, found " + std::to_string(d[0]));
      bad(b.cls.has_value(), "'" + p + "attn.softmax.cls_dynamic' cannot go with class-token quantizers (" + p + "cls.*)");
      b.attn_cls_dynamic = true;
    }
    bad(i > 0 && b.cls.has_value() != m.blocks[0].cls.has_value(),
        "'" + p + "cls.*': class-token quantizers must be in every block or in none");
  }
  m.norm_w = R.f32("norm.weight", {D});
  m.norm_b = R.f32("norm.bias", {D});
  m.head = R.linear("head", m.num_classes, D);
  bad(m.head.ef_damp > 0, "'head.input.ef_damp': error-feedback rounding is for the blocks' Linears only");
  return m;
}

}  // namespace reparq
