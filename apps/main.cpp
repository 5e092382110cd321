// reparq: the command line. Thin: parse, call, print. Each verb lives in apps/cmd_*.cpp.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>

#include "apps/commands.h"
#include "calib/progress.h"
#include "kernels/error.h"
#include "kernels/safetensors.h"

namespace reparq {

void add_common_options(CLI::App* c, CommonOptions& o) {
  c->add_option("--threads", o.threads, "Threads for LibTorch and the executor")->capture_default_str()->check(CLI::Range(1, 256));
  c->add_option("--data-dir", o.data_dir, "Fashion-MNIST directory (default: $REPARQ_DATA_DIR or /usr/share/datasets/fashion-mnist)");
  c->add_flag("--json", o.json, "Print a machine-readable JSON result on stdout");
  c->add_flag("-q,--quiet", o.quiet, "No progress lines");
  c->add_flag("-v,--verbose", o.verbose, "More detail (quantize: print the per-site error table)");
}

static std::string g_command_line;
const std::string& command_line() { return g_command_line; }

void apply_common_options(const CommonOptions& o) {
  if (o.threads <= 0) throw UsageError("--threads must be positive");
  torch::set_num_threads(o.threads);
  Progress::quiet() = o.quiet;
}

void write_text_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

std::string fmt_pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

}  // namespace reparq

int main(int argc, char** argv) {
  using namespace reparq;
  // LibTorch, OpenBLAS and oneDNN share libgomp, whose threads spin-wait by default. On a
  // shared or oversubscribed machine that made a 2-thread quantize 20x slower than 1 thread
  // (measured: 399 s vs 20 s). libgomp reads OMP_WAIT_POLICY once, when it loads, so restart
  // once with the passive policy unless the user chose one (bench has --omp-active).
  bool omp_active = false;  // `bench --omp-active` measures libgomp's default spinning
  for (int i = 1; i < argc; ++i) omp_active |= std::string(argv[i]) == "--omp-active";
  if (!omp_active && std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("REPARQ_NO_REEXEC") == nullptr) {
    setenv("OMP_WAIT_POLICY", "passive", 1);
    setenv("REPARQ_NO_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    unsetenv("OMP_WAIT_POLICY");  // exec failed: carry on with libgomp's default
  }
  CLI::App app{"reparq: post-training quantization of vision transformers, with an integer executor"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Help for every subcommand");
  app.footer("Exit codes: 0 ok, 1 usage error, 2 bad input file or data, 3 internal error.");
  g_command_line = "reparq";
  for (int i = 1; i < argc; ++i) g_command_line += std::string(" ") + argv[i];
  CommandList cmds;
  add_model_commands(app, cmds);
  add_quant_commands(app, cmds);
  add_exec_commands(app, cmds);
  add_demo_command(app, cmds);
  add_ablate_command(app, cmds);
  add_inspect_command(app, cmds);
  add_plot_command(app, cmds);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }
  try {
    for (auto& c : cmds)
      if (c.app->parsed()) return c.run();
  } catch (const Error& e) {
    std::fprintf(stderr, "reparq: error: %s\n", e.what());
    return e.code();
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "reparq: internal error (LibTorch): %s\n", e.what_without_backtrace());
    return kExitInternal;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "reparq: internal error: %s\n", e.what());
    return kExitInternal;
  }
  return kExitUsage;
}
