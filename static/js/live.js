// The live page: start/stop the camera stream and show its statistics.
import { LiveStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const statusEl = $("status");
const toggle = $("toggle");

const stream = new LiveStream(
  { video: $("video"), overlay: $("overlay"), placeholder: $("placeholder"), list: $("faces-list"), live: $("faces-live"),
    hint: $("no-face-hint") },
  {
    pauseWhenHidden: true, // a hidden tab sends nothing: the server would analyse frames no one sees
    onStatus(text, kind) { statusEl.textContent = text; statusEl.dataset.kind = kind; },
    // Stopped by the button or by itself (the camera was unplugged): the button says what a press does.
    onStop() { toggle.textContent = "Start camera"; },
    onStats({ fps, rtt, server }) {
      $("fps").textContent = fps ? fps.toFixed(1) : "–";
      $("rtt").textContent = rtt != null ? Math.round(rtt) : "–";
      $("server-ms").textContent = server != null ? server.toFixed(1) : "–";
    },
  },
);

toggle.addEventListener("click", async () => {
  if (stream.running) {
    stream.stop();
    return;
  }
  const hadFocus = document.activeElement === toggle;
  toggle.disabled = true;
  const ok = await stream.start();
  toggle.disabled = false;
  if (ok) toggle.textContent = "Stop camera"; // the label says what a press does: no aria-pressed besides
  // Disabling the button took the keyboard focus away from it: give it back.
  if (hadFocus && (!document.activeElement || document.activeElement === document.body)) toggle.focus();
});

if (new URLSearchParams(location.search).has("autostart")) toggle.click();
