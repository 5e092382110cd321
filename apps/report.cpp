// report.cpp: report headers shared by the verbs.
#include "apps/report.h"

#include <ctime>

#include "apps/commands.h"
#include "calib/sysinfo.h"
#include "kernels/cpu.h"

namespace reparq {

nlohmann::json report_header(const std::string& schema, int threads) {
  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return {{"schema", schema},
          {"tool", std::string("reparq ") + build_version()},
          {"commit", build_commit()},
          {"date", date},
          {"command", command_line()},
          {"cpu", cpu_model_name()},
          {"isa", isa_name(best_isa())},
          {"blas", blas_summary()},
          {"threads", threads}};
}

std::string report_header_markdown(const nlohmann::json& h) {
  auto s = [&](const char* k) { return h.contains(k) ? (h[k].is_string() ? h[k].get<std::string>() : h[k].dump()) : std::string("-"); };
  return "- tool: " + s("tool") + " (commit " + s("commit") + "), " + s("date") + "\n" +
         "- command: `" + s("command") + "`\n" +
         "- CPU: " + s("cpu") + "; executor ISA: " + s("isa") + "; threads: " + s("threads") + "\n" +
         "- LibTorch BLAS: " + s("blas") + "\n";
}

void write_report(const std::string& prefix, const nlohmann::json& json, const std::string& markdown) {
  write_text_atomic(prefix + ".json", json.dump(2) + "\n");
  write_text_atomic(prefix + ".md", markdown);
}

}  // namespace reparq
