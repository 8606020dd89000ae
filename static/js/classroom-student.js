// The student's page: their own live result (as on the live page) while their
// stream feeds the class. The server knows which class from the session cookie
// set when the student consented; the page only says "I am the student page".
import { LiveStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const root = $("student");
const className = root.dataset.class;
const statusEl = $("status");
const startBtn = $("start");
const stopBtn = $("stop");
const whoSees = $("who-sees");
let over = false; // the session ended or the server refused us: no restart from here

function status(text, kind) { statusEl.textContent = text; statusEl.dataset.kind = kind; }

// What the teacher sees of this student: set by the page, then by the server when the teacher changes it.
function aggregateOnly(on) {
  if (!on || whoSees.dataset.aggregateOnly === "true") return; // a session never switches back
  whoSees.dataset.aggregateOnly = "true";
  whoSees.textContent = "Your teacher switched this class to aggregate-only: they now see the class's combined mood only, not your name or your emotion.";
}

// No stale result once nothing is analysed; the video area says why it is dark.
function clearResult(placeholder) {
  const el = $("my-emotion");
  el.textContent = "–";
  el.dataset.label = "";
  el.className = "emo";
  $("placeholder").textContent = placeholder;
}

function sharing(on) {
  const el = $("sharing");
  el.dataset.state = on ? "on" : "off";
  $("sharing-text").textContent = on ? `Sharing with ${className}` : "Not sharing";
  startBtn.hidden = on || over;
  stopBtn.hidden = !on;
}

const stream = new LiveStream(
  {
    video: $("video"), overlay: $("overlay"), placeholder: $("placeholder"), list: $("faces-list"), live: $("faces-live"),
    hint: $("no-face-hint"),
  },
  {
    auth: { classroom: "student" },
    onStatus: status,
    // Every socket the stream opens hears the end of the session and a refusal.
    onSocket(socket) {
      socket.on("classroom_ended", (msg) => finish(msg && msg.reason === "left"
        ? "You left this class on another page. Nothing more is being sent."
        : "Your teacher ended the session. Nothing more is being sent."));
      socket.on("classroom_settings", (msg) => aggregateOnly(msg && msg.aggregate_only));
      socket.on("connect", () => socket.emit("classroom_settings", (msg) => aggregateOnly(msg && msg.aggregate_only)));
      socket.on("connect_error", (err) => {
        if (!socket.active) finish(`Cannot join: ${err.message}`); // refused by the server, not a network hiccup
      });
    },
    // The camera stopped by itself (unplugged, revoked, taken by another application): sharing has stopped,
    // as with the Stop button (the teacher sees "stopped sharing", not a lost connection); Start resumes it.
    onStop(cause) {
      if (cause !== "camera") return;
      const hadFocus = document.activeElement === stopBtn;
      leave();
      sharing(false);
      clearResult("Camera stopped");
      focusIf(hadFocus, startBtn);
    },
    onStats({ fps }) { $("fps").textContent = fps ? fps.toFixed(1) : "–"; },
    onFaces(msg) {
      const face = msg.faces.reduce((best, f) => (!best || f.box[2] * f.box[3] > best.box[2] * best.box[3] ? f : best), null);
      const el = $("my-emotion");
      el.textContent = face ? face.label : "no face";
      el.dataset.label = face ? face.label : "";
      el.className = face ? `emo emo-${face.label}` : "emo";
    },
  },
);

function finish(message) {
  const hadFocus = document.activeElement === startBtn || document.activeElement === stopBtn;
  over = true;
  stream.stop(message);
  stream.disconnect();
  sharing(false);
  clearResult("Camera off");
  status(message, "info");
  focusIf(hadFocus, statusEl); // both buttons are hidden now: the keyboard goes to the reason
}

// Tell the server we left on purpose (not a lost connection), then close that socket and call
// done(); the stream lets go of it at once, so a Start right after opens a fresh one.
function leave(done = () => {}) {
  const socket = stream.release();
  if (!socket || !socket.connected) { if (socket) socket.disconnect(); done(); return; }
  let closed = false;
  const close = () => { if (closed) return; closed = true; socket.disconnect(); done(); };
  socket.emit("classroom_leave", close);
  setTimeout(close, 1000); // no answer: close anyway
}

// Focus follows the button the user pressed when it is disabled or hidden under them.
function focusIf(hadFocus, el) {
  const now = document.activeElement;
  if (hadFocus && !el.hidden && (!now || now === document.body || now === startBtn || now === stopBtn)) el.focus();
}

async function start() {
  if (startBtn.disabled) return;
  const hadFocus = document.activeElement === startBtn;
  startBtn.disabled = true;
  const socket = stream.connect();
  if (!socket.connected) {
    // Learn first whether the server takes us (session still running), then open the camera.
    await new Promise((resolve) => { socket.once("connect", resolve); socket.once("connect_error", resolve); });
  }
  const ok = !over && (await stream.start());
  startBtn.disabled = false;
  if (over) { stream.stop(statusEl.textContent); stream.disconnect(); focusIf(hadFocus, statusEl); return; }
  if (!ok) leave(); // no camera: do not count as connected
  sharing(Boolean(ok));
  focusIf(hadFocus, ok ? stopBtn : startBtn);
}

startBtn.addEventListener("click", start);
stopBtn.addEventListener("click", () => {
  const hadFocus = document.activeElement === stopBtn;
  stream.stop("You stopped sharing. Nothing is being sent.");
  leave();
  sharing(false);
  clearResult("Sharing stopped");
  focusIf(hadFocus, startBtn);
});

// Leaving the class: stop the camera and say so on the socket before the form forgets who we were,
// so the teacher sees "left", not a lost connection. (Without this script the server does the same.)
const forgetForm = $("forget-form");
let leaving = false;
forgetForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (leaving) return; // a second click while the first is on its way
  leaving = true;
  over = true;
  startBtn.disabled = true;
  stream.stop("Leaving the class…");
  sharing(false);
  clearResult("Camera off");
  leave(() => forgetForm.submit());
});

sharing(false);
if (new URLSearchParams(location.search).has("start")) start();
