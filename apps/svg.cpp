// svg.cpp: the SVG plot writer (see svg.h).
#include "apps/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>

namespace reparq::svg {

namespace {

const char* kFont = "DejaVu Sans, Helvetica, Arial, sans-serif";

// Coordinates: one decimal, no trailing ".0", never "-0".
std::string c(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  std::string s = b;
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  if (s == "-0") s = "0";
  return s;
}

double tf(Scale s, double v) { return s == Scale::Log ? std::log10(v) : v; }
bool usable(Scale s, double v) { return std::isfinite(v) && (s == Scale::Linear || v > 0); }

// Approximate rendered width of a label (DejaVu Sans averages ~0.6 em; digits 0.64 em).
double text_width(const std::string& s, double size) {
  if (s.rfind("10^", 0) == 0) return 2 * 0.64 * size + 0.75 * size * 0.64 * double(s.size() - 3);
  double w = 0;
  for (unsigned char ch : s) {
    if ((ch & 0xC0) == 0x80) continue;   // UTF-8 continuation byte
    w += (ch == ' ' || ch == '.' || ch == ',' || ch == 'i' || ch == 'l' || ch == '(' || ch == ')') ? 0.34 : 0.62;
  }
  return w * size;
}

// A tick label: "10^k" becomes 10 with a superscript exponent.
std::string label_text(const std::string& s) {
  if (s.rfind("10^", 0) == 0)
    return "10<tspan dy=\"-6\" font-size=\"0.75em\">" + escape(s.substr(3)) + "</tspan>";
  return escape(s);
}

struct Range {
  double lo, hi;
};

}  // namespace

std::string fmt_num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char b[48];
  std::snprintf(b, sizeof b, "%.4g", v);
  std::string s = b;
  size_t e = s.find('e');
  if (e != std::string::npos) {
    std::string mant = s.substr(0, e), ex = s.substr(e + 1);
    bool neg = !ex.empty() && ex[0] == '-';
    if (!ex.empty() && (ex[0] == '+' || ex[0] == '-')) ex = ex.substr(1);
    while (ex.size() > 1 && ex[0] == '0') ex = ex.substr(1);
    s = mant + "e" + (neg ? "-" : "") + ex;
  }
  if (s == "-0") s = "0";
  return s;
}

std::string escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char ch : s) {
    switch (ch) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default:
        // Control characters are not allowed in XML 1.0 (except tab, newline, CR).
        if (static_cast<unsigned char>(ch) < 0x20 && ch != '\t' && ch != '\n' && ch != '\r') o += ' ';
        else o += ch;
    }
  }
  return o;
}

std::vector<Tick> linear_ticks(double lo, double hi, int target) {
  if (!(std::isfinite(lo) && std::isfinite(hi) && hi > lo))
    throw std::invalid_argument("svg: linear axis range [" + fmt_num(lo) + ", " + fmt_num(hi) + "] is empty or not finite");
  if (target < 2) target = 2;
  double raw = (hi - lo) / target;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double f = raw / mag;
  double step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
  int decimals = std::max(0, -int(std::floor(std::log10(step) + 1e-9)));
  std::vector<Tick> t;
  double k0 = std::ceil(lo / step - 1e-9);
  for (double k = k0; k * step <= hi + step * 1e-9; k += 1) {
    double v = k * step;
    if (std::fabs(v) < step * 1e-9) v = 0;
    char b[48];
    if (decimals <= 6 && std::fabs(v) < 1e7) std::snprintf(b, sizeof b, "%.*f", decimals, v);
    else std::snprintf(b, sizeof b, "%s", fmt_num(v).c_str());
    std::string s = b;
    if (s == "-0") s = "0";
    t.push_back({v, s, true});
    if (t.size() > 1000) break;
  }
  return t;
}

std::vector<Tick> log_ticks(double lo, double hi) {
  if (!(std::isfinite(lo) && std::isfinite(hi) && lo > 0 && hi > lo))
    throw std::invalid_argument("svg: log axis range [" + fmt_num(lo) + ", " + fmt_num(hi) + "] must be positive and non-empty");
  const double eps = 1e-9;
  int e0 = int(std::floor(std::log10(lo) + eps)), e1 = int(std::ceil(std::log10(hi) - eps));
  int nd = e1 - e0;
  int stride = nd > 8 ? (nd + 7) / 8 : 1;
  auto in = [&](double v) { return v >= lo * (1 - eps) && v <= hi * (1 + eps); };
  int labelled = 0;
  for (int k = e0; k <= e1; ++k) labelled += in(std::pow(10.0, k)) && (k % stride == 0);
  const bool plain = labelled < 2;
  std::vector<Tick> t;
  for (int k = e0; k <= e1; ++k) {
    double d = std::pow(10.0, k);
    if (in(d)) {
      std::string lab;
      if (k % stride == 0) lab = plain ? fmt_num(d) : "10^" + std::to_string(k);
      t.push_back({d, lab, true});
    }
    if (nd <= 6 || plain)
      for (int m = 2; m <= 9; ++m) {
        double v = m * d;
        if (!in(v)) continue;
        t.push_back({v, plain && (m == 2 || m == 5) ? fmt_num(v) : "", false});
      }
  }
  return t;
}

const char* palette(size_t i) {
  static const char* p[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"};
  return p[i % 8];
}

// ---- Panel ---------------------------------------------------------------------------------

Panel& Panel::xlim(double lo, double hi) {
  if (!(std::isfinite(lo) && std::isfinite(hi) && hi > lo))
    throw std::invalid_argument("svg: panel '" + title_ + "': x limits [" + fmt_num(lo) + ", " + fmt_num(hi) + "] are impossible");
  x_.fixed = true; x_.lo = lo; x_.hi = hi;
  return *this;
}
Panel& Panel::ylim(double lo, double hi) {
  if (!(std::isfinite(lo) && std::isfinite(hi) && hi > lo))
    throw std::invalid_argument("svg: panel '" + title_ + "': y limits [" + fmt_num(lo) + ", " + fmt_num(hi) + "] are impossible");
  y_.fixed = true; y_.lo = lo; y_.hi = hi;
  return *this;
}
Panel& Panel::xcategories(const std::vector<std::string>& cats) {
  if (cats.empty()) throw std::invalid_argument("svg: panel '" + title_ + "': no categories");
  x_.categories = cats;
  x_.scale = Scale::Linear;
  x_.fixed = true; x_.lo = -0.5; x_.hi = double(cats.size()) - 0.5;
  return *this;
}

Panel& Panel::add(Series s) {
  auto same = [&](const std::vector<double>& a, const std::vector<double>& b, const char* what) {
    if (a.size() != b.size())
      throw std::invalid_argument("svg: panel '" + title_ + "': series '" + s.label + "': " + what + " sizes differ (" +
                                  std::to_string(a.size()) + " vs " + std::to_string(b.size()) + ")");
  };
  switch (s.kind) {
    case Kind::Line: case Kind::Scatter: same(s.x, s.y, "x and y"); break;
    case Kind::VRanges: same(s.x, s.y, "x and lo"); same(s.x, s.y2, "x and hi"); break;
    case Kind::Step:
      if (!s.y.empty() && s.x.size() != s.y.size() + 1)
        throw std::invalid_argument("svg: panel '" + title_ + "': histogram '" + s.label + "' needs counts+1 edges (" +
                                    std::to_string(s.y.size()) + " counts, " + std::to_string(s.x.size()) + " edges)");
      break;
    default: break;
  }
  series_.push_back(std::move(s));
  return *this;
}

Panel& Panel::line(const std::vector<double>& x, const std::vector<double>& y, const Style& s,
                   const std::string& label, bool markers) {
  Series r{Kind::Line, s, label, x, y, {}};
  r.markers = markers;
  return add(std::move(r));
}
Panel& Panel::step(const std::vector<double>& edges, const std::vector<double>& counts, const Style& s,
                   const std::string& label) {
  return add({Kind::Step, s, label, edges, counts, {}});
}
Panel& Panel::vranges(const std::vector<double>& x, const std::vector<double>& lo, const std::vector<double>& hi,
                      const Style& s, const std::string& label) {
  return add({Kind::VRanges, s, label, x, lo, hi});
}
Panel& Panel::vlines(const std::vector<double>& x, const Style& s, const std::string& label, double from, double to) {
  Series r{Kind::VLines, s, label, x, {}, {}};
  r.from = from;
  r.to = to;
  return add(std::move(r));
}
Panel& Panel::hband(double y0, double y1, const Style& s, const std::string& label) {
  return add({Kind::HBand, s, label, {}, {std::min(y0, y1), std::max(y0, y1)}, {}});
}
Panel& Panel::hline(double y, const Style& s, const std::string& label) {
  return add({Kind::HLine, s, label, {}, {y}, {}});
}
Panel& Panel::scatter(const std::vector<double>& x, const std::vector<double>& y, const Style& s,
                      const std::string& label) {
  return add({Kind::Scatter, s, label, x, y, {}});
}

// ---- Figure --------------------------------------------------------------------------------

Figure::Figure(double width, double height, int rows, int cols) : w_(width), h_(height), rows_(rows), cols_(cols) {
  if (!(width >= 50 && height >= 50 && rows >= 1 && cols >= 1 && rows * cols <= 64))
    throw std::invalid_argument("svg: figure size or grid is impossible");
  panels_.resize(size_t(rows * cols));
}

Panel& Figure::panel(int i) {
  if (i < 0 || i >= int(panels_.size())) throw std::invalid_argument("svg: panel index " + std::to_string(i) + " out of range");
  return panels_[size_t(i)];
}

namespace {

std::string stroke_attrs(const Style& s) {
  std::string a = " stroke=\"" + escape(s.color) + "\" stroke-width=\"" + fmt_num(s.width) + "\"";
  if (!s.dash.empty()) a += " stroke-dasharray=\"" + escape(s.dash) + "\"";
  if (s.opacity < 1) a += " stroke-opacity=\"" + fmt_num(s.opacity) + "\"";
  return a;
}
std::string fill_attrs(const Style& s) {
  if (s.fill.empty()) return " fill=\"none\"";
  return " fill=\"" + escape(s.fill) + "\" fill-opacity=\"" + fmt_num(s.fill_opacity) + "\"";
}

}  // namespace

std::string Figure::render() const {
  std::ostringstream o;
  o << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << c(w_) << "\" height=\"" << c(h_) << "\" viewBox=\"0 0 "
    << c(w_) << " " << c(h_) << "\" font-family=\"" << kFont << "\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  double top0 = 0;
  if (!title_.empty()) {
    // Bold text runs ~10 % wider than text_width's estimate; shrink a title that would not fit.
    const double fs = std::max(9.0, std::min(15.0, 15.0 * (w_ - 24) / (1.1 * text_width(title_, 15))));
    o << "<text x=\"" << c(w_ / 2) << "\" y=\"20\" text-anchor=\"middle\" font-size=\"" << c(fs) << "\" font-weight=\"bold\">"
      << escape(title_) << "</text>\n";
    top0 = 28;
  }
  const double cw = w_ / cols_, ch = (h_ - top0) / rows_;
  for (int pi = 0; pi < int(panels_.size()); ++pi) {
    const Panel& p = panels_[size_t(pi)];
    if (p.series_.empty() && p.title_.empty()) continue;   // unused grid cell
    const std::string who = "svg: panel '" + (p.title_.empty() ? std::to_string(pi) : p.title_) + "'";
    const double cx = (pi % cols_) * cw, cy = top0 + (pi / cols_) * ch;
    const double L = cx + (p.y_.label.empty() ? 48 : 66), R = cx + cw - 16;
    const double T = cy + (p.title_.empty() ? 10 : 30), B = cy + ch - (p.x_.label.empty() ? 26 : 46);
    if (!(R - L > 20 && B - T > 20)) throw std::invalid_argument(who + ": too small for its figure cell");

    // Ranges from the data.
    auto range = [&](const Axis& ax, bool is_x) -> Range {
      if (ax.fixed) {
        if (ax.scale == Scale::Log && ax.lo <= 0) throw std::invalid_argument(who + ": log axis limit " + fmt_num(ax.lo) + " <= 0");
        return {ax.lo, ax.hi};
      }
      double lo = INFINITY, hi = -INFINITY;
      bool hist_zero = false;
      auto take = [&](double v) {
        if (usable(ax.scale, v)) lo = std::min(lo, v), hi = std::max(hi, v);
      };
      for (const auto& s : p.series_) {
        switch (s.kind) {
          case Panel::Kind::Line: case Panel::Kind::Scatter:
            for (size_t i = 0; i < s.x.size(); ++i)
              if (usable(p.x_.scale, s.x[i]) && usable(p.y_.scale, s.y[i])) take(is_x ? s.x[i] : s.y[i]);
            break;
          case Panel::Kind::Step:
            if (is_x) for (double v : s.x) take(v);
            else {
              for (double v : s.y) take(v);
              hist_zero = true;
            }
            break;
          case Panel::Kind::VRanges:
            for (size_t i = 0; i < s.x.size(); ++i) {
              if (!usable(p.x_.scale, s.x[i])) continue;
              if (is_x) take(s.x[i]);
              else take(s.y[i]), take(s.y2[i]);
            }
            break;
          case Panel::Kind::VLines:
            if (is_x) for (double v : s.x) take(v);
            break;
          case Panel::Kind::HBand: case Panel::Kind::HLine:
            if (!is_x) for (double v : s.y) take(v);
            break;
        }
      }
      if (!(lo <= hi))
        throw std::invalid_argument(who + ": no finite" + std::string(ax.scale == Scale::Log ? ", positive" : "") +
                                    " data on the " + (is_x ? "x" : "y") + " axis");
      if (ax.scale == Scale::Log) {
        double a = std::pow(10.0, std::floor(std::log10(lo) + 1e-9)), b = std::pow(10.0, std::ceil(std::log10(hi) - 1e-9));
        if (!(b > a)) b = a * 10;
        return {a, b};
      }
      if (hist_zero && lo > 0) lo = 0;
      if (hi == lo) {
        double d = lo == 0 ? 0.5 : std::fabs(lo) * 0.1;
        lo -= d, hi += d;
      }
      double pad = 0.04 * (hi - lo);
      return {hist_zero && lo == 0 ? 0.0 : lo - pad, hi + pad};
    };
    const Range yr = range(p.y_, false), xr = range(p.x_, true);
    const Scale xs = p.x_.scale, ys = p.y_.scale;
    const double tx0 = tf(xs, xr.lo), tx1 = tf(xs, xr.hi), ty0 = tf(ys, yr.lo), ty1 = tf(ys, yr.hi);
    auto X = [&](double v) { return L + (tf(xs, v) - tx0) / (tx1 - tx0) * (R - L); };
    auto Y = [&](double v) { return B - (tf(ys, v) - ty0) / (ty1 - ty0) * (B - T); };
    // Off-scale values are clamped a little outside the plot so long paths stay short and
    // the clip path hides them.
    auto Xc = [&](double v) { return std::clamp(X(v), L - 5, R + 5); };
    auto Yc = [&](double v) { return std::clamp(Y(v), T - 5, B + 5); };

    o << "<g>\n<clipPath id=\"clip" << pi << "\"><rect x=\"" << c(L) << "\" y=\"" << c(T) << "\" width=\"" << c(R - L)
      << "\" height=\"" << c(B - T) << "\"/></clipPath>\n";
    if (!p.title_.empty())
      o << "<text x=\"" << c((L + R) / 2) << "\" y=\"" << c(cy + 20) << "\" text-anchor=\"middle\" font-size=\""
        << c(std::max(8.0, std::min(13.0, 13.0 * (cw - 20) / (1.1 * text_width(p.title_, 13))))) << "\" font-weight=\"bold\">"
        << escape(p.title_) << "</text>\n";

    // Ticks and grid.
    std::vector<Tick> xt, yt;
    if (!p.x_.categories.empty()) {
      for (size_t i = 0; i < p.x_.categories.size(); ++i) xt.push_back({double(i), p.x_.categories[i], false});
    } else {
      xt = xs == Scale::Log ? log_ticks(xr.lo, xr.hi) : linear_ticks(xr.lo, xr.hi, std::max(2, int((R - L) / 70)));
    }
    yt = ys == Scale::Log ? log_ticks(yr.lo, yr.hi) : linear_ticks(yr.lo, yr.hi, std::max(2, int((B - T) / 45)));
    // Thin labels that would overlap: keep every n-th labelled tick.
    auto thin = [&](std::vector<Tick>& t, bool horizontal) {
      std::vector<size_t> lab;
      for (size_t i = 0; i < t.size(); ++i)
        if (!t[i].label.empty()) lab.push_back(i);
      for (size_t stride = 1; stride <= lab.size(); ++stride) {
        bool ok = true;
        double prev_end = -INFINITY;
        for (size_t j = 0; j < lab.size(); j += stride) {
          const Tick& k = t[lab[j]];
          double pos = horizontal ? X(k.value) : -Y(k.value);
          double half = horizontal ? text_width(k.label, 11) / 2 + 3 : 8;
          if (pos - half < prev_end) { ok = false; break; }
          prev_end = pos + half;
        }
        if (ok) {
          for (size_t j = 0; j < lab.size(); ++j)
            if (j % stride) t[lab[j]].label.clear();
          return;
        }
      }
    };
    thin(xt, true);
    thin(yt, false);
    std::ostringstream grid, marks;
    for (const Tick& k : xt) {
      double x = X(k.value);
      if (x < L - 0.5 || x > R + 0.5) continue;
      if (k.major && p.x_.categories.empty()) grid << "M" << c(x) << " " << c(T) << "V" << c(B);
      marks << "M" << c(x) << " " << c(B) << "v" << (k.major || !k.label.empty() ? 5 : 3);
      if (!k.label.empty())
        o << "<text x=\"" << c(x) << "\" y=\"" << c(B + 18) << "\" text-anchor=\"middle\" font-size=\"11\">"
          << label_text(k.label) << "</text>\n";
    }
    for (const Tick& k : yt) {
      double y = Y(k.value);
      if (y < T - 0.5 || y > B + 0.5) continue;
      if (k.major) grid << "M" << c(L) << " " << c(y) << "H" << c(R);
      marks << "M" << c(L) << " " << c(y) << "h" << (k.major || !k.label.empty() ? -5 : -3);
      if (!k.label.empty())
        o << "<text x=\"" << c(L - 8) << "\" y=\"" << c(y + 4) << "\" text-anchor=\"end\" font-size=\"11\">"
          << label_text(k.label) << "</text>\n";
    }
    if (!grid.str().empty()) o << "<path d=\"" << grid.str() << "\" stroke=\"#e4e4e4\" stroke-width=\"1\" fill=\"none\"/>\n";
    if (!marks.str().empty()) o << "<path d=\"" << marks.str() << "\" stroke=\"#333\" stroke-width=\"1\" fill=\"none\"/>\n";
    if (!p.x_.label.empty())
      o << "<text x=\"" << c((L + R) / 2) << "\" y=\"" << c(B + 38) << "\" text-anchor=\"middle\">" << escape(p.x_.label) << "</text>\n";
    if (!p.y_.label.empty()) {
      double x = cx + 16, y = (T + B) / 2;
      o << "<text x=\"" << c(x) << "\" y=\"" << c(y) << "\" text-anchor=\"middle\" transform=\"rotate(-90 " << c(x) << " "
        << c(y) << ")\">" << escape(p.y_.label) << "</text>\n";
    }

    // Series, clipped to the plot area.
    o << "<g clip-path=\"url(#clip" << pi << ")\">\n";
    for (const auto& s : p.series_) {
      std::ostringstream d;
      switch (s.kind) {
        case Panel::Kind::Line: case Panel::Kind::Scatter: {
          bool pen = false;
          std::ostringstream dots;
          for (size_t i = 0; i < s.x.size(); ++i) {
            if (!usable(xs, s.x[i]) || !usable(ys, s.y[i])) { pen = false; continue; }
            double x = Xc(s.x[i]), y = Yc(s.y[i]);
            d << (pen ? "L" : "M") << c(x) << " " << c(y);
            pen = true;
            if (s.kind == Panel::Kind::Scatter || s.markers)
              dots << "<circle cx=\"" << c(x) << "\" cy=\"" << c(y) << "\" r=\"" << fmt_num(s.style.marker) << "\"/>";
          }
          if (s.kind == Panel::Kind::Line && !d.str().empty())
            o << "<path d=\"" << d.str() << "\" fill=\"none\"" << stroke_attrs(s.style) << " stroke-linejoin=\"round\"/>\n";
          if (!dots.str().empty())
            o << "<g fill=\"" << escape(s.style.fill.empty() ? s.style.color : s.style.fill) << "\">" << dots.str() << "</g>\n";
          break;
        }
        case Panel::Kind::Step: {
          const double base = B + 1;
          bool open = false;
          for (size_t i = 0; i < s.y.size(); ++i) {
            double e0 = s.x[i], e1 = s.x[i + 1];
            if (!usable(xs, e0) || !usable(xs, e1)) {
              if (open) d << "V" << c(base);
              open = false;
              continue;
            }
            if (!open) d << "M" << c(Xc(e0)) << " " << c(base);
            open = true;
            double y = usable(ys, s.y[i]) ? Yc(s.y[i]) : base;
            d << "V" << c(y) << "H" << c(Xc(e1));
          }
          if (open) d << "V" << c(base);
          if (!d.str().empty())
            o << "<path d=\"" << d.str() << "\"" << fill_attrs(s.style) << stroke_attrs(s.style) << "/>\n";
          break;
        }
        case Panel::Kind::VRanges:
          for (size_t i = 0; i < s.x.size(); ++i) {
            if (!usable(xs, s.x[i]) || !usable(ys, s.y[i]) || !usable(ys, s.y2[i])) continue;
            d << "M" << c(Xc(s.x[i])) << " " << c(Yc(s.y[i])) << "V" << c(Yc(s.y2[i]));
          }
          if (!d.str().empty()) o << "<path d=\"" << d.str() << "\" fill=\"none\"" << stroke_attrs(s.style) << "/>\n";
          break;
        case Panel::Kind::VLines: {
          double y0 = B - s.from * (B - T), y1 = B - s.to * (B - T);
          for (double v : s.x)
            if (usable(xs, v)) d << "M" << c(Xc(v)) << " " << c(y0) << "V" << c(y1);
          if (!d.str().empty()) o << "<path d=\"" << d.str() << "\" fill=\"none\"" << stroke_attrs(s.style) << "/>\n";
          break;
        }
        case Panel::Kind::HBand: {
          if (!usable(ys, s.y[0]) || !usable(ys, s.y[1])) break;
          double y0 = Yc(s.y[1]), y1 = Yc(s.y[0]);
          o << "<rect x=\"" << c(L) << "\" y=\"" << c(y0) << "\" width=\"" << c(R - L) << "\" height=\"" << c(y1 - y0) << "\""
            << fill_attrs(s.style) << " stroke=\"none\"/>\n";
          o << "<path d=\"M" << c(L) << " " << c(y0) << "H" << c(R) << "M" << c(L) << " " << c(y1) << "H" << c(R)
            << "\" fill=\"none\"" << stroke_attrs(s.style) << "/>\n";
          break;
        }
        case Panel::Kind::HLine:
          if (!usable(ys, s.y[0])) break;
          o << "<path d=\"M" << c(L) << " " << c(Yc(s.y[0])) << "H" << c(R) << "\" fill=\"none\"" << stroke_attrs(s.style) << "/>\n";
          break;
      }
    }
    o << "</g>\n";
    o << "<rect x=\"" << c(L) << "\" y=\"" << c(T) << "\" width=\"" << c(R - L) << "\" height=\"" << c(B - T)
      << "\" fill=\"none\" stroke=\"#333\" stroke-width=\"1\"/>\n";

    // Note (top-left) and legend.
    if (!p.note_.empty()) {
      std::istringstream ls(p.note_);
      std::string line;
      std::vector<std::string> lines;
      while (std::getline(ls, line)) lines.push_back(line);
      const std::string at = p.note_at_.empty() ? (p.legend_ == "tl" ? "tr" : "tl") : p.note_at_;
      const bool right = at.find('r') != std::string::npos;
      double y = at.find('b') != std::string::npos ? B - 8 - 14.0 * (double(lines.size()) - 1) : T + 15;
      for (const std::string& line : lines) {
        o << "<text x=\"" << c(right ? R - 6 : L + 6) << "\" y=\"" << c(y) << "\" font-size=\"11\" fill=\"#333\""
          << (right ? " text-anchor=\"end\"" : "") << ">" << escape(line) << "</text>\n";
        y += 14;
      }
    }
    std::vector<const Panel::Series*> leg;
    for (const auto& s : p.series_)
      if (!s.label.empty()) leg.push_back(&s);
    if (!leg.empty() && p.legend_ != "none") {
      double tw = 0;
      for (auto* s : leg) tw = std::max(tw, text_width(s->label, 11));
      const double lw = tw + 40, lh = 16.0 * leg.size() + 8;
      const bool right = p.legend_.find('r') != std::string::npos, bottom = p.legend_.find('b') != std::string::npos;
      const double lx = right ? R - lw - 6 : L + 6, ly = bottom ? B - lh - 6 : T + 6;
      o << "<g font-size=\"11\">\n<rect x=\"" << c(lx) << "\" y=\"" << c(ly) << "\" width=\"" << c(lw) << "\" height=\"" << c(lh)
        << "\" fill=\"white\" fill-opacity=\"0.88\" stroke=\"#999\" stroke-width=\"0.8\"/>\n";
      for (size_t i = 0; i < leg.size(); ++i) {
        const auto& s = *leg[i];
        double y = ly + 4 + 16.0 * i + 8, x0 = lx + 6, x1 = lx + 28;
        switch (s.kind) {
          case Panel::Kind::Step: case Panel::Kind::HBand:
            o << "<rect x=\"" << c(x0) << "\" y=\"" << c(y - 5) << "\" width=\"" << c(x1 - x0) << "\" height=\"10\""
              << fill_attrs(s.style) << stroke_attrs(s.style) << "/>\n";
            break;
          case Panel::Kind::Scatter:
            o << "<circle cx=\"" << c((x0 + x1) / 2) << "\" cy=\"" << c(y) << "\" r=\"" << fmt_num(s.style.marker) << "\" fill=\""
              << escape(s.style.fill.empty() ? s.style.color : s.style.fill) << "\"/>\n";
            break;
          case Panel::Kind::VLines: case Panel::Kind::VRanges:
            o << "<path d=\"M" << c(x0 + 4) << " " << c(y + 6) << "V" << c(y - 6) << "M" << c((x0 + x1) / 2) << " " << c(y + 6)
              << "V" << c(y - 6) << "M" << c(x1 - 4) << " " << c(y + 6) << "V" << c(y - 6) << "\" fill=\"none\""
              << stroke_attrs(s.style) << "/>\n";
            break;
          default:
            o << "<path d=\"M" << c(x0) << " " << c(y) << "H" << c(x1) << "\" fill=\"none\"" << stroke_attrs(s.style) << "/>\n";
            if (s.markers)
              o << "<circle cx=\"" << c((x0 + x1) / 2) << "\" cy=\"" << c(y) << "\" r=\"" << fmt_num(s.style.marker) << "\" fill=\""
                << escape(s.style.color) << "\"/>\n";
        }
        o << "<text x=\"" << c(x1 + 6) << "\" y=\"" << c(y + 4) << "\">" << escape(s.label) << "</text>\n";
      }
      o << "</g>\n";
    }
    o << "</g>\n";
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace reparq::svg
