// commands.h: how subcommands plug into the `reparq` CLI. Each apps/cmd_*.cpp registers its
// subcommands on the CLI11 app and pushes a runner; main() runs the one that was parsed and
// maps reparq::Error to exit codes (README: 0 ok, 1 usage, 2 bad input, 3 internal).
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace reparq {

struct Command {
  CLI::App* app;
  std::function<int()> run;
};
using CommandList = std::vector<Command>;

// Options every verb shares.
struct CommonOptions {
  int threads = 2;
  bool json = false;
  bool quiet = false;
  bool verbose = false;   // -v: more detail on stdout (quantize: the per-site table)
  std::string data_dir;
};
// The whole command line ("reparq quantize ..."), recorded in files' metadata.
const std::string& command_line();
void add_common_options(CLI::App* c, CommonOptions& o);
// Applies --threads to LibTorch (when linked) and --quiet to progress lines.
void apply_common_options(const CommonOptions& o);

void add_model_commands(CLI::App& app, CommandList& cmds);   // train, eval   (cmd_model.cpp)
void add_quant_commands(CLI::App& app, CommandList& cmds);   // calibrate, quantize (cmd_quant.cpp)
void add_exec_commands(CLI::App& app, CommandList& cmds);    // run, bench    (cmd_exec.cpp)
void add_demo_command(CLI::App& app, CommandList& cmds);     // demo          (cmd_demo.cpp)
void add_ablate_command(CLI::App& app, CommandList& cmds);   // ablate        (cmd_ablate.cpp)
void add_inspect_command(CLI::App& app, CommandList& cmds);  // inspect       (cmd_inspect.cpp)
void add_plot_command(CLI::App& app, CommandList& cmds);     // plot          (cmd_plot.cpp)

// Writes text to `path` atomically (temporary name + rename).
void write_text_atomic(const std::string& path, const std::string& text);
std::string fmt_pct(double v);   // "99.80"


}  // namespace reparq
