// The teacher's live class dashboard: joins the class's room on /classroom and
// redraws on every pushed `mood` summary; stops when the session ends.
import { io } from "./socket.js";
import { distributionChart, pct, showDistribution, showTiles, showTimeline, timelineChart } from "./classroom-charts.js";

const $ = (id) => document.getElementById(id);
const board = $("board");
const code = board.dataset.code;
const distChart = distributionChart($("dist-chart"));
const timeChart = timelineChart($("timeline-chart"));
const points = new Map(); // bucket start (Unix s) -> point; pushes carry the latest few
let updates = 0;
let alertsKey = null;

function showAlerts(alerts) {
  // #alerts is a live region: touch it only when what it says changes, or it is announced on every push.
  const key = JSON.stringify(alerts.map((a) => [a.kind, a.level, a.message]));
  if (key === alertsKey) return;
  alertsKey = key;
  const items = alerts.map((a) => {
    const li = document.createElement("li");
    li.className = "alert";
    li.dataset.kind = a.kind;
    li.dataset.level = a.level;
    li.textContent = a.message;
    return li;
  });
  $("alerts").replaceChildren(...items);
}

function render(summary, replaceTimeline) {
  $("kpi-students").textContent = String(summary.students);
  $("kpi-faces").textContent = String(summary.faces ?? "–");
  $("kpi-engagement").textContent = pct(summary.engagement);
  $("kpi-negative").textContent = pct(summary.negative);
  $("kpi-updated").textContent = new Date().toLocaleTimeString();
  showDistribution(distChart, $("dist-list"), summary.distribution);
  if (replaceTimeline) points.clear();
  for (const p of summary.timeline) points.set(p.second, p);
  showTimeline(timeChart, [...points.keys()].sort((a, b) => a - b).map((k) => points.get(k)));
  showAlerts(summary.alerts || []);
  showTiles($("tiles"), $("aggregate-note"), summary.per_student);
  board.dataset.students = String(summary.students);
  board.dataset.updates = String(++updates);
}

// The session ended (pushed, or found in the snapshot after a reconnection): say so and stop listening.
function showEnded() {
  board.dataset.state = "ended";
  const banner = $("ended-banner");
  banner.hidden = false;
  banner.textContent = "The session has ended; the dashboard no longer updates. Reload to start a new one.";
  socket.disconnect();
}

const socket = io("/classroom", { transports: ["websocket", "polling"] });
socket.on("connect", () => {
  // Rooms do not survive a reconnection: join again and take a full snapshot.
  socket.emit("dashboard_join", { code }, (answer) => {
    if (!answer || answer.error) {
      board.dataset.state = "error";
      showAlerts([{ kind: "error", level: "error", message: `Dashboard unavailable: ${answer ? answer.error : "no answer"}` }]);
      return;
    }
    render(answer.summary, true);
    const session = answer.summary.session;
    if (session && session.running) {
      board.dataset.state = "live";
      $("ended-banner").hidden = true;
    } else if (board.dataset.state !== "ended") {
      showEnded(); // it ended while we were away
    }
  });
});
socket.on("mood", (summary) => { if (board.dataset.state === "live") render(summary, false); });
socket.on("session_ended", showEnded);
socket.on("connect_error", (err) => {
  showAlerts([{ kind: "error", level: "error", message: `Cannot reach the server (${err.message}); retrying…` }]);
});
