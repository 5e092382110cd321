// cmd_inspect.cpp: `reparq inspect FILE`: tensors, dtypes, shapes, sizes and metadata of any
// safetensors file; for reparq quantized files also the per-layer quantizers. --verify loads
// the file with the full validation of its kind (float model or quantized model).
#include <cstdio>
#include <string>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "calib/vit.h"
#include "kernels/error.h"
#include "kernels/qmodel.h"
#include "kernels/safetensors.h"

namespace reparq {

namespace {

struct InspectArgs {
  CommonOptions c;
  std::string file;
  bool verify = false;
  bool tensors = false;
};

std::string shape_of(const TensorView& t) {
  std::string s = "[";
  for (size_t i = 0; i < t.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "]";
}

void print_linear(const char* name, const QLinear& l) {
  std::string levels;
  if (!l.input.lut.empty()) {   // non-uniform levels on the 8-bit grid (FORMAT.md, <p>.lut)
    int n = 1;
    for (size_t i = 1; i < l.input.lut.size(); ++i) n += l.input.lut[i] != l.input.lut[i - 1];
    levels = ", " + std::to_string(n) + " levels";
  }
  if (l.ef_damp > 0) {   // error-feedback rounding of the input rows (FORMAT.md, format 5)
    char buf[64];
    if (l.ef_block > 0)
      std::snprintf(buf, sizeof buf, ", error feedback (damping %g, blocks of %d)", double(l.ef_damp), int(l.ef_block));
    else
      std::snprintf(buf, sizeof buf, ", error feedback (damping %g)", double(l.ef_damp));
    levels += buf;
  }
  std::string wq = "(per channel)";
  if (!l.w_shift.empty()) {   // power-of-two column factors (FORMAT.md, format 6)
    int n = 0, top = 0;
    for (uint8_t s : l.w_shift) n += s > 0, top = std::max(top, int(s));
    wq = "(per channel, " + std::to_string(n) + " columns x2^1..2^" + std::to_string(top) + ")";
  }
  std::printf("  %-22s W%d %s %5lld x %-5lld  input A%d scale %.4g zero %d%s\n", name, l.wbits, wq.c_str(),
              (long long)l.out, (long long)l.in, l.input.bits, l.input.scale, l.input.zero, levels.c_str());
}

int run_inspect(InspectArgs& a) {
  SafeTensorsFile f = SafeTensorsFile::open(a.file);
  size_t bytes = 0;
  for (const auto& t : f.tensors()) bytes += t.nbytes;
  const std::string fmt = f.meta_str("format", "");
  const bool quant = is_quant_model_format(fmt);
  if (a.c.json) {
    nlohmann::json j = {{"file", a.file}, {"kind", quant ? "reparq-quant" : "safetensors"},
                        {"tensors", f.tensors().size()}, {"tensor_bytes", bytes}, {"metadata", f.metadata()}};
    if (a.tensors) {
      j["tensor_list"] = nlohmann::json::array();
      for (const auto& t : f.tensors())
        j["tensor_list"].push_back({{"name", t.name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"bytes", t.nbytes}});
    }
    if (a.verify) {
      if (quant) load_quant_model(a.file); else Vit::load(a.file);
      j["verified"] = true;
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s: %s, %zu tensors, %.1f KiB of tensor data\n", a.file.c_str(),
              quant ? "reparq quantized model" : "safetensors", f.tensors().size(), double(bytes) / 1024.0);
  std::printf("metadata:\n");
  for (const auto& [k, v] : f.metadata()) std::printf("  %-20s %s\n", k.c_str(), v.size() > 200 ? (v.substr(0, 200) + "...").c_str() : v.c_str());
  if (a.tensors) {
    std::printf("tensors:\n");
    for (const auto& t : f.tensors())
      std::printf("  %-40s %-4s %-18s %8zu B\n", t.name.c_str(), dtype_name(t.dtype), shape_of(t).c_str(), t.nbytes);
  }
  if (quant) {
    QuantModel q = load_quant_model(a.file);   // validates everything FORMAT.md lists
    std::printf("quantizers:\n");
    print_linear("patch_embed", q.patch_embed);
    for (size_t i = 0; i < q.blocks.size(); ++i) {
      const QBlock& b = q.blocks[i];
      std::printf(" block %zu\n", i);
      print_linear("attn.qkv", b.qkv);
      std::printf("  %-22s q A%d, k A%d, v A%d; softmax %s %d-bit (clip %.4g%s)%s\n", "attention", b.q.bits, b.k.bits,
                  b.v.bits, b.attn.kind.c_str(), b.attn.bits, b.attn.scale,
                  b.attn.kind == "tanq" ? (", alpha " + std::to_string(b.attn.param)).c_str() : "",
                  b.attn_cls_dynamic ? "; class row uniform with its own dynamic scale" : "");
      print_linear("attn.proj", b.proj);
      print_linear("mlp.fc1", b.fc1);
      print_linear("mlp.fc2", b.fc2);
      if (b.cls) {   // class-token quantizers (FORMAT.md, format 4)
        const ClsQuant& c = *b.cls;
        std::printf("  %-22s A%d (qkv in), A%d (q), A%d (k), A%d (softmax row), A%d (proj in), A%d (fc1 in), A%d (fc2 in)\n",
                    "class token row", c.qkv_in.bits, c.q.bits, c.k.bits, c.attn.bits, c.proj_in.bits, c.fc1_in.bits,
                    c.fc2_in.bits);
      }
    }
    print_linear("head", q.head);
    if (a.verify) std::printf("verified: every tensor, bit width, scale, zero point and bound checked\n");
  } else if (a.verify) {
    Vit::load(a.file);
    std::printf("verified: loads as a float ViT (all tensors present with the right shapes, finite)\n");
  }
  return 0;
}

}  // namespace

void add_inspect_command(CLI::App& app, CommandList& cmds) {
  static InspectArgs ia;
  auto* c = app.add_subcommand("inspect", "Show the tensors, metadata and quantizers of a model file");
  c->footer("Example: reparq inspect out/w4a4.safetensors --tensors --verify");
  add_common_options(c, ia.c);
  c->add_option("file", ia.file, "Any .safetensors file")->required();
  c->add_flag("--verify", ia.verify, "Load with full validation (float or quantized model)");
  c->add_flag("--tensors", ia.tensors, "List every tensor");
  cmds.push_back({c, [] { return run_inspect(ia); }});
}

}  // namespace reparq
