#include "eval/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <map>
#include <sstream>

#include "core/error.h"

namespace cac::eval {

namespace {
// Ten colours that stay distinct for colour-blind readers in pairs (Tableau 10).
const char* kColours[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                          "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
const char* colour(size_t i) { return kColours[i % 10]; }

constexpr double kWidth = 420, kHeight = 300, kLeft = 58, kRight = 14, kTop = 30, kBottom = 44;
constexpr double kLegendWidth = 210;  // about 28 characters of legend text

// About five round tick values covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi) {
  const double range = hi - lo;
  if (!(range > 0)) return {lo};
  const double raw = range / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) t.push_back(std::abs(v) < step * 1e-9 ? 0 : v);
  return t;
}

// Legend text fits about 28 characters; longer labels keep their end (which says train/val or the
// unknown set) behind an ellipsis. Counted in bytes, so "·" costs two: a little shorter, still fits.
std::string legend_label(const std::string& s) { return s.size() > 28 ? "…" + s.substr(s.size() - 27) : s; }

// The last folder of a run path: legends name runs by it ("runs/cifar10-t0" -> "cifar10-t0").
std::string run_short_name(const std::string& run) {
  std::string r = run;
  while (r.size() > 1 && r.back() == '/') r.pop_back();
  const size_t slash = r.rfind('/');
  return slash == std::string::npos ? r : r.substr(slash + 1);
}

// The chart's opening: the <svg> element, the title, the plot frame and the axis labels (the
// caller adds ticks, data and legend, then closes the element).
std::string svg_chart_open(const std::string& title, const std::string& x_label, const std::string& y_label) {
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  std::string s = fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}" role="img">)",
                              kWidth + kLegendWidth, kHeight, kWidth + kLegendWidth, kHeight);
  s += fmt::format(R"(<text x="{}" y="18" class="title">{}</text>)", kLeft, html_escape(title));
  s += fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" class="frame"/>)", kLeft, kTop, pw, ph);
  s += fmt::format(R"(<text x="{}" y="{}" class="axis" text-anchor="middle">{}</text>)", kLeft + pw / 2, kHeight - 8,
                   html_escape(x_label));
  s += fmt::format(R"~(<text transform="translate(14 {}) rotate(-90)" class="axis" text-anchor="middle">{}</text>)~",
                   kTop + ph / 2, html_escape(y_label));
  return s;
}

std::string tick_label(double v, bool log_axis) {
  if (log_axis) return fmt::format("1e{}", int(std::lround(std::log10(v))));
  return fmt::format("{:g}", v);
}
}  // namespace

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  return o;
}

std::string svg_line_plot(const PlotSpec& spec, const std::vector<Series>& series) {
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  auto tx = [&](double x) {
    double u;
    if (spec.log_x) {
      x = std::clamp(x, spec.x_min, spec.x_max);  // FPR 0 sits on the left edge
      u = (std::log10(x) - std::log10(spec.x_min)) / (std::log10(spec.x_max) - std::log10(spec.x_min));
    } else {
      u = (std::clamp(x, spec.x_min, spec.x_max) - spec.x_min) / (spec.x_max - spec.x_min);
    }
    return kLeft + u * pw;
  };
  auto ty = [&](double y) {
    const double u = (std::clamp(y, spec.y_min, spec.y_max) - spec.y_min) / (spec.y_max - spec.y_min);
    return kTop + (1 - u) * ph;
  };
  std::string s = svg_chart_open(spec.title, spec.x_label, spec.y_label);
  // Grid and tick labels.
  std::vector<double> xt;
  if (spec.log_x) {
    for (double e = std::ceil(std::log10(spec.x_min) - 1e-9); e <= std::log10(spec.x_max) + 1e-9; e += 1) xt.push_back(std::pow(10.0, e));
  } else {
    xt = nice_ticks(spec.x_min, spec.x_max);
  }
  for (double v : xt)
    s += fmt::format(R"(<line x1="{0:.1f}" y1="{1}" x2="{0:.1f}" y2="{2}" class="grid"/><text x="{0:.1f}" y="{3}" class="tick" text-anchor="middle">{4}</text>)",
                     tx(v), kTop, kTop + ph, kTop + ph + 14, tick_label(v, spec.log_x));
  for (double v : nice_ticks(spec.y_min, spec.y_max))
    s += fmt::format(R"(<line x1="{0}" y1="{1:.1f}" x2="{2}" y2="{1:.1f}" class="grid"/><text x="{3}" y="{4:.1f}" class="tick" text-anchor="end">{5}</text>)",
                     kLeft, ty(v), kLeft + pw, kLeft - 5, ty(v) + 4, tick_label(v, false));
  if (spec.diagonal) {
    s += fmt::format(R"(<line x1="{}" y1="{}" x2="{}" y2="{}" class="chance"/>)", tx(spec.x_min), ty(spec.y_min), tx(spec.x_max),
                     ty(spec.y_max));
  }
  size_t c = 0;
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& se = series[i];
    if (i > 0 && !se.dashed) ++c;
    std::string pts;
    double lx = -1e9, ly = -1e9;
    for (size_t k = 0; k < se.x.size(); ++k) {
      if (!std::isfinite(se.x[k]) || !std::isfinite(se.y[k])) continue;
      const double px = tx(se.x[k]), py = ty(se.y[k]);
      if (k + 1 < se.x.size() && std::hypot(px - lx, py - ly) < 0.5) continue;
      pts += fmt::format("{:.1f},{:.1f} ", px, py);
      lx = px, ly = py;
    }
    s += fmt::format(R"(<polyline points="{}" fill="none" stroke="{}" stroke-width="1.6"{}/>)", pts, colour(c),
                     se.dashed ? R"( stroke-dasharray="5 3")" : "");
    const double ly2 = kTop + 8 + 16 * double(i);
    s += fmt::format(R"(<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2"{}/><text x="{}" y="{}" class="legend">{}</text>)",
                     kWidth + 4, ly2, kWidth + 26, ly2, colour(c), se.dashed ? R"( stroke-dasharray="5 3")" : "", kWidth + 30,
                     ly2 + 4, html_escape(legend_label(se.label)));
  }
  return s + "</svg>";
}

std::string svg_histogram(const std::string& title, const std::vector<double>& known, const std::vector<double>& unknown,
                          int bins) {
  // Range: the smallest score to the 99th percentile, so a long tail of far-out unknowns does not
  // squash the interesting part into one bin; the tail is counted in the last bin.
  std::vector<double> all;
  for (const auto* v : {&known, &unknown})
    for (double x : *v)
      if (std::isfinite(x)) all.push_back(x);
  std::sort(all.begin(), all.end());
  double lo = all.empty() ? 0 : all.front(), hi = all.empty() ? 1 : all[size_t(0.99 * double(all.size() - 1))];
  if (!(hi > lo) && !all.empty()) hi = all.back();
  if (!(hi > lo)) lo -= 0.5, hi = lo + 1;  // empty or all equal
  auto density = [&](const std::vector<double>& v) {
    std::vector<double> h(size_t(bins), 0.0);
    size_t n = 0;
    for (double x : v)
      if (std::isfinite(x)) h[size_t(std::clamp(int((x - lo) / (hi - lo) * bins), 0, bins - 1))] += 1, ++n;
    for (double& d : h) d = n ? d / double(n) / ((hi - lo) / bins) : 0;
    return h;
  };
  const std::vector<double> hk = density(known), hu = density(unknown);
  double top = 0;
  for (double d : hk) top = std::max(top, d);
  for (double d : hu) top = std::max(top, d);
  auto steps = [&](const std::vector<double>& h) {
    Series s;
    for (int b = 0; b < bins; ++b) {
      const double x0 = lo + (hi - lo) * b / bins, x1 = lo + (hi - lo) * (b + 1) / bins;
      s.x.insert(s.x.end(), {x0, x1});
      s.y.insert(s.y.end(), {h[size_t(b)], h[size_t(b)]});
    }
    return s;
  };
  Series sk = steps(hk), su = steps(hu);
  sk.label = fmt::format("known ({})", known.size());
  su.label = fmt::format("unknown ({})", unknown.size());
  PlotSpec p;
  p.title = title;
  p.x_label = "open-set score (top 1% in the last bin)";
  p.y_label = "density";
  p.x_min = lo, p.x_max = hi, p.y_min = 0, p.y_max = top > 0 ? top * 1.05 : 1;
  return svg_line_plot(p, {sk, su});
}

std::string entry_name(const ReportEntry& e) {
  return e.unknown_set == "unknown" || e.unknown_set.empty() ? e.run : e.run + " · " + e.unknown_set;
}

namespace {
// entry_name with the run's last folder only, for legends and chart titles.
std::string short_entry_name(const ReportEntry& e) {
  ReportEntry named;
  named.run = run_short_name(e.run);
  named.unknown_set = e.unknown_set;
  return entry_name(named);
}
}  // namespace

std::vector<GroupSummary> summarise(const std::vector<ReportEntry>& entries, const std::vector<std::string>& names) {
  std::vector<GroupSummary> groups;
  auto same = [](const GroupSummary& g, const ReportEntry& e) {
    return g.dataset == e.dataset && g.method == e.method && g.unknown_set == e.unknown_set && g.scorer == e.scorer;
  };
  for (const ReportEntry& e : entries) {
    auto g = std::find_if(groups.begin(), groups.end(), [&](auto& x) { return same(x, e); });
    if (g == groups.end()) {
      groups.push_back({e.dataset, e.method, e.unknown_set, e.scorer, e.own, 0, names, {}, {}});
      g = groups.end() - 1;
    }
    ++g->runs;
  }
  for (GroupSummary& g : groups) {
    for (const std::string& n : names) {
      std::vector<double> v;
      for (const ReportEntry& e : entries)
        if (same(g, e))
          for (auto& [k, x] : e.metrics)
            if (k == n && std::isfinite(x)) v.push_back(x);
      double m = 0, ss = 0;  // two passes: one run gives a std of exactly 0
      for (double x : v) m += x / double(v.size());
      for (double x : v) ss += (x - m) * (x - m);
      g.mean.push_back(v.empty() ? NAN : m);
      g.stdev.push_back(v.empty() ? NAN : std::sqrt(ss / double(v.size())));
    }
  }
  return groups;
}

namespace {
double metric(const ReportEntry& e, const std::string& n) {
  for (auto& [k, v] : e.metrics)
    if (k == n) return v;
  return NAN;
}

// metrics.csv as columns by header name.
std::map<std::string, std::vector<double>> parse_csv(const std::string& text) {
  std::map<std::string, std::vector<double>> cols;
  std::istringstream in(text);
  std::string line;
  std::vector<std::string> head;
  if (!std::getline(in, line)) return cols;
  std::istringstream hs(line);
  for (std::string h; std::getline(hs, h, ',');) head.push_back(h);
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    size_t i = 0;
    for (std::string f; std::getline(ls, f, ',') && i < head.size(); ++i) {
      char* end = nullptr;
      const double v = std::strtod(f.c_str(), &end);
      cols[head[i]].push_back(end != f.c_str() ? v : NAN);
    }
  }
  return cols;
}
}  // namespace

std::string svg_logit_space(const ReportEntry& e, size_t max_points) {
  const size_t K = size_t(e.num_classes);
  CAC_CHECK(K > 0 && !e.known_logits.empty() && e.known_logits.size() == e.known_labels.size() * K &&
                e.unknown_logits.size() % K == 0 && (e.anchors.empty() || e.anchors.size() == K * K),
            "svg_logit_space: {} known logits for {} labels, {} unknown logits, {} anchor values, {} classes",
            e.known_logits.size(), e.known_labels.size(), e.unknown_logits.size(), e.anchors.size(), K);
  const PrincipalPlane plane = principal_plane(e.known_logits, int(K));
  struct Dot {
    double x, y;
    int cls;  // -1: unknown
  };
  std::vector<Dot> dots;
  auto take = [&](const std::vector<float>& logits, const std::vector<int64_t>* labels) {
    const size_t n = logits.size() / K, step = std::max<size_t>(1, (n + max_points - 1) / std::max<size_t>(1, max_points));
    for (size_t i = 0; i < n; i += step) {
      auto [x, y] = plane.project(&logits[i * K]);
      dots.push_back({x, y, labels ? int((*labels)[i]) : -1});
    }
  };
  take(e.unknown_logits, nullptr);  // drawn first: the knowns' colours stay on top
  take(e.known_logits, &e.known_labels);
  std::vector<std::pair<double, double>> anchors;
  for (size_t k = 0; k < e.anchors.size() / std::max<size_t>(K, 1); ++k) anchors.push_back(plane.project(&e.anchors[k * K]));
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  auto extend = [&](double x, double y) { x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y); };
  for (const Dot& d : dots) extend(d.x, d.y);
  for (auto [x, y] : anchors) extend(x, y);
  const double padx = std::max(1e-9, (x1 - x0) * 0.05), pady = std::max(1e-9, (y1 - y0) * 0.05);
  x0 -= padx, x1 += padx, y0 -= pady, y1 += pady;
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  auto tx = [&](double x) { return kLeft + (x - x0) / (x1 - x0) * pw; };
  auto ty = [&](double y) { return kTop + (1 - (y - y0) / (y1 - y0)) * ph; };
  const double share = plane.total_variance > 0 ? (plane.variance1 + plane.variance2) / plane.total_variance : 1.0;
  std::string s = svg_chart_open(fmt::format("{} · plane: {:.0f}% of the variance", short_entry_name(e), 100 * share),
                                 "principal axis 1 of the known logits", "principal axis 2");
  for (const Dot& d : dots)
    s += fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="1.8" fill="{}" fill-opacity="{}"/>)", tx(d.x), ty(d.y),
                     d.cls < 0 ? "#888" : colour(size_t(d.cls)), d.cls < 0 ? "0.35" : "0.7");
  for (size_t k = 0; k < anchors.size(); ++k) {
    const double ax = tx(anchors[k].first), ay = ty(anchors[k].second);
    s += fmt::format(R"(<path d="M{0:.1f} {1:.1f}l10 10m0 -10l-10 10" stroke="#000" stroke-width="3.5"/>)"
                     R"(<path d="M{0:.1f} {1:.1f}l10 10m0 -10l-10 10" stroke="{2}" stroke-width="2"/>)",
                     ax - 5, ay - 5, colour(k));
  }
  // Legend: the classes (up to 10; colours repeat after that), unknown, anchor.
  double ly = kTop + 8;
  auto legend = [&](const std::string& mark, const std::string& text) {
    s += mark + fmt::format(R"(<text x="{}" y="{:.1f}" class="legend">{}</text>)", kWidth + 22, ly + 4, html_escape(legend_label(text)));
    ly += 16;
  };
  for (size_t k = 0; k < std::min<size_t>(K, 10); ++k)
    legend(fmt::format(R"(<circle cx="{}" cy="{:.1f}" r="4" fill="{}"/>)", kWidth + 10, ly, colour(k)),
           k < e.class_names.size() ? e.class_names[k] : fmt::format("class {}", k));
  if (K > 10) legend("", fmt::format("(+{} classes, colours repeat)", K - 10));
  legend(fmt::format(R"(<circle cx="{}" cy="{:.1f}" r="4" fill="#888"/>)", kWidth + 10, ly), "unknown");
  if (!anchors.empty())
    legend(fmt::format(R"(<path d="M{} {:.1f}l8 8m0 -8l-8 8" stroke="#000" stroke-width="2"/>)", kWidth + 6, ly - 4),
           "anchor (class mean)");
  return s + "</svg>";
}

std::string html_confusion(const ReportEntry& e) {
  const size_t K = e.class_names.size();
  CAC_CHECK(e.confusion.size() == K + 1, "html_confusion: {} rows for {} classes + unknown", e.confusion.size(), K);
  auto name = [&](size_t k) { return k < K ? html_escape(e.class_names[k]) : std::string("<i>unknown</i>"); };
  std::string h = "<table class=\"cm\"><tr><th>true \\ predicted</th>";
  for (size_t k = 0; k <= K; ++k) h += "<th>" + name(k) + "</th>";
  h += "<th>images</th></tr>\n";
  for (size_t r = 0; r <= K; ++r) {
    CAC_CHECK(e.confusion[r].size() == K + 1, "html_confusion: row {} has {} columns, not {}", r, e.confusion[r].size(), K + 1);
    int64_t n = 0;
    for (int64_t v : e.confusion[r]) n += v;
    h += "<tr><th>" + name(r) + "</th>";
    for (size_t c = 0; c <= K; ++c) {
      const int64_t v = e.confusion[r][c];
      const double share = n > 0 ? double(v) / double(n) : 0.0;
      const char* rgb = r == c ? "31,119,180" : "214,39,40";  // right: blue, wrong: red
      h += v == 0 ? "<td class=\"zero\">0</td>"
                  : fmt::format("<td style=\"background:rgba({},{:.3f}){}\">{}<br><small>{:.1f}%</small></td>", rgb,
                                0.08 + 0.8 * share, share > 0.55 ? ";color:#fff" : "", v, 100 * share);
    }
    h += fmt::format("<td>{}</td></tr>\n", n);
  }
  return h + "</table>\n";
}

std::string unknown_label_name(const ReportEntry& e, int64_t label) {
  return label >= 0 && size_t(label) < e.unknown_label_names.size() ? e.unknown_label_names[size_t(label)]
                                                                     : std::to_string(label);
}

std::string known_class_name(const ReportEntry& e, size_t k) {
  return k < e.class_names.size() ? e.class_names[k] : std::to_string(k);
}

std::string html_unknown_classes(const ReportEntry& e) {
  std::vector<const UnknownClassBreakdown*> rows;
  for (const auto& b : e.unknown_classes) rows.push_back(&b);
  // Hardest first; classes with no defined AUROC (no knowns) last, then by label.
  std::stable_sort(rows.begin(), rows.end(), [](const UnknownClassBreakdown* a, const UnknownClassBreakdown* b) {
    const bool fa = std::isfinite(a->auroc), fb = std::isfinite(b->auroc);
    return fa != fb ? fa : fa && a->auroc < b->auroc;
  });
  std::string h = "<table><tr><th>unknown class</th><th>images</th><th>AUROC</th><th>accepted</th>"
                  "<th style=\"text-align:left\">accepted as (most often first)</th></tr>\n";
  for (const UnknownClassBreakdown* b : rows) {
    std::vector<size_t> order;
    for (size_t k = 0; k < b->accepted_as.size(); ++k)
      if (b->accepted_as[k] > 0) order.push_back(k);
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return b->accepted_as[x] > b->accepted_as[y]; });
    std::string as;
    for (size_t i = 0; i < order.size() && i < 3; ++i)
      as += fmt::format("{}{} {}", i ? ", " : "", html_escape(known_class_name(e, order[i])), b->accepted_as[order[i]]);
    if (order.size() > 3) as += ", …";
    const double share = b->images > 0 ? double(b->accepted) / double(b->images) : 0.0;
    h += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ({:.1f}%)</td><td style=\"text-align:left\">{}</td></tr>\n",
                     html_escape(unknown_label_name(e, b->label)), b->images,
                     std::isfinite(b->auroc) ? fmt::format("{:.4f}", b->auroc) : "n/a", b->accepted, 100 * share,
                     as.empty() ? "-" : as);
  }
  return h + "</table>\n";
}

namespace {
// Score x metric: a table per benchmark, method and unknown set (rows: the scores, the run's own
// first; cells: mean ± std over runs), and per run and set the ROC curves of its scores.
std::string html_scores(const std::vector<ReportEntry>& entries, const std::vector<GroupSummary>& groups,
                        const std::vector<std::string>& names) {
  if (std::all_of(entries.begin(), entries.end(), [](const ReportEntry& e) { return e.own; })) return "";
  const std::vector<std::string> shown = {"auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr", "oscr"};
  std::string h = "<h2>Scores</h2>\n<p class=\"meta\">The same networks scored by each post-hoc open-set score "
                  "(higher = more likely unknown for every one; * the run's own). cac: distance-based γ to the "
                  "class-mean anchors; msp: 1 − max softmax; mls: −max logit; energy: −logsumexp of the logits; knn: "
                  "distance to the k-th nearest normalised training feature; mahalanobis: the smallest squared "
                  "Mahalanobis distance to a class mean.</p>\n";
  std::string last;
  for (const GroupSummary& g : groups) {
    const std::string head = g.dataset + " · " + g.method + (g.unknown_set == "unknown" ? "" : " · " + g.unknown_set);
    if (head != last) {
      h += std::string(last.empty() ? "" : "</table>\n") + "<h3>" + html_escape(head) + fmt::format(" ({} run{})</h3>\n", g.runs, g.runs == 1 ? "" : "s") +
           "<table><tr><th>score</th>";
      for (const auto& n : shown) h += "<th>" + n + "</th>";
      h += "</tr>\n";
      last = head;
    }
    h += "<tr><td>" + html_escape(g.scorer) + (g.own ? " *" : "") + "</td>";
    for (const auto& n : shown) {
      const size_t at = size_t(std::find(names.begin(), names.end(), n) - names.begin());
      const double m = at < g.mean.size() ? g.mean[at] : NAN, sd = at < g.stdev.size() ? g.stdev[at] : NAN;
      h += !std::isfinite(m) ? std::string("<td>n/a</td>")
                             : g.runs > 1 ? fmt::format("<td>{:.4f} ± {:.4f}</td>", m, sd) : fmt::format("<td>{:.4f}</td>", m);
    }
    h += "</tr>\n";
  }
  h += "</table>\n<div class=\"plots\">";
  std::vector<std::string> done;
  for (const ReportEntry& e : entries) {
    const std::string name = entry_name(e);
    if (std::find(done.begin(), done.end(), name) != done.end()) continue;
    done.push_back(name);
    std::vector<Series> roc;
    for (const ReportEntry& x : entries) {
      if (entry_name(x) != name) continue;
      Series r{x.scorer, {}, {}};
      for (const RocPoint& p : roc_curve(x.known_scores, x.unknown_scores)) r.x.push_back(p.fpr), r.y.push_back(p.tpr);
      roc.push_back(r);
    }
    PlotSpec pr{"ROC by score: " + short_entry_name(e), "false-positive rate", "true-positive rate"};
    pr.diagonal = true;
    h += svg_line_plot(pr, roc);
  }
  return h + "</div>\n";
}
}  // namespace

namespace {
// The page's head, style and title lines.
std::string html_page_head(const std::string& title, const std::string& command_line, const std::string& engine) {
  std::string h = R"(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>)" +
                  html_escape(title) + R"(</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:13px} code{background:#f4f4f4;padding:1px 4px}
table{border-collapse:collapse;font-size:13px} th,td{padding:4px 8px;border-bottom:1px solid #e4e4e4;text-align:right}
th:first-child,td:first-child{text-align:left} tr.summary td{background:#f6f8fb;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:12px}
svg .title{font-size:14px;font-weight:600} svg .tick{font-size:11px;fill:#555} svg .axis{font-size:12px}
svg .legend{font-size:11px} svg .frame{fill:none;stroke:#999} svg .grid{stroke:#eee}
svg .chance{stroke:#bbb;stroke-dasharray:3 3}
table.cm td,table.cm th{text-align:center;border:1px solid #e4e4e4;min-width:44px} table.cm td.zero{color:#bbb}
details{margin:6px 0} summary{cursor:pointer;font-size:14px}
</style></head><body>
)";
  char when[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  h += fmt::format("<h1>{}</h1>\n<p class=\"meta\">{} · <code>{}</code>{}</p>\n", html_escape(title), when,
                   html_escape(command_line), engine.empty() ? "" : "<br>" + html_escape(engine));

  return h;
}

// The metrics table of the runs' own scores, with mean ± std rows, and the score x metric section.
std::string html_metrics(const std::vector<ReportEntry>& entries, const std::vector<std::string>& metric_names) {
  std::string h;
  h += "<h2>Metrics</h2>\n<p class=\"meta\">Score: each run's own: CAC min distance-based γ; CE 1 − max softmax, the "
       "protocol's baseline (the other scores: below; the confusion and unknown-class tables: the deployed score of "
       "deploy.json, cac_eval --deploy-score). Unknown = positive for "
       "AUROC and AUPR-out. CCR at FPR: n/a where the unknown set is too small to resolve that rate.</p>\n<table><tr><th>run</th><th>method</th>";
  for (auto& n : metric_names) h += "<th>" + html_escape(n) + "</th>";
  h += "</tr>\n";
  auto cell = [](double v, double sd = NAN) {
    if (!std::isfinite(v)) return std::string("<td>n/a</td>");
    return std::isfinite(sd) ? fmt::format("<td>{:.4f} ± {:.4f}</td>", v, sd) : fmt::format("<td>{:.4f}</td>", v);
  };
  for (const ReportEntry& e : entries) {
    if (!e.own) continue;
    h += "<tr><td>" + html_escape(entry_name(e)) + "</td><td>" + html_escape(e.method) + "</td>";
    for (auto& n : metric_names) h += cell(metric(e, n));
    h += "</tr>\n";
  }
  const std::vector<GroupSummary> groups = summarise(entries, metric_names);
  for (const GroupSummary& g : groups) {
    if (g.runs < 2 || !g.own) continue;
    h += fmt::format("<tr class=\"summary\"><td>mean ± std over {} runs{}{}</td><td>{}</td>", g.runs,
                     g.dataset.empty() ? "" : " · " + html_escape(g.dataset),
                     g.unknown_set == "unknown" ? "" : " · " + html_escape(g.unknown_set), html_escape(g.method));
    for (size_t i = 0; i < g.names.size(); ++i) h += cell(g.mean[i], g.stdev[i]);
    h += "</tr>\n";
  }
  h += "</table>\n";
  h += html_scores(entries, groups, metric_names);

  return h;
}

// ROC and OSCR curves and the score histograms of the runs' own scores.
std::string html_curves(const std::vector<ReportEntry>& entries) {
  std::string h;
  // ROC and OSCR curves, all entries overlaid.
  std::vector<Series> roc, oscr;
  size_t most_unknowns = 1;
  for (const ReportEntry& e : entries) {
    if (!e.own) continue;
    const std::string label = short_entry_name(e);
    Series r{label, {}, {}}, o{label, {}, {}};
    for (const RocPoint& p : roc_curve(e.known_scores, e.unknown_scores)) r.x.push_back(p.fpr), r.y.push_back(p.tpr);
    for (const OscrPoint& p : oscr_curve(e.known_scores, e.known_correct, e.unknown_scores)) o.x.push_back(p.fpr), o.y.push_back(p.ccr);
    roc.push_back(r), oscr.push_back(o);
    most_unknowns = std::max(most_unknowns, e.unknown_scores.size());
  }
  PlotSpec pr{"ROC (unknown = positive)", "false-positive rate (knowns called unknown)", "true-positive rate (unknowns found)"};
  pr.diagonal = true;
  PlotSpec po{"OSCR", "false-positive rate (unknowns accepted)", "correct classification rate (knowns)"};
  PlotSpec pl = po;
  pl.title = "OSCR, log FPR (the FP operating points)";
  pl.log_x = true;
  // Down to the smallest rate the largest unknown set resolves, at most 1e-4.
  pl.x_min = std::max(1e-4, std::pow(10.0, std::floor(std::log10(1.0 / double(most_unknowns)))));
  h += "<h2>Curves</h2>\n<div class=\"plots\">" + svg_line_plot(pr, roc) + svg_line_plot(po, oscr) + svg_line_plot(pl, oscr) + "</div>\n";

  h += "<h2>Open-set score distributions</h2>\n<div class=\"plots\">";
  for (const ReportEntry& e : entries)
    if (e.own) h += svg_histogram(short_entry_name(e), e.known_scores, e.unknown_scores);
  h += "</div>\n";

  return h;
}

// The logit spaces, the open-set confusion matrices and the unknown-class tables.
std::string html_run_details(const std::vector<ReportEntry>& entries) {
  std::string h;
  std::string spaces;
  for (const ReportEntry& e : entries)
    if (!e.known_logits.empty()) spaces += svg_logit_space(e);
  if (!spaces.empty())
    h += "<h2>Logit space</h2>\n<p class=\"meta\">Each test image's logits, projected on the plane of the two "
         "principal axes of the known images' logits; knowns coloured by true class, unknowns grey, crosses the "
         "class-mean anchors the scores are measured from. CAC pulls each class towards its anchor; unknowns "
         "should land away from all of them.</p>\n<div class=\"plots\">" + spaces + "</div>\n";

  bool first = true;
  for (const ReportEntry& e : entries) {
    if (e.confusion.empty()) continue;
    if (first)
      h += "<h2>Open-set confusion</h2>\n<p class=\"meta\">Rows: the true class (the known classes, then the unknown "
           "test set). Columns: the predicted known class, or <i>unknown</i> where the score is above the threshold "
           "(the one that accepts the stated share of the validation images of the known classes, as cac_predict "
           "uses). Each cell: "
           "images and share of the row.</p>\n";
    h += fmt::format("<details{}><summary>{} · {} score above {:.4g} (accepts {:g}% of the validation knowns)</summary>\n",
                     first ? " open" : "", html_escape(entry_name(e)), html_escape(e.deploy_score), e.threshold,
                     100 * e.accept) +
         html_confusion(e) + "</details>\n";
    first = false;
  }

  first = true;
  for (const ReportEntry& e : entries) {
    if (e.unknown_classes.empty()) continue;
    if (first)
      h += "<h2>Unknown classes</h2>\n<p class=\"meta\">Each unknown class on its own, the hardest first: the AUROC "
           "of the known test images against that class alone, how many of its images the threshold above accepts "
           "as known, and the known classes they are taken for: where the open-set errors come from.</p>\n";
    h += fmt::format("<details{}><summary>{} · {} classes</summary>\n", first ? " open" : "", html_escape(entry_name(e)),
                     e.unknown_classes.size()) + html_unknown_classes(e) + "</details>\n";
    first = false;
  }

  return h;
}

// Training curves, once per run (entries of one run share its metrics.csv).
std::string html_training(const std::vector<ReportEntry>& entries) {
  std::string h;
  std::vector<Series> loss, acc;
  double max_epoch = 1, max_loss = 0;
  std::vector<std::string> seen;
  for (const ReportEntry& e : entries) {
    if (e.metrics_csv.empty() || std::find(seen.begin(), seen.end(), e.run) != seen.end()) continue;
    seen.push_back(e.run);
    auto cols = parse_csv(e.metrics_csv);
    const auto& ep = cols["epoch"];
    if (ep.empty()) continue;
    for (double v : ep) max_epoch = std::max(max_epoch, v);
    const std::string name = run_short_name(e.run);
    loss.push_back({name + " train", ep, cols["train_loss"], false});
    loss.push_back({name + " val", ep, cols["val_loss"], true});
    acc.push_back({name + " train", ep, cols["train_acc"], false});
    acc.push_back({name + " val", ep, cols["val_acc"], true});
    for (const char* k : {"train_loss", "val_loss"})
      for (double v : cols[k])
        if (std::isfinite(v)) max_loss = std::max(max_loss, v);
  }
  if (!loss.empty()) {
    PlotSpec pls{"Loss per epoch (solid: train, dashed: validation)", "epoch", "loss"};
    pls.x_min = 1, pls.x_max = std::max(2.0, max_epoch), pls.y_max = max_loss > 0 ? max_loss * 1.05 : 1;
    PlotSpec pa{"Accuracy per epoch (solid: train, dashed: validation)", "epoch", "accuracy"};
    pa.x_min = 1, pa.x_max = pls.x_max;
    h += "<h2>Training</h2>\n<div class=\"plots\">" + svg_line_plot(pls, loss) + svg_line_plot(pa, acc) + "</div>\n";
  }
  return h;
}
}  // namespace

std::string html_report(const std::string& title, const std::vector<ReportEntry>& entries,
                        const std::vector<std::string>& metric_names, const std::string& command_line,
                        const std::string& engine) {
  return html_page_head(title, command_line, engine) + html_metrics(entries, metric_names) + html_curves(entries) +
         html_run_details(entries) + html_training(entries) + "</body></html>\n";
}

}  // namespace cac::eval
