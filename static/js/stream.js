// Camera -> Socket.IO -> overlay: the live stream shared by the live page and
// the classroom's student page. One frame in flight at a time: the next frame
// is captured when the answer to the previous one arrives (or after a timeout).
import { io } from "./socket.js";

export const EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];
// The palette is app.css's (--emo-<label>), so text, overlay and charts cannot drift apart. Module scripts run
// after the page's stylesheets have loaded; a colour still missing falls back to the accent.
const FALLBACK_COLOUR = "#4fc78a";
const rootStyle = getComputedStyle(document.documentElement);
export const COLOURS = Object.fromEntries(
  EMOTIONS.map((e) => [e, rootStyle.getPropertyValue(`--emo-${e}`).trim() || FALLBACK_COLOUR]),
);

const CAPTURE_WIDTH = 640;
const JPEG_QUALITY = 0.7;
const ANSWER_TIMEOUT_MS = 1500;
// Boxes no answer has confirmed for this long (frame errors, answers that stopped coming) are taken off.
const TRACK_EXPIRY_MS = 2 * ANSWER_TIMEOUT_MS;
const SNAP_AFTER_MS = 250;  // boxes jump to their place, rather than glide, after this long without a drawn frame
// Frames whose send time is kept, so that an answer coming after ANSWER_TIMEOUT_MS still counts in the round trip.
const SENT_KEPT = 8;
// A camera that shows no picture this long after it opened is given up (play() and loadedmetadata can wait forever).
const START_TIMEOUT_MS = 5000;
// canvas.toBlob gave no JPEG (the encoder failed, memory was short): capture again after this.
const ENCODE_RETRY_MS = 200;
const CAMERA_ENDED = "The camera stopped: it was unplugged, switched off or taken by another application. "
  + "Start it again to go on.";
const NO_PICTURE = "The camera gave no picture. Check that it is connected and not in use by another application, "
  + "then press Start again.";
const PAUSED = "Paused while this page is hidden.";
const BARS_WIDTH = 80;   // score bars beside each box, CSS pixels
const BAR_STEP = 14;
// Answers without a face for this long show the hint (els.hint): a glance away does not flash it.
const NO_FACE_HINT_MS = 1000;
// The live region (els.live) says a set of labels once it has held this long (a borderline face flips between
// two labels several times a second), and at most once in LIVE_GAP_MS.
const LIVE_STEADY_MS = 1500;
const LIVE_GAP_MS = 4000;

export function cameraErrorMessage(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Camera access was denied. Allow the camera for this site in your browser's settings, then press Start again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera was found. Connect a camera and press Start again.";
    case "NotReadableError":
    case "AbortError":
      return "The camera is in use by another application or could not be started.";
    default:
      return `The camera could not be started (${err && err.message ? err.message : err}).`;
  }
}

/** Play the camera's video: resolves "ok" once it plays and has a size, "ended" if the camera stops first,
 * "timeout" after START_TIMEOUT_MS. */
function playVideo(video, track) {
  return new Promise((resolve) => {
    let played = false;
    const done = (outcome) => {
      clearTimeout(timer);
      video.removeEventListener("loadedmetadata", check);
      if (track) track.removeEventListener("ended", ended);
      resolve(outcome);
    };
    const check = () => { if (played && video.videoWidth) done("ok"); };
    const ended = () => done("ended");
    const timer = setTimeout(() => done("timeout"), START_TIMEOUT_MS);
    video.addEventListener("loadedmetadata", check);
    if (track) track.addEventListener("ended", ended);
    if (track && track.readyState === "ended") { ended(); return; }
    video.play().catch(() => {}).then(() => { played = true; check(); });  // a refused play() is not fatal
  });
}

export class LiveStream {
  /**
   * @param {object} els  {video, overlay, placeholder, list, live, hint}  live: a live region that says the emotions
   *   in view once they hold (see _announce); hint (optional): shown while answer after answer finds no face, for
   *   NO_FACE_HINT_MS or more
   * @param {object} opts {onStats(stats), onStatus(text, kind), onFaces(msg), onSocket(socket), onStop(), auth, query,
   *   pauseWhenHidden}
   *   onSocket: called with every socket connect() opens, so a page's own handlers are on each one.
   *   onStop(cause): called when a running stream stops: cause "page" (stop() was called) or "camera" (it
   *   stopped by itself: the camera was unplugged, revoked or taken by another application).
   *   pauseWhenHidden: send no frames while the page is hidden (the server would analyse frames no one sees);
   *   back in view, start afresh (no boxes or figures from before).
   */
  constructor(els, opts = {}) {
    this.els = els;
    this.opts = opts;
    this.capture = document.createElement("canvas");
    this.ctx = els.overlay.getContext("2d");
    this.running = false;
    this.statusKind = null;
    this.seq = 0;
    this.inFlight = null;       // {seq} of the frame being encoded or awaiting its answer (its time: this.sent)
    this.sent = new Map();      // seq -> sentAt of the last SENT_KEPT frames sent, for the round trip of late answers
    this.tracks = new Map();    // id -> {box (drawn), target, size (of the answer's frame), label, scores, seenAt}
    this.frameSize = { w: CAPTURE_WIDTH, h: 480 };
    this.answerSize = null;     // the frame size of the last answer: boxes of another size are not glided from
    this.idle = { text: "Camera off.", kind: "info" };  // the status while stopped, back after a connection warning
    this.connectionWarning = false;  // the status says the server cannot be reached
    this.answers = [];          // timestamps of answers, for the frame rate
    this.rtts = [];
    this.serverMs = [];
    this.socket = null;
    this.timer = null;
    this._draw = this._draw.bind(this);
    this.drawnAt = -Infinity;   // when the overlay was last drawn (performance.now()): how far boxes glide
    this.listKey = "";
    this.liveWanted = "";       // what the live region is to say once it holds (see _announce)
    this.liveTimer = null;
    this.liveSaidAt = -Infinity;
    this.noFaceSince = null;    // when the answers began to find no face; null while one is found
    // A phone turned mid-stream changes the camera's shape: follow it.
    els.video.addEventListener("resize", () => { if (this.media) this._fitFrame(); });
    this.paused = false;        // the page is hidden and pauseWhenHidden is on
    if (opts.pauseWhenHidden) {
      this.paused = document.visibilityState === "hidden";
      document.addEventListener("visibilitychange", () => this._onVisibility());
    }
  }

  connect() {
    if (this.socket) return this.socket;
    const socket = io({ transports: ["websocket", "polling"], auth: this.opts.auth || {}, query: this.opts.query || {} });
    this.socket = socket;
    // A socket given up by release() no longer feeds this stream.
    const mine = (fn) => (...args) => { if (this.socket === socket) fn(...args); };
    socket.on("faces", mine((msg) => this._onAnswer(msg, null)));
    socket.on("frame_error", mine((msg) => this._onAnswer(null, msg)));
    socket.on("connect", mine(() => {
      if (this.running) this._runningStatus();
      else if (this.connectionWarning) this._status(this.idle.text, this.idle.kind);  // back to "Camera off." (say)
      this._sendNext();
    }));
    socket.on("disconnect", mine(() => {
      if (this.running) this._status("Connection lost, reconnecting…", "warn", true);
      this.inFlight = null;
      this._reset();
    }));
    socket.on("connect_error", mine((err) => {
      this._status(`Cannot reach the server (${err.message}); retrying…`, "warn", true);
      this._reset();
    }));
    if (this.opts.onSocket) this.opts.onSocket(socket);
    return socket;
  }

  /** Give up the socket without closing it (the caller closes it); the next connect() opens a fresh one. */
  release() {
    const socket = this.socket;
    this.socket = null;
    return socket;
  }

  async start() {
    if (this.running) return true;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this._status("This browser cannot open a camera here. Use a current browser on http://localhost or https.", "error");
      return false;
    }
    this._status("Asking for the camera…", "info");
    let media;
    try {
      media = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    } catch (err) {
      this._status(cameraErrorMessage(err), "error");
      return false;
    }
    this.media = media;
    const { video } = this.els;
    video.srcObject = media;
    const [track] = media.getVideoTracks();
    const outcome = await playVideo(video, track);
    if (this.media !== media) return false;  // stop() came meanwhile (a session ended, say)
    if (outcome !== "ok") {
      media.getTracks().forEach((t) => t.stop());
      this.media = null;
      video.srcObject = null;
      this._status(outcome === "ended" ? CAMERA_ENDED : NO_PICTURE, "error");
      return false;
    }
    // A camera unplugged, revoked or taken by another application ends its track.
    const ended = () => { if (this.media === media && this.running) this.stop(CAMERA_ENDED, "warn", "camera"); };
    if (track) track.addEventListener("ended", ended);
    this._fitFrame();
    if (this.els.placeholder) this.els.placeholder.hidden = true;
    this.running = true;
    this.connect();
    this._runningStatus();
    requestAnimationFrame(this._draw);
    this._sendNext();
    return true;
  }

  /** Say what a running stream is doing: paused, streaming or waiting for the server. */
  _runningStatus() {
    if (this.paused) this._status(PAUSED, "info");
    else if (this.socket && this.socket.connected) this._status("Streaming", "ok");
    else this._status("Connecting…", "info");
  }

  /** Hidden (with pauseWhenHidden): send nothing. Shown again: forget what was seen before, and send. */
  _onVisibility() {
    const hidden = document.visibilityState === "hidden";
    if (hidden === this.paused) return;
    this.paused = hidden;
    if (!this.running) return;
    if (!hidden) {
      this.inFlight = null;  // an answer that came while hidden was not taken
      this._reset();
    }
    this._runningStatus();
    this._sendNext();
  }

  /** Size the captured frame and the stage to the camera's current shape. */
  _fitFrame() {
    const { video } = this.els;
    if (!video.videoWidth || !video.videoHeight) return;
    const scale = Math.min(1, CAPTURE_WIDTH / video.videoWidth);
    const size = { w: Math.round(video.videoWidth * scale), h: Math.round(video.videoHeight * scale) };
    if (size.w !== this.frameSize.w || size.h !== this.frameSize.h) {
      // Boxes found in the old shape do not glide into the new one.
      this.tracks.clear();
      this._renderList();
    }
    this.frameSize = size;
    this.capture.width = this.frameSize.w;
    this.capture.height = this.frameSize.h;
    // The stage takes the camera's shape, so a 16:9 camera is not squeezed into 4:3; a page's CSS may
    // read the shape (--stage-ratio) to fit the stage's height to the window.
    video.parentElement.style.aspectRatio = `${video.videoWidth} / ${video.videoHeight}`;
    video.parentElement.style.setProperty("--stage-ratio", String(video.videoWidth / video.videoHeight));
  }

  /** Forget the answers so far: no stale boxes, faces or statistics ("–" again). */
  _reset() {
    this.answers = [];
    this.rtts = [];
    this.serverMs = [];
    this.sent.clear();
    this.tracks.clear();
    this.noFaceSince = null;
    this._renderList();
    this._report();
  }

  stop(message = "Camera off.", kind = "info", cause = "page") {
    const wasRunning = this.running;
    this.running = false;
    clearTimeout(this.timer);
    if (this.media) this.media.getTracks().forEach((t) => t.stop());
    this.media = null;
    this.els.video.srcObject = null;
    this.inFlight = null;
    this._reset();
    this.ctx.setTransform(1, 0, 0, 1, 0, 0);
    this.ctx.clearRect(0, 0, this.els.overlay.width, this.els.overlay.height);
    if (this.els.placeholder) this.els.placeholder.hidden = false;
    this._status(message, kind);
    if (wasRunning && this.opts.onStop) this.opts.onStop(cause);
  }

  disconnect() {
    if (this.socket) this.socket.disconnect();
    this.socket = null;
  }

  /** Show a status; ``connection``: it says the server cannot be reached (a reconnection takes it back). */
  _status(text, kind, connection = false) {
    this.statusKind = kind;
    this.connectionWarning = connection;
    if (!connection && !this.running) this.idle = { text, kind };
    if (this.opts.onStatus) this.opts.onStatus(text, kind);
  }

  _sendNext() {
    if (!this.running || this.paused || !this.socket || !this.socket.connected || this.inFlight) return;
    const { video } = this.els;
    if (video.readyState < 2) { this.timer = setTimeout(() => this._sendNext(), 50); return; }
    const c = this.capture.getContext("2d");
    c.drawImage(video, 0, 0, this.capture.width, this.capture.height);
    const seq = ++this.seq;
    const sentAt = performance.now();  // the round trip counts from the capture
    this.inFlight = { seq };
    this.capture.toBlob(async (blob) => {
      if (!blob) {  // no JPEG this time: try again shortly rather than stop streaming
        this.inFlight = null;
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this._sendNext(), ENCODE_RETRY_MS);
        return;
      }
      if (!this.running || !this.socket) { this.inFlight = null; return; }
      const image = await blob.arrayBuffer();
      // stop() or disconnect() may have come while the bytes were read (a session ended, say).
      if (!this.running || !this.socket) { this.inFlight = null; return; }
      this.sent.set(seq, sentAt);
      if (this.sent.size > SENT_KEPT) this.sent.delete(this.sent.keys().next().value);  // the oldest
      this.socket.emit("frame", { seq, image });
      clearTimeout(this.timer);
      this.timer = setTimeout(() => {          // the answer never came: move on
        if (this.inFlight && this.inFlight.seq === seq) { this.inFlight = null; this._sendNext(); }
      }, ANSWER_TIMEOUT_MS);
    }, "image/jpeg", JPEG_QUALITY);
  }

  _onAnswer(msg, error) {
    // An answer that arrives after stop() must not bring the faces back, nor one that arrives while paused.
    if (!this.running || this.paused) return;
    const now = performance.now();
    const seq = (msg || error).seq;
    // Late answers (after ANSWER_TIMEOUT_MS) count too: a slow server's round trip is not under-reported.
    const sentAt = this.sent.get(seq);
    if (sentAt !== undefined) {
      this.sent.delete(seq);
      this.rtts.push(now - sentAt);
      if (this.rtts.length > 30) this.rtts.shift();
    }
    if (this.inFlight && this.inFlight.seq === seq) this.inFlight = null;
    if (error) {
      this._status(`Frame not analysed: ${error.error}`, "warn");
    } else {
      if (this.statusKind !== "ok") this._status("Streaming", "ok");  // clear an earlier warning
      this.answers.push(now);
      while (this.answers.length && now - this.answers[0] > 2000) this.answers.shift();
      if (msg.timings_ms) { this.serverMs.push(msg.timings_ms.total); if (this.serverMs.length > 30) this.serverMs.shift(); }
      this._updateTracks(msg, now);
      if (this.opts.onFaces) this.opts.onFaces(msg);
      this._report();
    }
    this._sendNext();
  }

  _updateTracks(msg, now) {
    // Each answer's boxes are in the pixels of the frame it analysed (its width and height; an older server
    // sends none: the frame size now). A new size (a phone turned) starts the boxes afresh.
    const size = msg.width && msg.height ? { w: msg.width, h: msg.height } : { ...this.frameSize };
    if (this.answerSize && (size.w !== this.answerSize.w || size.h !== this.answerSize.h)) this.tracks.clear();
    this.answerSize = size;
    const seen = new Set();
    for (const f of msg.faces) {
      const key = f.id ?? `${f.box}`;
      seen.add(key);
      const t = this.tracks.get(key);
      if (t) Object.assign(t, { target: f.box, size, label: f.label, scores: f.scores, seenAt: now });
      else this.tracks.set(key, { box: f.box.slice(), target: f.box, size, label: f.label, scores: f.scores, seenAt: now });
    }
    for (const key of [...this.tracks.keys()]) if (!seen.has(key)) this.tracks.delete(key);
    if (this.tracks.size) this.noFaceSince = null;
    else if (this.noFaceSince === null) this.noFaceSince = now;
    this._renderList(now);
  }

  _renderList(now = performance.now()) {
    const { list, overlay, hint } = this.els;
    // Faces too small, turned away or in the dark are not found: say so, once it lasts.
    if (hint) hint.hidden = !(this.running && this.noFaceSince !== null && now - this.noFaceSince >= NO_FACE_HINT_MS);
    overlay.dataset.faces = String(this.tracks.size);
    overlay.dataset.labels = [...this.tracks.values()].map((t) => t.label).join(",");
    const labels = [...this.tracks.values()].map((t, i) => `Face ${i + 1}: ${t.label}`).join(", ");
    // "No face in view" only when answers say so: not while disconnected, paused or between frame errors.
    this._announce(labels || (this.running && this.noFaceSince !== null ? "No face in view" : ""));
    if (!list) return;
    const faces = [...this.tracks.values()].map((t, i) =>
      ({ label: t.label, text: `Face ${i + 1}: ${t.label} ${Math.round((t.scores[t.label] || 0) * 100)}%` }));
    const key = faces.map((f) => f.text).join("\n");
    if (key === this.listKey) return;
    this.listKey = key;
    list.replaceChildren(...faces.map((f) => {
      const li = document.createElement("li");
      li.className = `face-item emo-${f.label}`;
      li.dataset.label = f.label;
      li.textContent = f.text;
      return li;
    }));
  }

  /** Say ``text`` in the live region once it has held LIVE_STEADY_MS, and LIVE_GAP_MS after the last thing said
   * (each change of a live region is read out); "" (stopped) empties it at once. */
  _announce(text) {
    const { live } = this.els;
    if (!live || text === this.liveWanted) return;
    this.liveWanted = text;
    clearTimeout(this.liveTimer);
    if (text === live.textContent) return;  // back to what it says: nothing new to say
    if (!text) { live.textContent = ""; return; }
    this.liveTimer = setTimeout(() => { live.textContent = text; this.liveSaidAt = performance.now(); },
      Math.max(LIVE_STEADY_MS, this.liveSaidAt + LIVE_GAP_MS - performance.now()));
  }

  stats() {
    const median = (xs) => { if (!xs.length) return null; const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
    const span = this.answers.length > 1 ? (this.answers[this.answers.length - 1] - this.answers[0]) / 1000 : 0;
    return {
      fps: span > 0 ? (this.answers.length - 1) / span : 0,
      rtt: median(this.rtts),
      server: median(this.serverMs),
    };
  }

  _report() { if (this.opts.onStats) this.opts.onStats(this.stats()); }

  /** Take off boxes no answer has confirmed for TRACK_EXPIRY_MS, with the figures of that time. */
  _expire(now) {
    let expired = false;
    for (const [key, t] of this.tracks) {
      if (now - t.seenAt > TRACK_EXPIRY_MS) { this.tracks.delete(key); expired = true; }
    }
    if (!expired) return;
    while (this.answers.length && now - this.answers[0] > 2000) this.answers.shift();  // no frame rate from then
    this._renderList(now);
    this._report();
  }

  _draw() {
    if (!this.running) return;
    const now = performance.now();
    this._expire(now);
    // A box moves 35 % of the way to its newest position per 60 Hz frame, whatever the display's rate; after a
    // long gap between frames (a hidden tab, where the browser draws nothing) it jumps there.
    const gap = now - this.drawnAt;
    this.drawnAt = now;
    const step = gap > SNAP_AFTER_MS ? 1 : 1 - Math.pow(0.65, gap / (1000 / 60));
    const { overlay, video } = this.els;
    // Draw in CSS pixels on a backing store of device pixels: sharp text on any screen.
    const dpr = window.devicePixelRatio || 1;
    const w = video.clientWidth, h = video.clientHeight;
    const pw = Math.round(w * dpr), ph = Math.round(h * dpr);
    if (overlay.width !== pw || overlay.height !== ph) { overlay.width = pw; overlay.height = ph; }
    const ctx = this.ctx;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    for (const t of this.tracks.values()) {
      const sx = w / t.size.w, sy = h / t.size.h;
      // Glide towards the newest box so the overlay moves smoothly between answers.
      for (let i = 0; i < 4; i++) t.box[i] += (t.target[i] - t.box[i]) * step;
      const [bx, by, bw, bh] = t.box;
      // The video is mirrored on screen, so mirror the box (not the text).
      const x = w - (bx + bw) * sx, y = by * sy, bwS = bw * sx, bhS = bh * sy;
      const colour = COLOURS[t.label] || FALLBACK_COLOUR;
      ctx.lineWidth = 3;
      ctx.strokeStyle = colour;
      ctx.strokeRect(x, y, bwS, bhS);
      const pct = Math.round((t.scores[t.label] || 0) * 100);
      const label = `${t.label} ${pct}%`;
      ctx.font = "600 16px system-ui, sans-serif";
      const tw = ctx.measureText(label).width + 10;
      const lx = Math.max(0, Math.min(x, w - tw));  // the tag stays inside the stage
      ctx.fillStyle = colour;
      ctx.fillRect(lx, Math.max(0, y - 24), tw, 22);
      ctx.fillStyle = "#111";
      ctx.fillText(label, lx + 5, Math.max(16, y - 7));
      // Score bars beside the box: on its right, or its left near the edge; kept inside the stage.
      const barsX = x + bwS + 6 + BARS_WIDTH > w ? Math.max(0, x - BARS_WIDTH - 6) : x + bwS + 6;
      this._drawBars(ctx, t.scores, barsX, Math.max(0, Math.min(y, h - EMOTIONS.length * BAR_STEP)));
    }
    requestAnimationFrame(this._draw);
  }

  _drawBars(ctx, scores, x, y) {
    ctx.save();
    ctx.font = "11px system-ui, sans-serif";
    EMOTIONS.forEach((e, i) => {
      const v = scores[e] || 0;
      const yy = y + i * BAR_STEP;
      ctx.fillStyle = "rgba(0,0,0,0.55)";
      ctx.fillRect(x, yy, BARS_WIDTH, BAR_STEP - 2);
      ctx.fillStyle = COLOURS[e];
      ctx.fillRect(x, yy, BARS_WIDTH * v, BAR_STEP - 2);
      // A dark outline keeps the white name legible on a bright (e.g. yellow) bar.
      ctx.lineWidth = 3;
      ctx.strokeStyle = "rgba(0,0,0,0.75)";
      ctx.lineJoin = "round";
      ctx.strokeText(e, x + 3, yy + 10);
      ctx.fillStyle = "#fff";
      ctx.fillText(e, x + 3, yy + 10);
    });
    ctx.restore();
  }
}
