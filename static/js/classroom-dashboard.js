// The teacher's live class dashboard: joins the class's room on /classroom and
// redraws on every pushed `mood` summary; stops when the session ends, and when
// the teacher's login ends (log-out, from this tab or another): then it says so
// and takes the students' names off the page.
import { io } from "./socket.js";
import {
  clock, distributionChart, hasMood, pct, showDistribution, showLocalTimes, showTiles, showTimeline, timelineChart,
} from "./classroom-charts.js";

const $ = (id) => document.getElementById(id);
const board = $("board");
const code = board.dataset.code;
const step = Number(board.dataset.step) || 0;
const distChart = distributionChart($("dist-chart"));
const timeChart = timelineChart($("timeline-chart"));
const points = new Map(); // bucket start (Unix s) -> point; pushes carry the latest few
let updates = 0;
let alertsKey = null;

showLocalTimes();

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

// The last KPI: when the figures were computed while the session runs, when it ended once it has.
function showWhen(label, seconds) {
  $("kpi-when-label").textContent = label;
  if (seconds == null) {
    $("kpi-when").textContent = "–";
    return;
  }
  const time = document.createElement("time");
  time.dateTime = new Date(Math.round(seconds) * 1000).toISOString().replace(".000Z", "Z");
  time.textContent = clock(seconds);
  $("kpi-when").replaceChildren(time);
}

function render(summary, replaceTimeline) {
  const session = summary.session;
  const live = Boolean(session && session.running);
  // No student connected: nothing is "now", whatever the last seconds still hold of those who left.
  const nobody = live && !summary.students;
  const mood = !nobody && hasMood(summary.distribution);
  $("kpi-students").textContent = String(summary.students ?? 0);
  $("kpi-faces").textContent = live && !nobody ? String(summary.faces ?? 0) : "–";
  $("kpi-engagement").textContent = nobody ? "–" : pct(summary.engagement);
  $("kpi-negative").textContent = mood ? pct(summary.negative) : "–";
  if (live) showWhen("Updated", summary.ts ?? Date.now() / 1000);
  else showWhen("Session ended", session && session.ended ? Date.parse(session.ended) / 1000 : null);
  $("dist-empty").textContent = !live ? "Nothing was recorded in this session."
    : nobody ? "No student is sharing a camera right now." : "No face in view right now.";
  showDistribution(distChart, $("dist-list"), mood ? summary.distribution : null, $("dist-empty"));
  if (replaceTimeline) points.clear();
  for (const p of summary.timeline) points.set(p.second, p);
  showTimeline(timeChart, [...points.keys()].sort((a, b) => a - b).map((k) => points.get(k)), summary.step || step,
    $("timeline-empty"));
  showAlerts(summary.alerts || []);
  showTiles($("tiles"), $("aggregate-note"), summary.per_student, $("tiles-empty"));
  board.dataset.students = String(summary.students);
  board.dataset.updates = String(++updates);
}

// The session ended (pushed, or found in the snapshot after a reconnection): say so and stop listening.
// Students can no longer join: the join code and QR code go, the "running" badge says so.
function showEnded(endedAt) {
  board.dataset.state = "ended";
  const banner = $("ended-banner");
  banner.hidden = false;
  banner.textContent = "The session has ended; the dashboard no longer updates. Reload to start a new one.";
  if (endedAt !== undefined) showWhen("Session ended", endedAt);
  for (const el of document.querySelectorAll(".join-box, #end-session-form, #session-since")) el.hidden = true;
  const state = $("session-state");
  state.textContent = "session ended";
  state.dataset.kind = "idle";
  $("kpi-faces").textContent = "–";
  $("tiles-empty").textContent = "No student joined this session.";
  $("timeline-empty").textContent = "Nothing was recorded in this session.";
  socket.disconnect();
}

// The login this dashboard was opened with ended (`logged_out`, or the server closed the socket or refused it):
// say so, take the students' names and the join code off the page, and do not reconnect.
const LOGGED_OUT = "You are logged out: this dashboard no longer updates. Log in again to see the class.";
function showLoggedOut(message = LOGGED_OUT) {
  if (board.dataset.state === "logged-out") return;
  board.dataset.state = "logged-out";
  const banner = $("ended-banner");
  banner.hidden = false;
  banner.textContent = message;
  for (const el of document.querySelectorAll(".join-box, #end-session-form")) el.hidden = true;
  showTiles($("tiles"), $("aggregate-note"), [], $("tiles-empty"));
  $("tiles-empty").textContent = "Log in again to see the students.";
  showAlerts([]);
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
      showEnded(); // it ended while we were away (render showed when)
    }
  });
});
socket.on("mood", (summary) => { if (board.dataset.state === "live") render(summary, false); });
socket.on("session_ended", () => showEnded(Date.now() / 1000));
socket.on("logged_out", () => showLoggedOut());
// Only a log-out makes the server close a dashboard's socket; the client would not reconnect after it anyway.
socket.on("disconnect", (reason) => { if (reason === "io server disconnect") showLoggedOut(); });
socket.on("connect_error", (err) => {
  if (!socket.active) { // refused by the server (not logged in, or that login ended): no retry will help
    showLoggedOut(`The dashboard cannot connect (${err.message}). Reload the page once logged in.`);
    return;
  }
  showAlerts([{ kind: "error", level: "error", message: `Cannot reach the server (${err.message}); retrying…` }]);
});
