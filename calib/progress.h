// progress.h: one progress line on stderr for long loops (training, calibration, evaluation).
// On a terminal the line updates in place; otherwise (CI logs) a plain line is printed at
// about every 10 % and at the end. Quiet mode prints nothing.
#pragma once
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace reparq {

class Progress {
 public:
  static bool& quiet() { static bool q = false; return q; }

  Progress(std::string label, int64_t total, std::string unit = "")
      : label_(std::move(label)), unit_(std::move(unit)), total_(total),
        tty_(isatty(2)), start_(Clock::now()), last_(start_) {}
  ~Progress() { finish(); }

  void set_note(const std::string& note) { note_ = note; }

  void update(int64_t done) {
    done_ = done;
    if (quiet() || finished_) return;
    auto now = Clock::now();
    if (tty_) {
      if (done < total_ && now - last_ < std::chrono::milliseconds(200)) return;
      last_ = now;
      std::fprintf(stderr, "\r%s\033[K", line(now).c_str());
    } else {
      int64_t step = total_ >= 10 ? total_ / 10 : 1;
      if (done < total_ && done / step == printed_ / step) return;
      printed_ = done;
      std::fprintf(stderr, "%s\n", line(now).c_str());
    }
    std::fflush(stderr);
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    if (quiet()) return;
    if (tty_) std::fprintf(stderr, "\r%s\033[K\n", line(Clock::now()).c_str());
    else if (printed_ != done_) std::fprintf(stderr, "%s\n", line(Clock::now()).c_str());
    std::fflush(stderr);
  }

  double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  using Clock = std::chrono::steady_clock;
  static std::string clock_str(double s) {
    char b[32];
    int t = static_cast<int>(s + 0.5);
    std::snprintf(b, sizeof b, "%d:%02d", t / 60, t % 60);
    return b;
  }
  std::string line(Clock::time_point now) const {
    double el = std::chrono::duration<double>(now - start_).count();
    double rate = el > 0 ? done_ / el : 0;
    double left = rate > 0 ? (total_ - done_) / rate : 0;
    char b[256];
    std::snprintf(b, sizeof b, "%s %lld/%lld %s  %.1f/s  %s < %s", label_.c_str(),
                  (long long)done_, (long long)total_, unit_.c_str(), rate,
                  clock_str(el).c_str(), clock_str(left).c_str());
    std::string s = b;
    if (!note_.empty()) s += "  " + note_;
    return s;
  }
  std::string label_, unit_, note_;
  int64_t total_, done_ = 0, printed_ = 0;
  bool tty_, finished_ = false;
  Clock::time_point start_, last_;
};

}  // namespace reparq
