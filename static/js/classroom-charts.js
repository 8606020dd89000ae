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

/** Whole percentages of shares listed together, rounded by largest remainder so that they add up as the shares
 * do ([0.335, 0.335, 0.33] -> [34, 33, 33], not 34 + 34 + 33 = 101). */
export function percents(values) {
  // Scaled and cut to 9 decimals first: 0.29 * 100 is 28.999999999999996, which must count as 29.
  const scaled = values.map((v) => Math.round((Number(v) || 0) * 1e11) / 1e9);
  const out = scaled.map(Math.floor);
  let left = Math.round(scaled.reduce((a, b) => a + b, 0)) - out.reduce((a, b) => a + b, 0);
  const rest = (i) => scaled[i] - out[i];
  const order = scaled.map((v, i) => i).sort((a, b) => rest(b) - rest(a) || scaled[b] - scaled[a] || a - b);
  for (const i of order) {
    if (left <= 0) break;
    out[i] += 1;
    left -= 1;
  }
  return out;
}

/** How long ago, in words: "42 s", "5 min", "1 h 2 min". */
export function ago(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min`;
  const h = Math.floor(min / 60);
  return min % 60 ? `${h} h ${min % 60} min` : `${h} h`;
}

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

// The time axis's steps (s): the first that gives 10 ticks or fewer over the span is taken.
const TICK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];

/** The step between time-axis ticks, in seconds, for an axis ``span`` seconds long (about 4 to 10 ticks). */
export const tickStep = (span) => TICK_STEPS.find((s) => span / s <= 10) ?? TICK_STEPS[TICK_STEPS.length - 1];

/** The ticks (Unix seconds) from ``min`` to ``max`` at round local times: multiples of ``step`` on the viewer's
 * clock (08:05, 08:10 ... for 300 s, in a time zone 5:30 off UTC as in one a whole hour off). */
export function timeTicks(min, max, step) {
  if (!(step > 0) || !Number.isFinite(min) || !Number.isFinite(max)) return [];
  const align = (t) => { // the first round local time at or after t (the offset of t: summer time is followed)
    const offset = -new Date(t * 1000).getTimezoneOffset() * 60;
    return Math.ceil((t + offset) / step) * step - offset;
  };
  const ticks = [];
  for (let t = align(min); t <= max && ticks.length < 1000; t = align(t + step)) ticks.push(t);
  return ticks;
}

/** A time-axis tick's label: "08:05" when the ticks fall on whole minutes, else with seconds ("08:05:30"). */
const tickLabel = (seconds, step) => new Date(seconds * 1000)
  .toLocaleTimeString([], step % 60 === 0 ? FORMATS.time : FORMATS.clock);

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
      // The tooltip's share is the one the list beside the chart shows (rounded with the others).
      plugins: {
        legend: { display: false },
        tooltip: { callbacks: { label: (ctx) => `${percents(ctx.dataset.data)[ctx.dataIndex]}%` } },
      },
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
        // Ticks at round local times (showTimeline sets the step from the span), not at the first point.
        x: {
          type: "linear",
          ticks: {
            includeBounds: false,
            callback(v) { return tickLabel(v, this.options.ticks.stepSize); },
          },
          afterBuildTicks: (axis) => {
            axis.ticks = timeTicks(axis.min, axis.max, axis.options.ticks.stepSize).map((value) => ({ value }));
          },
        },
        y: { stacked: true, min: 0, max: 1, ticks: { callback: (v) => pct(v) } },
      },
      plugins: {
        // A click on the legend does not hide an emotion: the keyboard cannot, and the summary in words
        // (describeTimeline) would no longer match the picture.
        legend: { position: "bottom", labels: { boxWidth: 12 }, onClick: () => {} },
        tooltip: {
          callbacks: {
            title: (items) => clock(items[0].parsed.x),
            // The seven shares of a point are listed together: rounded together.
            label: (ctx) => {
              const shares = ctx.chart.data.datasets.map((d) => (d.data[ctx.dataIndex] || {}).y || 0);
              return `${ctx.dataset.label} ${percents(shares)[ctx.datasetIndex]}%`;
            },
          },
        },
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
  const shown = dist ? percents(EMOTIONS.map((e) => dist[e] || 0)) : null;
  const items = EMOTIONS.map((e, i) => {
    const li = document.createElement("li");
    li.dataset.emotion = e;
    li.dataset.value = String((dist && dist[e]) || 0);
    const name = document.createElement("span");
    name.className = `emo emo-${e}`;
    name.textContent = e;
    const value = document.createElement("strong");
    value.textContent = shown ? `${shown[i]}%` : "–";
    li.append(name, " ", value);
    return li;
  });
  list.replaceChildren(...items);
}

/** ``points`` ({second, distribution, [step]}, oldest first, one per bucket that has data: ``step`` seconds
 * long, or the point's own ``step``, as in the coarser start of a long session) with a null point in each run
 * of missing buckets, so the chart leaves a gap there instead of drawing across it. */
export function withGaps(points, step) {
  const out = [];
  points.forEach((p, i) => {
    const before = i ? points[i - 1] : null;
    const length = before && (before.step || step);
    if (length > 0 && p.second - before.second > length) {
      out.push({ second: before.second + length, distribution: null });
    }
    out.push(p);
  });
  return out;
}

/** The timeline in words, in the element its canvas names with aria-describedby (its tooltips need a mouse):
 * the latest shares, largest first, and the emotion most common over ``points`` (each weighs the seconds it
 * stands for: its own ``step``, else ``step``); "" without a mood. */
function describeTimeline(chart, points, step) {
  const el = document.getElementById(chart.canvas.getAttribute("aria-describedby"));
  if (!el) return;
  const moods = points.filter((p) => hasMood(p.distribution));
  if (!moods.length) {
    el.textContent = "";
    return;
  }
  const latest = moods[moods.length - 1];
  const rounded = percents(EMOTIONS.map((e) => latest.distribution[e] || 0));
  const shares = EMOTIONS.map((e, i) => [e, latest.distribution[e] || 0, rounded[i]])
    .filter(([, , n]) => n > 0)
    .sort((a, b) => b[1] - a[1]);
  const total = (e) => moods.reduce((sum, p) => sum + (p.distribution[e] || 0) * (p.step || step || 1), 0);
  const common = EMOTIONS.reduce((best, e) => (total(e) > total(best) ? e : best));
  el.textContent = `Latest, at ${clock(latest.second)}: ${shares.map(([e, , n]) => `${e} ${n}%`).join(", ")}. `
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
  // The axis spans the data exactly (Chart.js would round it out to "nice" numbers), its ticks at round local
  // times; without data it has no labels at all (it would count from 0: 1 January 1970).
  const x = chart.options.scales.x;
  const first = points.length ? points[0].second : undefined;
  const last = points.length ? points[points.length - 1].second : undefined;
  x.min = first;
  x.max = last === first && last !== undefined ? last + Math.max(step || 0, 1) : last;
  x.ticks.stepSize = points.length ? tickStep(x.max - x.min) : undefined;
  x.ticks.display = points.length > 0;
  if (empty) empty.hidden = points.length > 0;
  chart.update();
  describeTimeline(chart, points, step);
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
    if (s.seen_ago != null) seen.textContent = `seen ${ago(s.seen_ago)} ago${status ? ` · ${status}` : ""}`;
    else if (s.frames != null) seen.textContent = `${s.frames} frames`;
    else seen.textContent = status || "not seen yet";
    div.append(name, emo, seen);
    return div;
  });
  container.replaceChildren(...tiles);
}
