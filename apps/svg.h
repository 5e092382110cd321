// svg.h: a small SVG plot writer for reparq's plots (no plotting package is packaged for C++ in
// Debian 12). Standard library only: no LibTorch, no apps/ helpers, so its test links nothing
// else. Panels on a grid, linear / log10 / categorical axes with ticks, lines, histogram
// steps, per-item vertical ranges, vertical level markers, bands, scatter points, error bars,
// a legend. Output is deterministic (same input, same bytes): coordinates are printed with
// one decimal, data values never reach the file unformatted.
//
// Data rules: points with a non-finite coordinate (or <= 0 on a log axis) are skipped (a line
// is broken there); a panel whose series leave no usable point on an auto-ranged axis, a
// size mismatch or an impossible axis limit throws std::invalid_argument naming the panel.
#pragma once
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace reparq::svg {

// "1.5", "0.001", "1e-05" -> "1e-5", "-0" -> "0": %.4g without trailing zeros, compact exponents.
std::string fmt_num(double v);
// Text and attribute escaping (& < > " ').
std::string escape(const std::string& s);

struct Tick {
  double value = 0;
  std::string label;   // empty: unlabelled (minor) tick; "10^k" is drawn as 10 with superscript k
  bool major = true;   // majors get a grid line
};
// Ticks at 1, 2 or 5 x 10^k, about `target` of them, covering [lo, hi].
std::vector<Tick> linear_ticks(double lo, double hi, int target = 6);
// Decades 10^k in [lo, hi] labelled "10^k" (every n-th decade when there are more than 8),
// minor ticks at 2..9 x 10^k when at most 6 decades; when fewer than two decades fall in the
// range, 2 and 5 x 10^k are labelled as plain numbers too. lo > 0 required.
std::vector<Tick> log_ticks(double lo, double hi);

struct Style {
  Style() = default;
  explicit Style(std::string c, double w = 1.5, std::string d = "") : color(std::move(c)), width(w), dash(std::move(d)) {}
  std::string color = "#1f77b4";
  double width = 1.5;          // stroke width (px)
  std::string dash;            // stroke-dasharray, e.g. "4 3"
  double opacity = 1.0;        // stroke opacity
  std::string fill;            // fill color for steps / bands / markers ("" = none)
  double fill_opacity = 0.3;
  double marker = 3.0;         // scatter marker radius
};

enum class Scale { Linear, Log };

struct Axis {
  std::string label;
  Scale scale = Scale::Linear;
  bool fixed = false;          // lo/hi given (else: from the data)
  double lo = 0, hi = 1;
  std::vector<std::string> categories;   // non-empty: categorical axis, item i at position i
};

class Panel {
 public:
  Panel& title(const std::string& t) { title_ = t; return *this; }
  Panel& xlabel(const std::string& l) { x_.label = l; return *this; }
  Panel& ylabel(const std::string& l) { y_.label = l; return *this; }
  Panel& xlog(bool on = true) { x_.scale = on ? Scale::Log : Scale::Linear; return *this; }
  Panel& ylog(bool on = true) { y_.scale = on ? Scale::Log : Scale::Linear; return *this; }
  Panel& xlim(double lo, double hi);
  Panel& ylim(double lo, double hi);
  // A categorical x axis: position i carries label cats[i]; data x values are positions.
  Panel& xcategories(const std::vector<std::string>& cats);
  // Legend corner: "tr", "tl", "br", "bl", or "none".
  Panel& legend(const std::string& where) { legend_ = where; return *this; }
  // A short text (one line per newline) in a corner of the plot area: "tl", "tr", "bl", "br";
  // "" = top left, or top right when the legend is "tl".
  Panel& note(const std::string& n, const std::string& where = "") { note_ = n; note_at_ = where; return *this; }

  // Polyline through (x[i], y[i]); `markers` adds a dot at each point.
  Panel& line(const std::vector<double>& x, const std::vector<double>& y, const Style& s,
              const std::string& label = "", bool markers = false);
  // Histogram outline: counts[i] over [edges[i], edges[i+1]) (edges.size() == counts.size()+1),
  // filled with s.fill when set. Empty bins (and, on a log y axis, counts <= 0) sit on the
  // bottom of the plot.
  Panel& step(const std::vector<double>& edges, const std::vector<double>& counts, const Style& s,
              const std::string& label = "");
  // A vertical segment at x[i] from lo[i] to hi[i] (per-channel ranges, error bars).
  Panel& vranges(const std::vector<double>& x, const std::vector<double>& lo,
                 const std::vector<double>& hi, const Style& s, const std::string& label = "");
  // Full-height vertical lines at x[i] (e.g. quantization levels), between fractions
  // [from, to] of the plot height measured from the bottom.
  Panel& vlines(const std::vector<double>& x, const Style& s, const std::string& label = "",
                double from = 0.0, double to = 1.0);
  // A horizontal band from y0 to y1 across the plot width (filled with s.fill, edges stroked).
  Panel& hband(double y0, double y1, const Style& s, const std::string& label = "");
  Panel& hline(double y, const Style& s, const std::string& label = "");
  Panel& scatter(const std::vector<double>& x, const std::vector<double>& y, const Style& s,
                 const std::string& label = "");

 private:
  friend class Figure;
  enum class Kind { Line, Step, VRanges, VLines, HBand, HLine, Scatter };
  struct Series {
    Kind kind;
    Style style;
    std::string label;
    std::vector<double> x, y, y2;   // meaning per kind
    bool markers = false;
    double from = 0, to = 1;
  };
  Panel& add(Series s);
  std::string title_, note_, note_at_, legend_ = "tr";
  Axis x_, y_;
  std::vector<Series> series_;
};

class Figure {
 public:
  // width x height pixels, panels on a rows x cols grid (filled row by row).
  Figure(double width, double height, int rows = 1, int cols = 1);
  Figure& title(const std::string& t) { title_ = t; return *this; }
  Panel& panel(int index);   // 0 .. rows*cols-1
  std::string render() const;

 private:
  double w_, h_;
  int rows_, cols_;
  std::string title_;
  std::vector<Panel> panels_;
};

// Colors for series (a color-blind-safe qualitative palette, Okabe-Ito order).
const char* palette(size_t i);

}  // namespace reparq::svg
