// A past session's report: one fetch of the session's figures, then charts and tiles.
import { distributionChart, pct, showDistribution, showTiles, showTimeline, timelineChart } from "./classroom-charts.js";

const $ = (id) => document.getElementById(id);
const report = $("report");

function fail(why) {
  report.dataset.state = "error";
  report.prepend(Object.assign(document.createElement("p"), { className: "error", textContent: `Could not load the session (${why}).` }));
}

async function load() {
  let s;
  try {
    const resp = await fetch(report.dataset.api, { headers: { Accept: "application/json" } });
    if (!resp.ok) { fail(resp.status); return; }
    s = await resp.json();
  } catch (err) { // offline, or not JSON
    fail(err.message || err);
    return;
  }
  $("kpi-engagement").textContent = pct(s.engagement);
  $("kpi-negative").textContent = pct(s.negative);
  showDistribution(distributionChart($("dist-chart")), $("dist-list"), s.distribution);
  showTimeline(timelineChart($("timeline-chart")), s.timeline);
  showTiles($("tiles"), $("aggregate-note"), s.per_student);
  report.dataset.state = "loaded";
}

load();
