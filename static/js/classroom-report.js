// A session's report: one fetch of the session's figures (the whole session; so far, for a running one), then
// charts and tiles.
import {
  clock, distributionChart, hasMood, pct, showDistribution, showLocalTimes, showTiles, showTimeline, timelineChart,
} from "./classroom-charts.js";

const $ = (id) => document.getElementById(id);
const report = $("report");

showLocalTimes();

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
  // No face seen in the whole session: no mood to speak of, so "–" rather than 0 %.
  const mood = hasMood(s.distribution);
  $("kpi-engagement").textContent = pct(s.engagement);
  $("kpi-negative").textContent = mood ? pct(s.negative) : "–";
  showDistribution(distributionChart($("dist-chart")), $("dist-list"), mood ? s.distribution : null, $("dist-empty"));
  showTimeline(timelineChart($("timeline-chart")), s.timeline, s.step || Number(report.dataset.step) || 0,
    $("timeline-empty"));
  showTiles($("tiles"), $("aggregate-note"), s.per_student, $("tiles-empty"));
  // A running session's figures are those stored when the page loaded: say when that was.
  if (s.session && s.session.running && $("as-of")) $("as-of").textContent = `, as of ${clock(Date.now() / 1000)}`;
  report.dataset.state = "loaded";
}

load();
