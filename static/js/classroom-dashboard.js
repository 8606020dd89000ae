// The teacher's live class dashboard: joins the class's room on /classroom and
// redraws on every pushed `mood` summary; stops when the session ends, and when
// the teacher's login ends (log-out, from this tab or another): then it says so
// and takes the students' names off the page.
//
// It shows one session, the one the page was loaded with (#board's data-session; none: empty), and never
// draws another's figures: a session started meanwhile is only announced, with a link to reload. Figures
// that may be out of date are marked stale (the connection is lost, the join is not answered, or no summary
// came for about three push intervals) until fresh ones arrive.
import { io } from "./socket.js";
import {
  clock, distributionChart, hasMood, pct, showDistribution, showLocalTimes, showTiles, showTimeline, timelineChart,
} from "./classroom-charts.js";

const $ = (id) => document.getElementById(id);
const board = $("board");
const code = board.dataset.code;
const shown = board.dataset.session || ""; // the id of the session this page shows; "" for none
const step = Number(board.dataset.step) || 0;
const pushMs = (Number(board.dataset.push) || 1.5) * 1000;
// No summary for about three push intervals: stale. Never under 3 s, so that a busy server's late tick is not.
const STALE_MS = Math.max(3 * pushMs, 3000);
const JOIN_TIMEOUT_MS = 5000; // an unanswered dashboard_join is sent again after a pause
const RETRY_MAX_MS = 30000; // the longest pause between two joins (1 s, 2 s, 4 s ... doubling up to this)
const distChart = distributionChart($("dist-chart"));
const timeChart = timelineChart($("timeline-chart"));
const points = new Map(); // bucket start (Unix s) -> point; pushes carry the latest few
const alertItems = new Map(); // alert id -> its <li>
let updates = 0;
let figuresAt = null; // Unix s of the live figures shown (the summary's time), null before the first
let lastFresh = performance.now(); // when the live figures were last known to be current
let tiles; // the per-student tiles last drawn (undefined: aggregate-only)
let connection = 0; // counts the socket's connections: an answer to an earlier one's join is ignored
let joinedNow = false; // this connection's join was answered
let attempts = 0; // joins that failed in a row on this connection
let retryTimer = null;

showLocalTimes();

const idOf = (session) => (session ? String(session.id) : "");

// #alerts is a live region: an alert is added, changed or removed alone, so that only that one is read out.
function showAlerts(alerts) {
  const list = $("alerts");
  const ids = new Set(alerts.map((a) => String(a.id ?? `${a.kind}:${a.message}`)));
  for (const [id, li] of alertItems) {
    if (!ids.has(id)) {
      li.remove();
      alertItems.delete(id);
    }
  }
  alerts.forEach((a, i) => {
    const id = String(a.id ?? `${a.kind}:${a.message}`);
    let li = alertItems.get(id);
    if (!li) {
      li = document.createElement("li");
      li.className = "alert";
      alertItems.set(id, li);
    }
    li.dataset.id = id;
    if (li.dataset.kind !== a.kind) li.dataset.kind = a.kind;
    if (li.dataset.level !== a.level) li.dataset.level = a.level;
    if (li.textContent !== a.message) li.textContent = a.message;
    const at = list.children[i];
    if (at !== li) list.insertBefore(li, at || null); // a new one, or one whose place changed
  });
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

// The connection's state in words (in the page's live region); null hides it.
function showLink(message) {
  const el = $("link-status");
  if (!message) {
    if (!el.hidden) {
      el.hidden = true;
      el.textContent = "";
    }
    return;
  }
  if (el.textContent !== message) el.textContent = message; // the same words are not read out again
  el.hidden = false;
}

// The live figures may be out of date: say why and from when they are, and mark them (the board's "stale"
// class, a dashed outline, "Figures from" on the time they were computed). Only while the session runs.
function markStale(why) {
  if (board.dataset.state !== "live") return;
  board.classList.add("stale");
  board.dataset.stale = "true";
  board.style.outline = "2px dashed var(--warn)"; // app.css has no rule for it; the CSSOM is allowed by the CSP
  board.style.outlineOffset = "6px";
  if (figuresAt != null) $("kpi-when-label").textContent = "Figures from";
  showLink(figuresAt == null ? why : `${why} The figures below are from ${clock(figuresAt)}.`);
}

function markFresh() {
  board.classList.remove("stale");
  delete board.dataset.stale;
  board.style.outline = "";
  board.style.outlineOffset = "";
  showLink(null);
  lastFresh = performance.now();
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
  if (live) {
    figuresAt = summary.ts ?? Date.now() / 1000;
    showWhen("Updated", figuresAt);
  } else showWhen("Session ended", session && session.ended ? Date.parse(session.ended) / 1000 : null);
  $("dist-empty").textContent = !session ? "No session yet." : !live ? "Nothing was recorded in this session."
    : nobody ? "No student is sharing a camera right now." : "No face in view right now.";
  showDistribution(distChart, $("dist-list"), mood ? summary.distribution : null, $("dist-empty"));
  if (replaceTimeline) points.clear();
  for (const p of summary.timeline) points.set(p.second, p);
  showTimeline(timeChart, [...points.keys()].sort((a, b) => a - b).map((k) => points.get(k)), summary.step || step,
    $("timeline-empty"));
  showAlerts(summary.alerts || []);
  tiles = summary.per_student;
  showTiles($("tiles"), $("aggregate-note"), tiles, $("tiles-empty"));
  board.dataset.students = String(summary.students);
  board.dataset.updates = String(++updates);
}

// Students can no longer join: the join code and QR code go, the "running" badge says so.
function showSessionOver() {
  for (const el of document.querySelectorAll(".join-box, #end-session-form, #session-since")) el.hidden = true;
  const state = $("session-state");
  state.textContent = "session ended";
  state.dataset.kind = "idle";
  $("dist-chart").closest(".panel").querySelector("h2").textContent = "Class mood over the session";
  $("dist-chart").setAttribute("aria-label", "Class mood distribution of the session");
  $("tiles-empty").textContent = "No student joined this session.";
  $("timeline-empty").textContent = "Nothing was recorded in this session.";
}

// The session is over: nothing is "now" any more. The figures of the moment go (``why`` says so where the
// distribution was), the tiles keep the names but not their live status (no tiles at all without ``names``),
// the alerts (about the moment) go; the timeline stays.
function blankNow(why = "The session has ended.", names = true) {
  for (const id of ["kpi-students", "kpi-faces", "kpi-engagement", "kpi-negative"]) $(id).textContent = "–";
  $("dist-empty").textContent = why;
  showDistribution(distChart, $("dist-list"), null, $("dist-empty"));
  if (!names) tiles = [];
  showTiles($("tiles"), $("aggregate-note"), tiles && tiles.map((s) => ({ id: s.id, name: s.name })), $("tiles-empty"));
  for (const seen of document.querySelectorAll("#tiles .tile .muted")) seen.textContent = "session ended";
  showAlerts([]);
}

function stopListening() {
  clearTimeout(retryTimer);
  markFresh();
  socket.disconnect();
}

function endedBanner(state) {
  board.dataset.state = state;
  const banner = $("ended-banner");
  banner.hidden = false;
  banner.textContent = "The session has ended; the dashboard no longer updates. Reload to start a new one.";
}

// The session ended (found in the snapshot after a reconnection: render() drew it): say so and stop listening.
function showEnded() {
  endedBanner("ended");
  showSessionOver();
  $("kpi-faces").textContent = "–";
  stopListening();
}

// The session was ended (pushed): blank the figures of the moment at once, then draw the whole session's, as a
// reload shows them, with the server's end time (the push does not carry it; until then, this browser's clock).
function endedHere() {
  endedBanner("ending");
  markFresh();
  clearTimeout(retryTimer);
  showSessionOver();
  blankNow();
  showWhen("Session ended", Date.now() / 1000);
  socket.timeout(JOIN_TIMEOUT_MS).emit("dashboard_join", { code }, (err, answer) => {
    const summary = !err && answer && answer.summary;
    if (board.dataset.state !== "ending") return;
    if (summary && idOf(summary.session) === shown && !summary.session.running) render(summary, true);
    board.dataset.state = "ended";
    stopListening();
  });
}

// Banner text with a link at its end.
function bannerWithLink(banner, text, linkText, href) {
  const link = document.createElement("a");
  link.href = href;
  link.textContent = linkText;
  banner.replaceChildren(text, link, ".");
  banner.hidden = false;
}

// The class was deleted (from another tab): its sessions, students and samples are gone, so are they here.
function showDeleted() {
  board.dataset.state = "deleted";
  bannerWithLink($("ended-banner"), "This class was deleted, with all its sessions and the students' data. ",
    "Back to your classes", board.dataset.classes || "/classes");
  const start = $("start-session");
  for (const el of [...document.querySelectorAll(".join-box, #end-session-form, #session-since, #present, "
    + "#history, #export, .settings-panel, .danger-zone"), start && start.closest("form")]) if (el) el.hidden = true;
  const state = $("session-state");
  state.textContent = "class deleted";
  state.dataset.kind = "idle";
  blankNow("The class was deleted.", false);
  showWhen("Session ended", null);
  points.clear();
  $("timeline-empty").textContent = "The class was deleted.";
  showTimeline(timeChart, [], step, $("timeline-empty"));
  $("tiles-empty").textContent = "The class was deleted.";
  stopListening();
}

// The server has another session than the one shown (started while this page was away, or with no session
// shown): say so with a link to reload, and draw none of it. The session shown, if it was running, has ended.
function showOtherSession(session) {
  const wasLive = board.dataset.state === "live";
  if (wasLive) {
    showSessionOver();
    blankNow();
    showWhen("Session ended", null);
  }
  board.dataset.state = "other-session";
  const ended = wasLive ? "This session has ended. " : "";
  const text = session && session.running ? "A new session is running — " : "A newer session was held — ";
  bannerWithLink($("ended-banner"), ended + text, "reload to see it", window.location.pathname);
  stopListening();
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
  stopListening();
}

// States in which the page still follows the server (the others are final until a reload).
const following = () => ["live", "ended", "error"].includes(board.dataset.state);

// Join the class's room and take a full snapshot; an answer that does not come, or a database that failed,
// is asked again after a pause that doubles each time (1 s up to 30 s), and the page says so meanwhile.
function join() {
  clearTimeout(retryTimer);
  const mine = connection;
  socket.timeout(JOIN_TIMEOUT_MS).emit("dashboard_join", { code }, (err, answer) => {
    if (mine !== connection || !socket.connected || !following()) return; // another connection's, or over
    if (err || !answer || answer.retry) {
      const why = err || !answer ? "no answer from the server" : answer.error;
      const wait = Math.min(1000 * 2 ** attempts, RETRY_MAX_MS);
      attempts += 1;
      const message = `Cannot load the class's figures (${why}); trying again in ${Math.round(wait / 1000)} s…`;
      if (board.dataset.state === "live") markStale(message);
      else showLink(message);
      retryTimer = setTimeout(join, wait);
      return;
    }
    attempts = 0;
    if (answer.gone) {
      showDeleted(); // no class has this page's code any more
      return;
    }
    if (answer.error) {
      showLink(null);
      board.dataset.state = "error";
      const message = `Dashboard unavailable: ${answer.error}`;
      showAlerts([{ id: "dashboard", kind: "error", level: "error", message }]);
      return;
    }
    const session = answer.summary.session;
    if (idOf(session) !== shown) {
      showOtherSession(session);
      return;
    }
    joinedNow = true;
    render(answer.summary, true);
    markFresh();
    if (session && session.running) {
      board.dataset.state = "live";
      $("ended-banner").hidden = true;
    } else if (board.dataset.state !== "ended") {
      showEnded(); // it ended while we were away (render showed when)
    }
  });
}

const socket = io("/classroom", { transports: ["websocket", "polling"] });
socket.on("connect", () => {
  // Rooms do not survive a reconnection: join again and take a full snapshot.
  connection += 1;
  joinedNow = false;
  attempts = 0;
  const lost = alertItems.get("connection"); // "Cannot reach the server": it can now
  if (lost) {
    lost.remove();
    alertItems.delete("connection");
  }
  join();
});
socket.on("mood", (summary) => {
  if (idOf(summary.session) !== shown) {
    // Another session's figures: announced (a session started while a finished one is shown), never drawn.
    if (summary.session && summary.session.running && following()) showOtherSession(summary.session);
    return;
  }
  if (board.dataset.state !== "live") return;
  render(summary, false);
  markFresh();
});
socket.on("session_ended", (msg) => {
  if (msg && msg.reason === "deleted") {
    showDeleted();
    return;
  }
  const ended = msg && msg.session != null ? String(msg.session) : shown;
  if (ended === shown && board.dataset.state === "live") endedHere();
});
socket.on("logged_out", () => showLoggedOut());
socket.on("disconnect", (reason) => {
  joinedNow = false;
  clearTimeout(retryTimer);
  // Only a log-out makes the server close a dashboard's socket; the client would not reconnect after it anyway.
  if (reason === "io server disconnect") showLoggedOut();
  else if (reason !== "io client disconnect") markStale("Connection to the server lost: reconnecting…");
});
socket.on("connect_error", (err) => {
  if (!socket.active) { // refused by the server (not logged in, or that login ended): no retry will help
    showLoggedOut(`The dashboard cannot connect (${err.message}). Reload the page once logged in.`);
    return;
  }
  // The first connection failed (a reconnection has said so already: its words are not read out again).
  if (!board.classList.contains("stale")) markStale(`Cannot reach the server (${err.message}): reconnecting…`);
  const message = `Cannot reach the server (${err.message}); retrying…`;
  showAlerts([{ id: "connection", kind: "error", level: "error", message }]);
});
// Connected and joined, but no summary for about three push intervals: the server or the link is stuck.
setInterval(() => {
  if (board.dataset.state === "live" && joinedNow && socket.connected && performance.now() - lastFresh > STALE_MS) {
    markStale("No update from the server for a few seconds.");
  }
}, 500);
