// Tests of the float ViT (calib/vit.h): a model written by another tool (PyTorch's own
// nn modules, tests/calib/make_torch_vit.py) loads and gives the same logits; Vit::load
// refuses broken files with messages naming the problem; save -> load is lossless.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "calib/data.h"
#include "calib/vit.h"
#include "kernels/error.h"
#include "kernels/safetensors.h"

namespace fs = std::filesystem;
using namespace reparq;

namespace {

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::path(::testing::TempDir()) /
            ("reparq_vit_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

VitConfig tiny_config() {
  VitConfig c;
  c.dim = 16; c.depth = 2; c.heads = 2; c.mlp_hidden = 24; c.image_size = 28; c.patch = 7;
  return c;
}

// Writes tensors (F32) and metadata with SafeTensorsWriter.
void write_tensors(const std::string& path, const std::map<std::string, torch::Tensor>& ts,
                   const std::map<std::string, std::string>& meta) {
  SafeTensorsWriter w;
  for (const auto& [name, t0] : ts) {
    torch::Tensor t = t0.contiguous().to(torch::kFloat32);
    w.add(name, DType::F32, t.sizes().vec(), t.data_ptr<float>(), size_t(t.numel()) * 4);
  }
  for (const auto& [k, v] : meta) w.set_metadata(k, v);
  w.write(path);
}

// The message of the InputError that loading `path` throws ("" and a test failure if none).
std::string load_error(const std::string& path) {
  try {
    Vit::load(path);
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected InputError, got: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << path << " loaded without an error";
  return "";
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

// A valid tiny model's tensors and metadata, to break one thing at a time.
struct Parts {
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, std::string> meta;
};
Parts valid_parts() {
  torch::manual_seed(5);
  Vit m(tiny_config());
  Parts p;
  for (const auto& [n, t] : m.params()) p.tensors[n] = t.clone();
  p.meta = m.config().to_metadata();
  return p;
}

}  // namespace

// ---- a model written by PyTorch --------------------------------------------------------

TEST(VitTorch, ModelWrittenByPyTorchLoadsAndAgrees) {
  const std::string py = "/usr/bin/python3";
  if (std::system((py + " -c 'import torch, numpy' >/dev/null 2>&1").c_str()) != 0)
    GTEST_SKIP() << py << " cannot import torch and numpy";
  TempDir dir;
  const std::string script = std::string(REPARQ_SOURCE_DIR) + "/tests/calib/make_torch_vit.py";
  const std::string cmd = py + " '" + script + "' '" + dir.str() + "' '" + data_dir() + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  Vit m = Vit::load(dir.file("torch_vit.safetensors"));
  const VitConfig& c = m.config();
  EXPECT_EQ(c.dim, 48);
  EXPECT_EQ(c.depth, 2);
  EXPECT_EQ(c.heads, 3);
  EXPECT_EQ(c.mlp_hidden, 96);
  EXPECT_EQ(c.patch, 4);
  EXPECT_EQ(c.image_size, 28);
  EXPECT_EQ(c.arch, "torch-nn");

  SafeTensorsFile lf = SafeTensorsFile::open(dir.file("torch_vit_logits.safetensors"));
  const TensorView& lv = lf.get("logits", {16, 10});
  ASSERT_EQ(lv.dtype, DType::F32);
  torch::Tensor want = torch::from_blob(const_cast<uint8_t*>(lv.data), {16, 10}, torch::kFloat32).clone();

  ImageSet test = load_fashion_mnist(data_dir(), false);
  torch::Tensor px = torch::from_blob(test.pixels.data(), {16, test.rows, test.cols}, torch::kUInt8).clone();
  torch::Tensor got;
  {
    torch::NoGradGuard ng;
    got = m.forward(px);
  }
  ASSERT_EQ(got.sizes(), want.sizes());
  const double d = (got - want).abs().max().item<double>();
  std::printf("PyTorch nn ViT vs reparq Vit: max |logit diff| = %.3g (logits up to %.3g)\n", d,
              want.abs().max().item<double>());
  RecordProperty("max_abs_logit_diff", std::to_string(d));
  EXPECT_GT(want.std().item<double>(), 0.1) << "non-trivial logits";
  EXPECT_LE(d, 1e-4);
  EXPECT_TRUE(torch::equal(got.argmax(1), want.argmax(1)));

  // The comparison is sensitive: the same weights read with another head split disagree.
  std::map<std::string, torch::Tensor> ts(m.params().begin(), m.params().end());
  std::map<std::string, std::string> meta = m.config().to_metadata();
  meta["num_heads"] = "2";
  write_tensors(dir.file("heads2.safetensors"), ts, meta);
  torch::NoGradGuard ng;
  torch::Tensor other = Vit::load(dir.file("heads2.safetensors")).forward(px);
  EXPECT_GT((other - want).abs().max().item<double>(), 1e-3);
}

// ---- load errors -----------------------------------------------------------------------

TEST(VitLoad, ValidPartsLoad) {
  TempDir dir;
  Parts p = valid_parts();
  write_tensors(dir.file("ok.safetensors"), p.tensors, p.meta);
  Vit m = Vit::load(dir.file("ok.safetensors"));
  EXPECT_EQ(m.config().dim, 16);
  EXPECT_EQ(m.config().depth, 2);
  EXPECT_EQ(m.config().heads, 2);
  EXPECT_EQ(m.config().mlp_hidden, 24);
  EXPECT_EQ(m.config().patch, 7);
}

TEST(VitLoad, MissingTensorIsNamed) {
  for (const char* name : {"blocks.1.mlp.fc2.bias", "head.bias", "cls_token", "blocks.0.attn.qkv.weight",
                           "norm.weight", "blocks.1.norm1.weight", "blocks.0.norm1.weight"}) {
    SCOPED_TRACE(name);
    TempDir dir;
    Parts p = valid_parts();
    ASSERT_EQ(p.tensors.erase(name), 1u);
    const std::string path = dir.file("missing.safetensors");
    write_tensors(path, p.tensors, p.meta);
    std::string e = load_error(path);
    EXPECT_TRUE(contains(e, std::string("'") + name + "'")) << e;
    EXPECT_TRUE(contains(e, path)) << e;
  }
}

TEST(VitLoad, WrongShapeNamesTensorAndBothShapes) {
  TempDir dir;
  Parts p = valid_parts();
  p.tensors["blocks.1.mlp.fc2.weight"] = torch::zeros({16, 25});
  write_tensors(dir.file("shape.safetensors"), p.tensors, p.meta);
  std::string e = load_error(dir.file("shape.safetensors"));
  EXPECT_TRUE(contains(e, "'blocks.1.mlp.fc2.weight'")) << e;
  EXPECT_TRUE(contains(e, "[16, 25]")) << e;
  EXPECT_TRUE(contains(e, "[16, 24]")) << e;

  Parts q = valid_parts();
  q.tensors["blocks.0.attn.proj.bias"] = torch::zeros({17});
  write_tensors(dir.file("shape2.safetensors"), q.tensors, q.meta);
  e = load_error(dir.file("shape2.safetensors"));
  EXPECT_TRUE(contains(e, "'blocks.0.attn.proj.bias'")) << e;
  EXPECT_TRUE(contains(e, "[17]")) << e;
  EXPECT_TRUE(contains(e, "[16]")) << e;
}

TEST(VitLoad, MissingNumHeads) {
  TempDir dir;
  Parts p = valid_parts();
  p.meta.erase("num_heads");
  write_tensors(dir.file("heads.safetensors"), p.tensors, p.meta);
  std::string e = load_error(dir.file("heads.safetensors"));
  EXPECT_TRUE(contains(e, "num_heads")) << e;
  // A head count that does not divide the width is refused too.
  p.meta["num_heads"] = "3";
  write_tensors(dir.file("heads3.safetensors"), p.tensors, p.meta);
  e = load_error(dir.file("heads3.safetensors"));
  EXPECT_TRUE(contains(e, "heads")) << e;
}

TEST(VitLoad, NonFiniteWeights) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    TempDir dir;
    Parts p = valid_parts();
    p.tensors["blocks.0.mlp.fc1.weight"][3][5] = bad;
    write_tensors(dir.file("nan.safetensors"), p.tensors, p.meta);
    std::string e = load_error(dir.file("nan.safetensors"));
    EXPECT_TRUE(contains(e, "'blocks.0.mlp.fc1.weight'")) << e;
    EXPECT_TRUE(contains(e, "NaN")) << e;
  }
}

TEST(VitLoad, TruncatedFile) {
  TempDir dir;
  Parts p = valid_parts();
  const std::string path = dir.file("ok.safetensors");
  write_tensors(path, p.tensors, p.meta);
  const auto size = fs::file_size(path);
  for (uintmax_t keep : {size - 1, size / 2, uintmax_t(12), uintmax_t(0)}) {
    SCOPED_TRACE(keep);
    const std::string cut = dir.file("cut.safetensors");
    fs::copy_file(path, cut, fs::copy_options::overwrite_existing);
    fs::resize_file(cut, keep);
    std::string e = load_error(cut);
    EXPECT_TRUE(contains(e, cut)) << e;
  }
  EXPECT_TRUE(contains(load_error(dir.file("absent.safetensors")), "absent.safetensors"));
}

TEST(VitLoad, WrongDtype) {
  TempDir dir;
  Parts p = valid_parts();
  SafeTensorsWriter w;
  for (const auto& [name, t0] : p.tensors) {
    torch::Tensor t = t0.contiguous();
    if (name == "head.weight") {
      torch::Tensor i = t.to(torch::kInt32);
      w.add(name, DType::I32, i.sizes().vec(), i.data_ptr<int32_t>(), size_t(i.numel()) * 4);
    } else {
      w.add(name, DType::F32, t.sizes().vec(), t.data_ptr<float>(), size_t(t.numel()) * 4);
    }
  }
  for (const auto& [k, v] : p.meta) w.set_metadata(k, v);
  w.write(dir.file("dtype.safetensors"));
  std::string e = load_error(dir.file("dtype.safetensors"));
  EXPECT_TRUE(contains(e, "'head.weight'")) << e;
  EXPECT_TRUE(contains(e, "I32")) << e;
}

// ---- save -> load ----------------------------------------------------------------------

TEST(VitSave, RoundTripIsLossless) {
  TempDir dir;
  torch::manual_seed(9);
  VitConfig c = tiny_config();
  c.arch = "round-trip";
  c.ln_eps = 1e-5;
  c.mean = 0.5f;
  c.std = 0.25f;
  Vit m(c);
  {
    torch::NoGradGuard ng;
    for (auto& [n, t] : m.params()) t.add_(torch::randn_like(t) * 0.1);
  }
  m.save(dir.file("m.safetensors"), {{"note", "hello"}});
  Vit l = Vit::load(dir.file("m.safetensors"));
  EXPECT_EQ(l.config().arch, "round-trip");
  EXPECT_EQ(l.config().dim, c.dim);
  EXPECT_EQ(l.config().depth, c.depth);
  EXPECT_EQ(l.config().heads, c.heads);
  EXPECT_EQ(l.config().mlp_hidden, c.mlp_hidden);
  EXPECT_EQ(l.config().patch, c.patch);
  EXPECT_EQ(l.config().image_size, c.image_size);
  EXPECT_EQ(l.config().num_classes, c.num_classes);
  EXPECT_DOUBLE_EQ(l.config().ln_eps, c.ln_eps);
  EXPECT_EQ(l.config().mean, c.mean);
  EXPECT_EQ(l.config().std, c.std);
  ASSERT_EQ(l.params().size(), m.params().size());
  for (const auto& [n, t] : m.params()) EXPECT_TRUE(torch::equal(l.param(n), t)) << n;
  EXPECT_EQ(SafeTensorsFile::open(dir.file("m.safetensors")).meta_str("note"), "hello");
  torch::manual_seed(1);
  torch::Tensor px = torch::randint(0, 256, {4, 28, 28}, torch::kUInt8);
  torch::NoGradGuard ng;
  EXPECT_TRUE(torch::equal(m.forward(px), l.forward(px)));
}
