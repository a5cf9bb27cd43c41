// A small line / bar plot rasterised to RGB8: axes with "nice" ticks (1, 2, 5 x 10^k, or
// decades on a log axis), light grid lines, a title, axis labels and a legend. Enough to
// draw a noise schedule or an attention distribution without a plotting library.
//
//   PlotOptions o;
//   o.title = "beta_t";
//   o.x_label = "t";
//   plot({{"linear", t, betas_linear}, {"scaled_linear", t, betas_sd}}, o).save("betas.png");
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ldm/viz/canvas.hpp"

namespace ldm::viz {

struct Series {
  Series(std::string label_ = "", std::vector<double> x_ = {}, std::vector<double> y_ = {})
      : label(std::move(label_)), x(std::move(x_)), y(std::move(y_)) {}
  std::string label;           // shown in the legend ("" = not listed)
  std::vector<double> x, y;    // same length; on a log axis, values <= 0 are skipped
  std::optional<Color> color;  // default: palette(index of the series)
  bool bars = false;           // draw as bars from the x axis, one per x (centred on it)
};

enum class Corner { TopRight, TopLeft, BottomRight, BottomLeft, None };

struct PlotOptions {
  int width = 560, height = 360;
  std::string title, x_label, y_label;
  bool log_y = false;
  std::optional<double> y_min, y_max;  // default: the data's range (bars: from 0)
  Corner legend = Corner::TopRight;
};

// The step of 1, 2 or 5 x 10^k that cuts [lo, hi] into about `target` pieces.
inline double nice_step(double lo, double hi, int target = 5) {
  const double raw = (hi - lo) / target, mag = std::pow(10.0, std::floor(std::log10(raw)));
  return raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
}

// The multiples of nice_step(lo, hi, target) in [lo, hi].
inline std::vector<double> nice_ticks(double lo, double hi, int target = 5) {
  if (!(hi > lo)) return {lo};
  const double step = nice_step(lo, hi, target);
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step)
    t.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

inline Canvas plot(const std::vector<Series>& series, const PlotOptions& o) {
  LDM_CHECK(!series.empty(), "plot: no series to draw");
  auto ty = [&](double y) { return o.log_y ? std::log10(y) : y; };
  auto usable = [&](double y) { return std::isfinite(y) && (!o.log_y || y > 0); };

  // Data range (in log10 units on a log axis).
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  bool any_bars = false;
  for (const auto& s : series) {
    LDM_CHECK(s.x.size() == s.y.size(), "plot: series '", s.label, "' has ", s.x.size(), " x and ", s.y.size(),
              " y values");
    any_bars |= s.bars;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!usable(s.y[i])) continue;
      x0 = std::min(x0, s.x[i] - (s.bars ? 0.5 : 0.0)), x1 = std::max(x1, s.x[i] + (s.bars ? 0.5 : 0.0));
      y0 = std::min(y0, ty(s.y[i])), y1 = std::max(y1, ty(s.y[i]));
    }
  }
  LDM_CHECK(x0 <= x1, "plot: no finite", o.log_y ? ", positive" : "", " values to draw");
  if (any_bars && !o.log_y) y0 = std::min(y0, 0.0);
  if (o.y_min) y0 = ty(*o.y_min);
  if (o.y_max) y1 = ty(*o.y_max);
  if (x1 == x0) x0 -= 0.5, x1 += 0.5;
  if (y1 == y0) y0 -= 0.5, y1 += 0.5;

  // Ticks: on a log axis the decades (every 2nd, 3rd, ... when there are many).
  std::vector<double> yt;  // in axis units (log10 on a log axis)
  if (o.log_y) {
    y0 = std::floor(y0), y1 = std::ceil(y1);
    const int every = std::max(1, int(std::ceil((y1 - y0) / 6)));
    for (double d = y0; d <= y1 + 1e-9; d += every) yt.push_back(d);
  } else {
    const double step = nice_step(y0, y1);  // the axis ends on ticks unless the caller fixed them
    if (!o.y_min) y0 = std::floor(y0 / step + 1e-9) * step;
    if (!o.y_max) y1 = std::ceil(y1 / step - 1e-9) * step;
    yt = nice_ticks(y0, y1);
  }
  std::vector<double> xt = nice_ticks(x0, x1, 6);
  auto ylabel = [&](double v) { return o.log_y ? "1e" + format_number(v) : format_number(v); };

  // Layout: [y label][tick labels][plot area], title above, x ticks and label below.
  int tick_w = 0;
  for (double v : yt) tick_w = std::max(tick_w, Canvas::text_width(ylabel(v)));
  const int left = 4 + (o.y_label.empty() ? 0 : kCellHeight + 4) + tick_w + 6;
  const int top = o.title.empty() ? 10 : 2 * kCellHeight + 12;
  const int bottom = 16 + (o.x_label.empty() ? 0 : kCellHeight + 4);
  const int right = 16;
  const int pw = o.width - left - right, ph = o.height - top - bottom;
  LDM_CHECK(pw > 20 && ph > 20, "plot: ", o.width, "x", o.height, " is too small for the axes and labels");
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * (pw - 1); };
  auto py = [&](double y) { return top + ph - 1 - (y - y0) / (y1 - y0) * (ph - 1); };

  Canvas c(o.width, o.height);
  // Grid and tick labels.
  for (double v : yt) {
    if (v < y0 - 1e-9 || v > y1 + 1e-9) continue;
    const int y = int(std::lround(py(v)));
    c.fill_rect(left, y, pw, 1, kLightGray);
    const std::string s = ylabel(v);
    c.text(left - 6 - Canvas::text_width(s), y - 3, s, kBlack);
  }
  for (double v : xt) {
    if (v < x0 - 1e-9 || v > x1 + 1e-9) continue;
    const int x = int(std::lround(px(v)));
    c.fill_rect(x, top, 1, ph, kLightGray);
    c.fill_rect(x, top + ph, 1, 4, kBlack);
    const std::string s = format_number(v);
    c.text(x - Canvas::text_width(s) / 2, top + ph + 6, s, kBlack);
  }

  // Data.
  for (size_t k = 0; k < series.size(); ++k) {
    const Series& s = series[k];
    const Color col = s.color.value_or(palette(k));
    if (s.bars) {
      const double half = 0.4 * (px(1.0) - px(0.0));
      const double base = py(std::clamp(o.log_y ? y0 : 0.0, y0, y1));
      for (size_t i = 0; i < s.x.size(); ++i) {
        if (!usable(s.y[i])) continue;
        const double a = px(s.x[i]) - half, b = px(s.x[i]) + half;
        const double yv = py(std::clamp(ty(s.y[i]), y0, y1));
        const int xa = int(std::lround(a)), xb = std::max(xa + 1, int(std::lround(b)));
        const int ya = int(std::lround(std::min(yv, base))), yb = int(std::lround(std::max(yv, base)));
        c.fill_rect(xa, ya, xb - xa, std::max(1, yb - ya), col);
      }
    } else {
      bool have = false;
      double lx = 0, ly = 0;
      for (size_t i = 0; i < s.x.size(); ++i) {
        if (!usable(s.y[i])) {
          have = false;
          continue;
        }
        const double x = px(s.x[i]), y = py(std::clamp(ty(s.y[i]), y0, y1));
        if (have) c.line(lx, ly, x, y, col, 2);
        lx = x, ly = y, have = true;
      }
    }
  }

  // Frame, title, axis labels.
  c.rect(left - 1, top - 1, pw + 2, ph + 2, kBlack);
  if (!o.title.empty()) c.text(o.width / 2 - Canvas::text_width(o.title, 2) / 2, 6, o.title, kBlack, 2);
  if (!o.x_label.empty())
    c.text(left + pw / 2 - Canvas::text_width(o.x_label) / 2, o.height - kCellHeight - 2, o.x_label, kBlack);
  if (!o.y_label.empty()) c.text_up(4, top + ph / 2 + Canvas::text_width(o.y_label) / 2, o.y_label, kBlack);

  // Legend: a swatch and the label of each named series, in a framed box in one corner.
  std::vector<size_t> named;
  for (size_t k = 0; k < series.size(); ++k)
    if (!series[k].label.empty()) named.push_back(k);
  if (o.legend != Corner::None && !named.empty()) {
    int lw = 0;
    for (size_t k : named) lw = std::max(lw, Canvas::text_width(series[k].label));
    const int bw = lw + 34, bh = int(named.size()) * 12 + 8;
    const bool at_right = o.legend == Corner::TopRight || o.legend == Corner::BottomRight;
    const bool at_top = o.legend == Corner::TopRight || o.legend == Corner::TopLeft;
    const int bx = at_right ? left + pw - bw - 6 : left + 6, by = at_top ? top + 6 : top + ph - bh - 6;
    c.fill_rect(bx, by, bw, bh, kWhite);
    c.rect(bx, by, bw, bh, kGray);
    for (size_t j = 0; j < named.size(); ++j) {
      const Series& s = series[named[j]];
      const Color col = s.color.value_or(palette(named[j]));
      const int y = by + 6 + int(j) * 12;
      if (s.bars)
        c.fill_rect(bx + 6, y, 18, 7, col);
      else
        c.fill_rect(bx + 6, y + 3, 18, 2, col);
      c.text(bx + 28, y, s.label, kBlack);
    }
  }
  return c;
}

}  // namespace ldm::viz
