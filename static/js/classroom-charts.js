// Charts and lists of the class mood, shared by the live dashboard and the session report.
// Chart.js is loaded before this module (classic script, /vendor/chart.umd.min.js).
import { COLOURS, EMOTIONS } from "./stream.js";

const Chart = window.Chart;
if (Chart) {
  Chart.defaults.color = "#9aa4b2";
  Chart.defaults.borderColor = "#232c3f";
  Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
}

export const pct = (v) => (v == null ? "–" : `${Math.round(v * 100)}%`);

// No chart animation for whoever asked their system for less motion (app.css does the same for the page).
const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

// Every time on the classroom pages is the viewer's local time, 24-hour: the server writes UTC into
// <time datetime> elements (the text without JavaScript) and showLocalTimes() rewrites them.
const H23 = { hourCycle: "h23" };
const FORMATS = {
  clock: { hour: "2-digit", minute: "2-digit", second: "2-digit", ...H23 },
  time: { hour: "2-digit", minute: "2-digit", ...H23 },
  datetime: { dateStyle: "medium", timeStyle: "short", ...H23 },
};

/** Unix seconds as the viewer's local time of day, 24-hour with seconds ("18:34:50"). */
export const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], FORMATS.clock);

/** Rewrite each ``<time class="local-time" datetime="...Z" data-format="time|datetime|clock">`` in local time
 * (the server's UTC text stays as the tooltip). */
export function showLocalTimes(root = document) {
  for (const el of root.querySelectorAll("time.local-time[datetime]")) {
    const when = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(when.getTime())) continue;
    if (!el.title) el.title = el.textContent.trim();
    el.textContent = when.toLocaleString([], FORMATS[el.dataset.format] || FORMATS.time);
  }
}

/** A horizontal bar chart of the seven emotions' shares. */
export function distributionChart(canvas) {
  return new Chart(canvas, {
    type: "bar",
    data: {
      labels: EMOTIONS,
      datasets: [{ data: EMOTIONS.map(() => 0), backgroundColor: EMOTIONS.map((e) => COLOURS[e]), borderRadius: 4 }],
    },
    options: {
      indexAxis: "y",
      responsive: true,
      maintainAspectRatio: false,
      animation: reducedMotion.matches ? false : { duration: 300 },
      scales: { x: { min: 0, max: 1, ticks: { callback: (v) => pct(v) } } },
      plugins: { legend: { display: false }, tooltip: { callbacks: { label: (ctx) => pct(ctx.parsed.x) } } },
    },
  });
}

/** A stacked area chart of the class mood over time (x: Unix seconds). */
export function timelineChart(canvas) {
  return new Chart(canvas, {
    type: "line",
    data: {
      datasets: EMOTIONS.map((e, i) => ({
        label: e, data: [], parsing: false, fill: i === 0 ? "origin" : "-1", spanGaps: false,
        borderColor: COLOURS[e], backgroundColor: `${COLOURS[e]}b3`, pointRadius: 0, borderWidth: 1, tension: 0.2,
      })),
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { type: "linear", ticks: { callback: (v) => clock(v), maxTicksLimit: 8 } },
        y: { stacked: true, min: 0, max: 1, ticks: { callback: (v) => pct(v) } },
      },
      plugins: {
        // A click on the legend does not hide an emotion: the keyboard cannot, and the summary in words
        // (describeTimeline) would no longer match the picture.
        legend: { position: "bottom", labels: { boxWidth: 12 }, onClick: () => {} },
        tooltip: { callbacks: { title: (items) => clock(items[0].parsed.x), label: (ctx) => `${ctx.dataset.label} ${pct(ctx.parsed.y)}` } },
      },
    },
  });
}

/** Whether a distribution holds any mood at all (all zeros: no face was seen). */
export const hasMood = (dist) => Boolean(dist) && EMOTIONS.some((e) => dist[e] > 0);

/** Replace the distribution chart's data and its text list (the list is the accessible version).
 * ``dist`` null: no mood to show ("–" in the list); ``empty``, if given, is the note shown then. */
export function showDistribution(chart, list, dist, empty = null) {
  chart.data.datasets[0].data = EMOTIONS.map((e) => (dist && dist[e]) || 0);
  chart.update();
  if (empty) empty.hidden = Boolean(dist);
  const items = EMOTIONS.map((e) => {
    const li = document.createElement("li");
    li.dataset.emotion = e;
    li.dataset.value = String((dist && dist[e]) || 0);
    const name = document.createElement("span");
    name.className = `emo emo-${e}`;
    name.textContent = e;
    const value = document.createElement("strong");
    value.textContent = dist ? pct(dist[e] || 0) : "–";
    li.append(name, " ", value);
    return li;
  });
  list.replaceChildren(...items);
}

/** ``points`` ({second, distribution}, oldest first, one per ``step``-second bucket that has data) with a
 * null point in each run of missing buckets, so the chart leaves a gap there instead of drawing across it. */
export function withGaps(points, step) {
  const out = [];
  points.forEach((p, i) => {
    const before = i ? points[i - 1].second : null;
    if (before != null && step > 0 && p.second - before > step) out.push({ second: before + step, distribution: null });
    out.push(p);
  });
  return out;
}

/** The timeline in words, in the element its canvas names with aria-describedby (its tooltips need a mouse):
 * the latest shares, largest first, and the emotion most common over ``points``; "" without a mood. */
function describeTimeline(chart, points) {
  const el = document.getElementById(chart.canvas.getAttribute("aria-describedby"));
  if (!el) return;
  const moods = points.filter((p) => hasMood(p.distribution));
  if (!moods.length) {
    el.textContent = "";
    return;
  }
  const latest = moods[moods.length - 1];
  const shares = EMOTIONS.map((e) => [e, latest.distribution[e] || 0])
    .filter(([, v]) => Math.round(v * 100) > 0)
    .sort((a, b) => b[1] - a[1]);
  const total = (e) => moods.reduce((sum, p) => sum + (p.distribution[e] || 0), 0);
  const common = EMOTIONS.reduce((best, e) => (total(e) > total(best) ? e : best));
  el.textContent = `Latest, at ${clock(latest.second)}: ${shares.map(([e, v]) => `${e} ${pct(v)}`).join(", ")}. `
    + `Most common over the session: ${common}.`;
}

/** Set the timeline chart to ``points`` ({second, distribution}), oldest first, buckets of ``step`` seconds;
 * ``empty``, if given, is the note shown when there is no point. */
export function showTimeline(chart, points, step, empty = null) {
  const all = withGaps(points, step);
  EMOTIONS.forEach((e, i) => {
    const y = (p) => (p.distribution ? p.distribution[e] || 0 : null);
    chart.data.datasets[i].data = all.map((p) => ({ x: p.second, y: y(p) }));
  });
  // The axis spans the data exactly (Chart.js would round it out to "nice" numbers); without data it has no
  // labels at all (it would count from 0: 1 January 1970).
  const x = chart.options.scales.x;
  const first = points.length ? points[0].second : undefined;
  const last = points.length ? points[points.length - 1].second : undefined;
  x.min = first;
  x.max = last === first && last !== undefined ? last + Math.max(step || 0, 1) : last;
  x.ticks.display = points.length > 0;
  if (empty) empty.hidden = points.length > 0;
  chart.update();
  describeTimeline(chart, points);
}

const STATUS_TEXT = { active: "", "no-face": "face not in view", stale: "camera stopped", lost: "connection lost", left: "stopped sharing" };

/** Render per-student tiles; ``students`` absent means aggregate-only (tiles hidden); ``empty``, if given,
 * is the note shown when there is no student. */
export function showTiles(container, note, students, empty = null) {
  if (empty) empty.hidden = !students || students.length > 0;
  if (!students) {
    note.hidden = false;
    container.replaceChildren();
    container.hidden = true;
    return;
  }
  note.hidden = true;
  container.hidden = false;
  const tiles = students.map((s) => {
    const div = document.createElement("div");
    div.className = "tile";
    div.dataset.status = s.status || "";
    div.dataset.label = s.label || "";
    const name = document.createElement("strong");
    name.className = "tile-name";
    name.textContent = s.name;
    const emo = document.createElement("span");
    emo.className = s.label ? `emo emo-${s.label}` : "emo";
    emo.textContent = s.label ? `${s.label}${s.score != null ? ` ${pct(s.score)}` : ""}` : "–";
    const seen = document.createElement("span");
    seen.className = "muted small";
    const status = STATUS_TEXT[s.status] || "";
    if (s.seen_ago != null) seen.textContent = `seen ${Math.round(s.seen_ago)} s ago${status ? ` · ${status}` : ""}`;
    else if (s.frames != null) seen.textContent = `${s.frames} frames`;
    else seen.textContent = status || "not seen yet";
    div.append(name, emo, seen);
    return div;
  });
  container.replaceChildren(...tiles);
}
