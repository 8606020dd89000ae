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

const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

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
      animation: { duration: 300 },
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
        label: e, data: [], parsing: false, fill: i === 0 ? "origin" : "-1",
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
        legend: { position: "bottom", labels: { boxWidth: 12 } },
        tooltip: { callbacks: { title: (items) => clock(items[0].parsed.x), label: (ctx) => `${ctx.dataset.label} ${pct(ctx.parsed.y)}` } },
      },
    },
  });
}

/** Replace the distribution chart's data and its text list (the list is the accessible version). */
export function showDistribution(chart, list, dist) {
  chart.data.datasets[0].data = EMOTIONS.map((e) => dist[e] || 0);
  chart.update();
  const items = EMOTIONS.map((e) => {
    const li = document.createElement("li");
    li.dataset.emotion = e;
    li.dataset.value = String(dist[e] || 0);
    const name = document.createElement("span");
    name.className = `emo emo-${e}`;
    name.textContent = e;
    const value = document.createElement("strong");
    value.textContent = pct(dist[e] || 0);
    li.append(name, " ", value);
    return li;
  });
  list.replaceChildren(...items);
}

/** Set the timeline chart to ``points`` ({second, distribution}), oldest first. */
export function showTimeline(chart, points) {
  EMOTIONS.forEach((e, i) => {
    chart.data.datasets[i].data = points.map((p) => ({ x: p.second, y: p.distribution[e] || 0 }));
  });
  // The axis spans the data exactly (Chart.js would round it out to "nice" numbers).
  chart.options.scales.x.min = points.length ? points[0].second : undefined;
  chart.options.scales.x.max = points.length ? points[points.length - 1].second : undefined;
  chart.update();
}

const STATUS_TEXT = { active: "", "no-face": "face not in view", stale: "camera stopped", lost: "connection lost", left: "stopped sharing" };

/** Render per-student tiles; ``students`` absent means aggregate-only (tiles hidden). */
export function showTiles(container, note, students) {
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
