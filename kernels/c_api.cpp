// c_api.cpp: include/reparq.h on top of the executor (kernels/executor.h) and the quantized
// file reader (kernels/qmodel.h). Every entry point catches everything: reparq::Error keeps its
// exit code (usage / input), std::bad_alloc and anything else become REPARQ_ERROR_INTERNAL.
#include "reparq.h"

#include <memory>
#include <new>
#include <string>

#include "kernels/cpu.h"
#include "kernels/error.h"
#include "kernels/executor.h"
#include "kernels/qmodel.h"

struct reparq_model {
  std::unique_ptr<reparq::Executor> exec;
  mutable std::string error;  // message of the last failed call on this handle
};

namespace {

constexpr int kMaxBatch = 65536;
constexpr int kMaxThreads = 256;

// Errors of calls that have no handle to hold them (reparq_open, or a NULL handle).
thread_local std::string t_error;

// Runs `body`, turning any exception into a status code and a message stored in `where`.
template <class Body>
int guarded(std::string& where, const char* fn, Body body) {
  try {
    body();
    return REPARQ_OK;
  } catch (const reparq::Error& e) {
    where = std::string(fn) + ": " + e.what();
    return e.code() == reparq::kExitUsage ? REPARQ_ERROR_USAGE
           : e.code() == reparq::kExitInput ? REPARQ_ERROR_INPUT
                                            : REPARQ_ERROR_INTERNAL;
  } catch (const std::bad_alloc&) {
    where = std::string(fn) + ": out of memory";
  } catch (const std::exception& e) {
    where = std::string(fn) + ": internal error: " + e.what();
  } catch (...) {
    where = std::string(fn) + ": internal error (unknown exception)";
  }
  return REPARQ_ERROR_INTERNAL;
}

int null_handle(const char* fn) {
  t_error = std::string(fn) + ": null model handle";
  return REPARQ_ERROR_USAGE;
}

int usage(std::string& where, const char* fn, const std::string& what) {
  where = std::string(fn) + ": " + what;
  return REPARQ_ERROR_USAGE;
}

}  // namespace

extern "C" {

int reparq_open(const char* path, reparq_model** model) {
  if (model == nullptr) return usage(t_error, "reparq_open", "null output pointer");
  *model = nullptr;
  if (path == nullptr) return usage(t_error, "reparq_open", "null path");
  std::unique_ptr<reparq_model> m;
  const int status = guarded(t_error, "reparq_open", [&] {
    m.reset(new reparq_model);
    const reparq::QuantModel q = reparq::load_quant_model(path);
    m->exec.reset(new reparq::Executor(q, reparq::best_isa(), 1));
  });
  if (status == REPARQ_OK) *model = m.release();
  return status;
}

const char* reparq_last_error(const reparq_model* model) {
  return model != nullptr ? model->error.c_str() : t_error.c_str();
}

int reparq_input_shape(const reparq_model* model, int* height, int* width) {
  if (model == nullptr) return null_handle("reparq_input_shape");
  std::string& err = model->error;
  if (height == nullptr || width == nullptr) return usage(err, "reparq_input_shape", "null height or width");
  const int s = static_cast<int>(model->exec->model().image_size);
  *height = s;
  *width = s;
  return REPARQ_OK;
}

int reparq_num_classes(const reparq_model* model, int* num_classes) {
  if (model == nullptr) return null_handle("reparq_num_classes");
  std::string& err = model->error;
  if (num_classes == nullptr) return usage(err, "reparq_num_classes", "null num_classes");
  *num_classes = static_cast<int>(model->exec->model().num_classes);
  return REPARQ_OK;
}

int reparq_run(reparq_model* model, const uint8_t* pixels, int batch, float* logits) {
  if (model == nullptr) return null_handle("reparq_run");
  if (pixels == nullptr || logits == nullptr) {
    return usage(model->error, "reparq_run", pixels == nullptr ? "null pixels" : "null logits");
  }
  if (batch < 1 || batch > kMaxBatch) {
    return usage(model->error, "reparq_run",
                 "batch " + std::to_string(batch) + " outside [1, " + std::to_string(kMaxBatch) + "]");
  }
  return guarded(model->error, "reparq_run", [&] { model->exec->run(pixels, batch, logits); });
}

int reparq_run_checked(reparq_model* model, const uint8_t* pixels, size_t pixel_bytes, int batch,
                       float* logits, size_t logits_capacity) {
  if (model == nullptr) return null_handle("reparq_run_checked");
  if (batch < 1 || batch > kMaxBatch) {
    return usage(model->error, "reparq_run_checked",
                 "batch " + std::to_string(batch) + " outside [1, " + std::to_string(kMaxBatch) + "]");
  }
  const reparq::QuantModel& m = model->exec->model();
  const size_t want_px = size_t(batch) * size_t(m.image_size) * size_t(m.image_size);
  const size_t want_lg = size_t(batch) * size_t(m.num_classes);
  if (pixel_bytes != want_px) {
    return usage(model->error, "reparq_run_checked",
                 "pixel buffer holds " + std::to_string(pixel_bytes) + " bytes but " + std::to_string(batch) +
                     " images of " + std::to_string(m.image_size) + "x" + std::to_string(m.image_size) + " need " +
                     std::to_string(want_px));
  }
  if (logits_capacity < want_lg) {
    return usage(model->error, "reparq_run_checked",
                 "logits buffer holds " + std::to_string(logits_capacity) + " floats but " + std::to_string(batch) +
                     " images x " + std::to_string(m.num_classes) + " classes need " + std::to_string(want_lg));
  }
  return reparq_run(model, pixels, batch, logits);
}

int reparq_set_threads(reparq_model* model, int threads) {
  if (model == nullptr) return null_handle("reparq_set_threads");
  if (threads < 1 || threads > kMaxThreads) {
    return usage(model->error, "reparq_set_threads",
                 "threads " + std::to_string(threads) + " outside [1, " + std::to_string(kMaxThreads) + "]");
  }
  if (threads == model->exec->threads()) return REPARQ_OK;
  return guarded(model->error, "reparq_set_threads", [&] {
    const reparq::Executor& old = *model->exec;
    std::unique_ptr<reparq::Executor> next(new reparq::Executor(old.model(), old.isa(), threads));
    model->exec = std::move(next);
  });
}

const char* reparq_isa(const reparq_model* model) {
  return model != nullptr ? reparq::isa_name(model->exec->isa()) : "";
}

void reparq_close(reparq_model* model) { delete model; }

}  // extern "C"
