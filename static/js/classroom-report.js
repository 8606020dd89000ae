// A past session's report: one fetch of the session's figures, then charts and tiles.
import { distributionChart, pct, showDistribution, showTiles, showTimeline, timelineChart } from "./classroom-charts.js";

const $ = (id) => document.getElementById(id);
const report = $("report");

async function load() {
  const resp = await fetch(report.dataset.api, { headers: { Accept: "application/json" } });
  if (!resp.ok) {
    report.dataset.state = "error";
    report.prepend(Object.assign(document.createElement("p"), { className: "error", textContent: `Could not load the session (${resp.status}).` }));
    return;
  }
  const s = await resp.json();
  $("kpi-engagement").textContent = pct(s.engagement);
  const neg = ["angry", "disgust", "fear", "sad"].reduce((acc, e) => acc + (s.distribution[e] || 0), 0);
  $("kpi-negative").textContent = pct(neg);
  showDistribution(distributionChart($("dist-chart")), $("dist-list"), s.distribution);
  showTimeline(timelineChart($("timeline-chart")), s.timeline);
  showTiles($("tiles"), $("aggregate-note"), s.per_student);
  report.dataset.state = "loaded";
}

load();
