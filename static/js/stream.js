// Camera -> Socket.IO -> overlay: the live stream shared by the live page and
// the classroom's student page. One frame in flight at a time: the next frame
// is captured when the answer to the previous one arrives (or after a timeout).
import { io } from "/vendor/socket.io.esm.min.js";

export const EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];
export const COLOURS = {
  angry: "#e5484d", disgust: "#8db600", fear: "#9b6dd6", happy: "#f5c400",
  sad: "#3e8ed0", surprise: "#ff8b3d", neutral: "#9aa4b2",
};

const CAPTURE_WIDTH = 640;
const JPEG_QUALITY = 0.7;
const ANSWER_TIMEOUT_MS = 1500;

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

export class LiveStream {
  /**
   * @param {object} els  {video, overlay, placeholder, list}
   * @param {object} opts {onStats(stats), onStatus(text, kind), onFaces(msg), auth, query}
   */
  constructor(els, opts = {}) {
    this.els = els;
    this.opts = opts;
    this.capture = document.createElement("canvas");
    this.ctx = els.overlay.getContext("2d");
    this.running = false;
    this.seq = 0;
    this.inFlight = null;       // {seq, sentAt}
    this.tracks = new Map();    // id -> {box (drawn), target, label, scores, seenAt}
    this.frameSize = { w: CAPTURE_WIDTH, h: 480 };
    this.answers = [];          // timestamps of answers, for the frame rate
    this.rtts = [];
    this.serverMs = [];
    this.socket = null;
    this.timer = null;
    this._draw = this._draw.bind(this);
  }

  connect() {
    if (this.socket) return this.socket;
    this.socket = io({ transports: ["websocket", "polling"], auth: this.opts.auth || {}, query: this.opts.query || {} });
    this.socket.on("faces", (msg) => this._onAnswer(msg, null));
    this.socket.on("frame_error", (msg) => this._onAnswer(null, msg));
    this.socket.on("connect", () => { if (this.running) this._status("Streaming", "ok"); this._sendNext(); });
    this.socket.on("disconnect", () => { if (this.running) this._status("Connection lost, reconnecting…", "warn"); this.inFlight = null; });
    this.socket.on("connect_error", (err) => this._status(`Cannot reach the server (${err.message}); retrying…`, "warn"));
    return this.socket;
  }

  async start() {
    if (this.running) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this._status("This browser cannot open a camera here. Use a current browser on http://localhost or https.", "error");
      return false;
    }
    this._status("Asking for the camera…", "info");
    try {
      this.media = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    } catch (err) {
      this._status(cameraErrorMessage(err), "error");
      return false;
    }
    const { video } = this.els;
    video.srcObject = this.media;
    await video.play().catch(() => {});
    if (!video.videoWidth) await new Promise((r) => video.addEventListener("loadedmetadata", r, { once: true }));
    const scale = Math.min(1, CAPTURE_WIDTH / video.videoWidth);
    this.frameSize = { w: Math.round(video.videoWidth * scale), h: Math.round(video.videoHeight * scale) };
    this.capture.width = this.frameSize.w;
    this.capture.height = this.frameSize.h;
    if (this.els.placeholder) this.els.placeholder.hidden = true;
    this.running = true;
    this.connect();
    this._status(this.socket.connected ? "Streaming" : "Connecting…", this.socket.connected ? "ok" : "info");
    requestAnimationFrame(this._draw);
    this._sendNext();
    return true;
  }

  stop(message = "Camera off.") {
    this.running = false;
    clearTimeout(this.timer);
    if (this.media) this.media.getTracks().forEach((t) => t.stop());
    this.media = null;
    this.els.video.srcObject = null;
    this.inFlight = null;
    this.tracks.clear();
    this.ctx.clearRect(0, 0, this.els.overlay.width, this.els.overlay.height);
    if (this.els.placeholder) this.els.placeholder.hidden = false;
    if (this.els.list) this.els.list.replaceChildren();
    this._status(message, "info");
  }

  disconnect() {
    if (this.socket) this.socket.disconnect();
    this.socket = null;
  }

  _status(text, kind) { if (this.opts.onStatus) this.opts.onStatus(text, kind); }

  _sendNext() {
    if (!this.running || !this.socket || !this.socket.connected || this.inFlight) return;
    const { video } = this.els;
    if (video.readyState < 2) { this.timer = setTimeout(() => this._sendNext(), 50); return; }
    const c = this.capture.getContext("2d");
    c.drawImage(video, 0, 0, this.capture.width, this.capture.height);
    const seq = ++this.seq;
    this.inFlight = { seq, sentAt: performance.now() };
    this.capture.toBlob(async (blob) => {
      if (!blob || !this.running || !this.socket) { this.inFlight = null; return; }
      const image = await blob.arrayBuffer();
      this.socket.emit("frame", { seq, image });
      clearTimeout(this.timer);
      this.timer = setTimeout(() => {          // the answer never came: move on
        if (this.inFlight && this.inFlight.seq === seq) { this.inFlight = null; this._sendNext(); }
      }, ANSWER_TIMEOUT_MS);
    }, "image/jpeg", JPEG_QUALITY);
  }

  _onAnswer(msg, error) {
    const now = performance.now();
    const seq = (msg || error).seq;
    if (this.inFlight && this.inFlight.seq === seq) {
      this.rtts.push(now - this.inFlight.sentAt);
      if (this.rtts.length > 30) this.rtts.shift();
      this.inFlight = null;
    }
    if (error) {
      this._status(`Frame not analysed: ${error.error}`, "warn");
    } else {
      this.answers.push(now);
      while (this.answers.length && now - this.answers[0] > 2000) this.answers.shift();
      if (msg.timings_ms) { this.serverMs.push(msg.timings_ms.total); if (this.serverMs.length > 30) this.serverMs.shift(); }
      this._updateTracks(msg.faces, now);
      if (this.opts.onFaces) this.opts.onFaces(msg);
      this._report();
    }
    this._sendNext();
  }

  _updateTracks(faces, now) {
    const seen = new Set();
    for (const f of faces) {
      const key = f.id ?? `${f.box}`;
      seen.add(key);
      const t = this.tracks.get(key);
      if (t) Object.assign(t, { target: f.box, label: f.label, scores: f.scores, seenAt: now });
      else this.tracks.set(key, { box: f.box.slice(), target: f.box, label: f.label, scores: f.scores, seenAt: now });
    }
    for (const key of [...this.tracks.keys()]) if (!seen.has(key)) this.tracks.delete(key);
    this._renderList();
  }

  _renderList() {
    const { list, overlay } = this.els;
    overlay.dataset.faces = String(this.tracks.size);
    overlay.dataset.labels = [...this.tracks.values()].map((t) => t.label).join(",");
    if (!list) return;
    const items = [...this.tracks.entries()].map(([id, t], i) => {
      const li = document.createElement("li");
      li.className = `face-item emo-${t.label}`;
      li.dataset.label = t.label;
      li.textContent = `Face ${i + 1}: ${t.label} ${Math.round((t.scores[t.label] || 0) * 100)}%`;
      return li;
    });
    list.replaceChildren(...items);
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

  _draw() {
    if (!this.running) return;
    const { overlay, video } = this.els;
    const w = video.clientWidth, h = video.clientHeight;
    if (overlay.width !== w || overlay.height !== h) { overlay.width = w; overlay.height = h; }
    const ctx = this.ctx;
    ctx.clearRect(0, 0, w, h);
    const sx = w / this.frameSize.w, sy = h / this.frameSize.h;
    for (const t of this.tracks.values()) {
      // Glide towards the newest box so the overlay moves smoothly between answers.
      for (let i = 0; i < 4; i++) t.box[i] += (t.target[i] - t.box[i]) * 0.35;
      const [bx, by, bw, bh] = t.box;
      // The video is mirrored on screen, so mirror the box (not the text).
      const x = w - (bx + bw) * sx, y = by * sy, bwS = bw * sx, bhS = bh * sy;
      const colour = COLOURS[t.label] || "#4fc78a";
      ctx.lineWidth = 3;
      ctx.strokeStyle = colour;
      ctx.strokeRect(x, y, bwS, bhS);
      const pct = Math.round((t.scores[t.label] || 0) * 100);
      const label = `${t.label} ${pct}%`;
      ctx.font = "600 16px system-ui, sans-serif";
      const tw = ctx.measureText(label).width + 10;
      ctx.fillStyle = colour;
      ctx.fillRect(x, Math.max(0, y - 24), tw, 22);
      ctx.fillStyle = "#111";
      ctx.fillText(label, x + 5, Math.max(16, y - 7));
      this._drawBars(ctx, t.scores, x + bwS + 6 + 80 > w ? x - 86 : x + bwS + 6, y);
    }
    requestAnimationFrame(this._draw);
  }

  _drawBars(ctx, scores, x, y) {
    ctx.font = "11px system-ui, sans-serif";
    EMOTIONS.forEach((e, i) => {
      const v = scores[e] || 0;
      const yy = y + i * 14;
      ctx.fillStyle = "rgba(0,0,0,0.55)";
      ctx.fillRect(x, yy, 80, 12);
      ctx.fillStyle = COLOURS[e];
      ctx.fillRect(x, yy, 80 * v, 12);
      ctx.fillStyle = "#fff";
      ctx.fillText(e, x + 3, yy + 10);
    });
  }
}
