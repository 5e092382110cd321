// report.h: the header every report (quantize, eval, demo) starts with, in JSON and Markdown:
// tool version and commit, date, command, CPU, executor ISA, BLAS, threads.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace reparq {

const char* build_version();   // generated at build time (cmake/version.cmake)
const char* build_commit();    // `git describe --always --dirty`, "unknown" outside git

// schema: the report's schema name ("reparq-quantize-1", ...).
nlohmann::json report_header(const std::string& schema, int threads);
std::string report_header_markdown(const nlohmann::json& header);

// Writes PREFIX.json and PREFIX.md atomically.
void write_report(const std::string& prefix, const nlohmann::json& json, const std::string& markdown);

}  // namespace reparq
