// SVG charts drawn here (no library): stacked bars and lines over a time axis. Each chart
// is an <figure> with a role="img" SVG whose label summarises it, and a legend in text.

import { h, s, fmtCompact } from "./dom.js";

const W = 640;
const H = 200;
const PAD = { l: 48, r: 12, t: 12, b: 26 };

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function axes(svg, times, max, fmtY, fmtX) {
  const iw = W - PAD.l - PAD.r;
  const ih = H - PAD.t - PAD.b;
  for (const f of [0, 0.5, 1]) {
    const y = PAD.t + ih - f * ih;
    svg.append(s("line", { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: "grid-line" }));
    svg.append(s("text", { x: PAD.l - 6, y: y + 4, "text-anchor": "end", class: "axis-label" }, fmtY(max * f)));
  }
  if (times.length) {
    const idx = [0, Math.floor((times.length - 1) / 2), times.length - 1];
    const anchors = ["start", "middle", "end"];
    idx.forEach((i, k) => {
      const x = PAD.l + ((i + 0.5) / times.length) * iw;
      svg.append(s("text", { x: k === 0 ? PAD.l : k === 2 ? W - PAD.r : x, y: H - 6, "text-anchor": anchors[k], class: "axis-label" }, fmtX(times[i])));
    });
  }
}

function legend(series, totals) {
  return h("ul", { class: "legend" }, series.map((se, i) => h("li", {},
    h("span", { class: ["swatch", `c${se.color ?? i}`], "aria-hidden": "true" }),
    se.name,
    totals ? h("span", { class: "muted" }, ` ${totals[i]}`) : null)));
}

/**
 * chart({title, kind: "bar"|"line", times: Date[], series: [{name, values, color}],
 *        fmtY, fmtX, summary, totals})
 */
export function chart({ title, kind = "bar", times, series, fmtY = fmtCompact, fmtX, summary, totals }) {
  const n = times.length;
  let max = 0;
  if (kind === "bar") {
    for (let i = 0; i < n; i++) max = Math.max(max, series.reduce((a, se) => a + (se.values[i] || 0), 0));
  } else {
    for (const se of series) for (const v of se.values) if (v !== null && v !== undefined) max = Math.max(max, v);
  }
  max = niceMax(max);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}. ${summary || ""}`, class: "chart-svg" },
    s("title", {}, title));
  axes(svg, times, max, fmtY, fmtX);
  const iw = W - PAD.l - PAD.r;
  const ih = H - PAD.t - PAD.b;
  const step = n ? iw / n : iw;
  const y = (v) => PAD.t + ih - (v / max) * ih;
  if (kind === "bar") {
    const bw = Math.max(1, step * 0.7);
    for (let i = 0; i < n; i++) {
      let base = 0;
      series.forEach((se, k) => {
        const v = se.values[i] || 0;
        if (!v) return;
        const x = PAD.l + i * step + (step - bw) / 2;
        svg.append(s("rect", { x: x.toFixed(1), y: y(base + v).toFixed(1), width: bw.toFixed(1), height: Math.max(0.5, y(base) - y(base + v)).toFixed(1), class: `fill c${se.color ?? k}` }));
        base += v;
      });
    }
  } else {
    series.forEach((se, k) => {
      let d = "";
      let pen = false;
      se.values.forEach((v, i) => {
        if (v === null || v === undefined) {
          pen = false;
          return;
        }
        const x = PAD.l + (i + 0.5) * step;
        d += `${pen ? "L" : "M"}${x.toFixed(1)} ${y(v).toFixed(1)} `;
        pen = true;
      });
      if (d) svg.append(s("path", { d: d.trim(), class: `stroke c${se.color ?? k}` }));
      se.values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        const prev = se.values[i - 1];
        const next = se.values[i + 1];
        if ((prev === null || prev === undefined) && (next === null || next === undefined)) {
          svg.append(s("circle", { cx: (PAD.l + (i + 0.5) * step).toFixed(1), cy: y(v).toFixed(1), r: 3, class: `fill c${se.color ?? k}` }));
        }
      });
    });
  }
  return h("figure", { class: "chart" }, h("figcaption", {}, title), svg, legend(series, totals));
}
