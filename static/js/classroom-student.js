// The student's page: their own live result (as on the live page) while their
// stream feeds the class. The server knows which class from the session cookie
// set when the student consented; the page only says "I am the student page".
import { COLOURS, LiveStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const root = $("student");
const className = root.dataset.class;
const statusEl = $("status");
const startBtn = $("start");
const stopBtn = $("stop");
let over = false; // the session ended or the server refused us: no restart from here

function status(text, kind) { statusEl.textContent = text; statusEl.dataset.kind = kind; }

function sharing(on) {
  const el = $("sharing");
  el.dataset.state = on ? "on" : "off";
  $("sharing-text").textContent = on ? `Sharing with ${className}` : "Not sharing";
  startBtn.hidden = on || over;
  stopBtn.hidden = !on;
}

const stream = new LiveStream(
  { video: $("video"), overlay: $("overlay"), placeholder: $("placeholder"), list: $("faces-list") },
  {
    auth: { classroom: "student" },
    onStatus: status,
    onStats({ fps }) { $("fps").textContent = fps ? fps.toFixed(1) : "–"; },
    onFaces(msg) {
      const face = msg.faces.reduce((best, f) => (!best || f.box[2] * f.box[3] > best.box[2] * best.box[3] ? f : best), null);
      const el = $("my-emotion");
      el.textContent = face ? face.label : "no face";
      el.dataset.label = face ? face.label : "";
      el.style.color = face ? COLOURS[face.label] : ""; // CSSOM, allowed by the CSP (no inline style attribute)
    },
  },
);

function finish(message) {
  over = true;
  stream.stop(message);
  stream.disconnect();
  sharing(false);
  status(message, "info");
}

function connect() {
  const socket = stream.connect();
  if (socket.classroomHooks) return socket;
  socket.classroomHooks = true;
  socket.on("classroom_ended", () => finish("Your teacher ended the session. Nothing more is being sent."));
  socket.on("connect_error", (err) => {
    if (!socket.active) finish(`Cannot join: ${err.message}`); // refused by the server, not a network hiccup
  });
  return socket;
}

async function start() {
  startBtn.disabled = true;
  const socket = connect();
  if (!socket.connected) {
    // Learn first whether the server takes us (session still running), then open the camera.
    await new Promise((resolve) => { socket.once("connect", resolve); socket.once("connect_error", resolve); });
  }
  const ok = !over && (await stream.start());
  startBtn.disabled = false;
  if (over) { stream.stop(statusEl.textContent); stream.disconnect(); return; }
  sharing(Boolean(ok));
}

startBtn.addEventListener("click", start);
stopBtn.addEventListener("click", () => {
  const socket = stream.socket;
  if (socket && socket.connected) socket.emit("classroom_leave");
  stream.stop("You stopped sharing. Nothing is being sent.");
  // Give the leave message a moment to go out before closing the connection.
  setTimeout(() => { if (!stream.running) stream.disconnect(); }, 300);
  sharing(false);
});

sharing(false);
if (new URLSearchParams(location.search).has("start")) start();
