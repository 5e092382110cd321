// test_svg.cpp: the SVG plot writer (apps/svg.h): well-formed output, escaping, ticks, bad data.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "apps/svg.h"

using namespace reparq::svg;

namespace {

// A strict little XML checker: one root, every tag closed in order, attributes quoted, no bare
// '<' or '&' in text or attribute values, only the five predefined entities (or numeric ones).
// Returns "" when well formed, else what is wrong.
std::string xml_problem(const std::string& s) {
  std::vector<std::string> stack;
  size_t i = 0;
  int roots = 0;
  auto check_text = [&](size_t a, size_t b) -> std::string {
    for (size_t k = a; k < b; ++k) {
      if (s[k] == '<') return "bare '<' at " + std::to_string(k);
      if (s[k] == '&') {
        size_t e = s.find(';', k);
        if (e == std::string::npos || e - k > 8) return "bare '&' at " + std::to_string(k);
        std::string ent = s.substr(k + 1, e - k - 1);
        if (ent != "amp" && ent != "lt" && ent != "gt" && ent != "quot" && ent != "apos" && (ent.empty() || ent[0] != '#'))
          return "unknown entity &" + ent + ";";
      }
    }
    return "";
  };
  if (s.rfind("<?xml", 0) == 0) i = s.find("?>") + 2;
  while (i < s.size()) {
    size_t lt = s.find('<', i);
    if (lt == std::string::npos) {
      std::string p = check_text(i, s.size());
      if (!p.empty()) return p;
      break;
    }
    std::string p = check_text(i, lt);
    if (!p.empty()) return p;
    if (!stack.empty() || roots == 0) {
    } else if (s.find_first_not_of(" \n\t\r", i) < lt) {
      return "text after the root element";
    }
    if (s.compare(lt, 2, "</") == 0) {
      size_t gt = s.find('>', lt);
      if (gt == std::string::npos) return "unterminated end tag";
      std::string name = s.substr(lt + 2, gt - lt - 2);
      if (stack.empty() || stack.back() != name) return "end tag </" + name + "> does not match";
      stack.pop_back();
      i = gt + 1;
      continue;
    }
    // Start tag: name, then attributes name="value".
    size_t k = lt + 1;
    size_t n0 = k;
    while (k < s.size() && (std::isalnum(static_cast<unsigned char>(s[k])) || s[k] == '-' || s[k] == ':')) ++k;
    std::string name = s.substr(n0, k - n0);
    if (name.empty()) return "empty tag name at " + std::to_string(lt);
    bool self_close = false;
    for (;;) {
      while (k < s.size() && std::isspace(static_cast<unsigned char>(s[k]))) ++k;
      if (k >= s.size()) return "unterminated tag <" + name;
      if (s[k] == '>') { ++k; break; }
      if (s.compare(k, 2, "/>") == 0) { k += 2; self_close = true; break; }
      size_t a0 = k;
      while (k < s.size() && (std::isalnum(static_cast<unsigned char>(s[k])) || s[k] == '-' || s[k] == ':')) ++k;
      if (k == a0) return "bad attribute in <" + name + ">";
      if (s[k] != '=' || s[k + 1] != '"') return "unquoted attribute in <" + name + ">";
      size_t q = s.find('"', k + 2);
      if (q == std::string::npos) return "unterminated attribute in <" + name + ">";
      std::string pr = check_text(k + 2, q);
      if (!pr.empty()) return pr + " (in an attribute of <" + name + ">)";
      k = q + 1;
    }
    if (stack.empty()) ++roots;
    if (roots > 1) return "more than one root element";
    if (!self_close) stack.push_back(name);
    i = k;
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  if (roots != 1) return "no root element";
  return "";
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

std::string sample_figure() {
  Figure f(640, 480, 2, 1);
  f.title("ranges & levels <test>");
  Style s;
  Style band("#D55E00", 1, "4 2");
  band.fill = "#D55E00";
  band.fill_opacity = 0.2;
  f.panel(0).title("lines").xlabel("x \"quoted\"").ylabel("y's").line({0, 1, 2, 3}, {1, 3, 2, 4}, s, "a & b", true)
      .hband(1.5, 2.5, band, "band").hline(3, s);
  Style h;
  h.fill = "#999";
  f.panel(1).xlog().ylog().xlabel("p").step({1e-4, 1e-3, 1e-2, 1e-1, 1}, {10, 0, 1000, 50}, h, "hist")
      .vlines({0.5, 0.25, 0.125}, s, "levels", 0.5, 1).legend("tl").note("note <1>\nsecond line");
  return f.render();
}

}  // namespace

TEST(Svg, WellFormedAndDeterministic) {
  std::string a = sample_figure(), b = sample_figure();
  EXPECT_EQ(a, b);
  EXPECT_EQ(xml_problem(a), "") << a;
  EXPECT_EQ(a.rfind("<?xml", 0), 0u);
  EXPECT_NE(a.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_EQ(count(a, "<clipPath"), 2u);
  EXPECT_NE(a.find("clip-path=\"url(#clip1)\""), std::string::npos);
  EXPECT_EQ(a.find("nan"), std::string::npos);
  EXPECT_EQ(a.find("inf"), std::string::npos);
}

TEST(Svg, CheckerCatchesBrokenXml) {
  EXPECT_NE(xml_problem("<svg><g></svg>"), "");
  EXPECT_NE(xml_problem("<svg><text>a & b</text></svg>"), "");
  EXPECT_NE(xml_problem("<svg><text x=1>a</text></svg>"), "");
  EXPECT_NE(xml_problem("<svg/><svg/>"), "");
  EXPECT_EQ(xml_problem("<svg><text x=\"1\">a &amp; b</text><g/></svg>"), "");
}

TEST(Svg, EscapesText) {
  EXPECT_EQ(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
  EXPECT_EQ(escape(std::string("x\x01y")), "x y");
  std::string a = sample_figure();
  EXPECT_NE(a.find("ranges &amp; levels &lt;test&gt;"), std::string::npos);
  EXPECT_NE(a.find("x &quot;quoted&quot;"), std::string::npos);
  EXPECT_NE(a.find("a &amp; b"), std::string::npos);
  EXPECT_NE(a.find("note &lt;1&gt;"), std::string::npos);
}

TEST(Svg, FormatsNumbersCompactly) {
  EXPECT_EQ(fmt_num(1.5), "1.5");
  EXPECT_EQ(fmt_num(2.0), "2");
  EXPECT_EQ(fmt_num(0.001), "0.001");
  EXPECT_EQ(fmt_num(1e-5), "1e-5");
  EXPECT_EQ(fmt_num(2.5e7), "2.5e7");
  EXPECT_EQ(fmt_num(-0.0), "0");
  EXPECT_EQ(fmt_num(123456.0), "1.235e5");
}

TEST(Svg, LinearTicks) {
  auto t = linear_ticks(0, 1, 5);
  ASSERT_EQ(t.size(), 6u);
  EXPECT_EQ(t[0].label, "0.0");
  EXPECT_EQ(t[3].label, "0.6");
  EXPECT_EQ(t[5].label, "1.0");
  t = linear_ticks(-3.3, 7.1, 5);
  EXPECT_EQ(t.front().label, "-2");
  EXPECT_EQ(t.back().label, "6");
  for (size_t i = 1; i < t.size(); ++i) EXPECT_NEAR(t[i].value - t[i - 1].value, 2.0, 1e-12);
  t = linear_ticks(80.5, 87.3, 6);
  EXPECT_EQ(t.front().label, "81");
  EXPECT_EQ(t.back().label, "87");
  EXPECT_THROW(linear_ticks(1, 1), std::invalid_argument);
  EXPECT_THROW(linear_ticks(0, NAN), std::invalid_argument);
}

TEST(Svg, LogTicks) {
  auto t = log_ticks(1e-4, 1);
  std::vector<std::string> labels;
  int minors = 0;
  for (auto& k : t) {
    if (!k.label.empty()) labels.push_back(k.label);
    if (!k.major) ++minors;
  }
  EXPECT_EQ(labels, (std::vector<std::string>{"10^-4", "10^-3", "10^-2", "10^-1", "10^0"}));
  EXPECT_EQ(minors, 4 * 8);   // 2..9 in each of the four decades
  // Many decades: every other one labelled, no minor ticks.
  t = log_ticks(1e-12, 1);
  labels.clear();
  for (auto& k : t)
    if (!k.label.empty()) labels.push_back(k.label);
  EXPECT_EQ(labels.front(), "10^-12");
  EXPECT_EQ(labels.size(), 7u);
  EXPECT_EQ(t.size(), 13u);
  // Less than two decades inside: plain labels at 1, 2, 5 x 10^k.
  t = log_ticks(3, 40);
  labels.clear();
  for (auto& k : t)
    if (!k.label.empty()) labels.push_back(k.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"5", "10", "20"}));
  EXPECT_THROW(log_ticks(0, 1), std::invalid_argument);
  EXPECT_THROW(log_ticks(-1, 1), std::invalid_argument);
  // A rendered log axis draws the superscript exponent.
  std::string a = sample_figure();
  EXPECT_NE(a.find("10<tspan dy=\"-6\" font-size=\"0.75em\">-2</tspan>"), std::string::npos);
}

TEST(Svg, SkipsNonFinitePointsAndBreaksLines) {
  Figure f(400, 300);
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  f.panel(0).line({0, 1, 2, 3, 4}, {1, nan, 2, inf, 3}, Style{}, "l");
  std::string a = f.render();
  EXPECT_EQ(xml_problem(a), "");
  EXPECT_EQ(a.find("nan"), std::string::npos);
  EXPECT_EQ(a.find("inf"), std::string::npos);
  // Three isolated points: three moves, no line segment.
  size_t p = a.find("<path d=\"M", a.find("clip-path"));
  ASSERT_NE(p, std::string::npos);
  std::string d = a.substr(p, a.find('"', p + 9) - p);
  EXPECT_EQ(count(d, "M"), 3u) << d;
  EXPECT_EQ(count(d, "L"), 0u) << d;
  // Non-positive values on a log axis are skipped too.
  Figure g(400, 300);
  g.panel(0).ylog().line({0, 1, 2}, {0, -1, 10}, Style{});
  EXPECT_EQ(xml_problem(g.render()), "");
}

TEST(Svg, NoUsableDataIsAClearError) {
  Figure f(400, 300);
  f.panel(0).title("empty").line({}, {}, Style{});
  try {
    f.render();
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("panel 'empty': no finite data on the"), std::string::npos) << e.what();
  }
  Figure g(400, 300);
  g.panel(0).title("all nan").line({NAN, NAN}, {1, 2}, Style{});
  EXPECT_THROW(g.render(), std::invalid_argument);
  Figure h(400, 300);
  h.panel(0).title("log of negatives").ylog().line({1, 2}, {-1, 0}, Style{});
  try {
    h.render();
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("positive"), std::string::npos) << e.what();
  }
}

TEST(Svg, RejectsMismatchedSizesAndImpossibleLimits) {
  Panel p;
  p.title("t");
  EXPECT_THROW(p.line({1, 2}, {1}, Style{}), std::invalid_argument);
  EXPECT_THROW(p.step({1, 2}, {1, 2}, Style{}), std::invalid_argument);
  EXPECT_THROW(p.vranges({1, 2}, {1, 2}, {3}, Style{}), std::invalid_argument);
  EXPECT_THROW(p.xlim(1, 1), std::invalid_argument);
  EXPECT_THROW(p.ylim(0, INFINITY), std::invalid_argument);
  EXPECT_THROW(Figure(10, 10), std::invalid_argument);
  Figure f(400, 300);
  EXPECT_THROW(f.panel(1), std::invalid_argument);
  f.panel(0).xlog().xlim(0, 1).line({0.5}, {1}, Style{});
  EXPECT_THROW(f.render(), std::invalid_argument);
}

TEST(Svg, CategoricalAxisAndLegend) {
  Figure f(500, 350);
  f.panel(0).xcategories({"W8A8", "W4A4", "W3A3"}).line({0, 1, 2}, {87, 86, 80}, Style{}, "reparq", true)
      .vranges({0, 1, 2}, {86.5, 85.5, 79}, {87.5, 86.5, 81}, Style{});
  std::string a = f.render();
  EXPECT_EQ(xml_problem(a), "");
  EXPECT_NE(a.find(">W8A8</text>"), std::string::npos);
  EXPECT_NE(a.find(">W3A3</text>"), std::string::npos);
  EXPECT_NE(a.find(">reparq</text>"), std::string::npos);
  EXPECT_EQ(count(a, "<circle"), 4u);   // three markers and the legend's
}
