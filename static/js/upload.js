// Upload page: drag-and-drop onto the drop zone, submit on choice, show progress.
// A photo over the size limit, or more than one photo, is refused here, before any bytes are sent.
const MB = 1024 * 1024;
const form = document.getElementById("upload-form");
const input = document.getElementById("image");
const zone = document.getElementById("dropzone");
const title = document.getElementById("dz-title");
const fileLabel = document.getElementById("dz-file");
const busy = document.getElementById("busy");
const errorEl = document.getElementById("upload-error");
const maxBytes = Number(form.dataset.maxBytes) || Infinity;

/** Bytes in MB to one decimal, without a trailing ".0"; a size ``over`` a limit never reads as that limit. */
function megabytes(size, over = null) {
  let tenths = Math.round(size * 10 / MB);
  if (over !== null) tenths = Math.max(tenths, Math.round(over * 10 / MB) + 1);
  return String(tenths / 10);
}

/** Show ``text`` under the form ("" hides it), tied to the file field (as the server's message is) while shown. */
function showError(text) {
  errorEl.textContent = text;
  errorEl.hidden = !text;
  if (text) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", errorEl.id);
  } else {
    input.removeAttribute("aria-invalid");
    input.removeAttribute("aria-describedby");
  }
}

function chosen() {
  const file = input.files && input.files[0];
  const size = file && (file.size >= MB ? `${megabytes(file.size)} MB` : `${Math.max(1, Math.round(file.size / 1024))} KB`);
  fileLabel.textContent = file ? `${file.name} (${size})` : "";
  return file;
}

// Nothing can be dropped where the pointer is a finger.
const touch = window.matchMedia("(pointer: coarse)");
const dropTitle = title.textContent;
const fitTitle = () => { title.textContent = touch.matches ? "Choose a photo" : dropTitle; };
fitTitle();
touch.addEventListener("change", fitTitle);

input.addEventListener("change", () => { if (chosen()) form.requestSubmit(); });
form.addEventListener("submit", (e) => {
  const file = input.files && input.files[0];
  if (input.files && input.files.length > 1) {  // the server analyses one photo per request, and says so
    e.preventDefault();
    showError(`Choose one photo at a time: ${input.files.length} files were chosen.`);
    return;
  }
  if (file && file.size > maxBytes) {
    e.preventDefault();
    showError(`${file.name}: This photo is ${megabytes(file.size, maxBytes)} MB; the limit is ${megabytes(maxBytes)} MB.`);
    return;
  }
  showError("");
  busy.hidden = false;
});

["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (e) => {
  e.preventDefault();
  zone.classList.add("over");
}));
["dragleave", "drop"].forEach((type) => zone.addEventListener(type, (e) => {
  e.preventDefault();
  zone.classList.remove("over");
}));
zone.addEventListener("drop", (e) => {
  const files = e.dataTransfer && e.dataTransfer.files;
  if (!files || !files.length) return;
  if (files.length > 1) {  // the photo chosen before, if any, stays chosen
    showError(`Drop one photo at a time: ${files.length} files were dropped.`);
    return;
  }
  input.files = files;
  if (chosen()) form.requestSubmit();
});

// Back to this page from its result, restored as it was left (the back/forward cache): not "Analysing…"
// for ever, and the photo that was sent not still chosen, so choosing it again analyses it again.
window.addEventListener("pageshow", (e) => {
  if (!e.persisted) return;
  busy.hidden = true;
  form.reset();
  chosen();
});

// A scores table wider than the window scrolls sideways: say so, while it does.
const scores = document.getElementById("scores-wrap");
const scrollHint = document.getElementById("scroll-hint");
if (scores && scrollHint) {
  const fitHint = () => { scrollHint.hidden = scores.scrollWidth <= scores.clientWidth + 1; };
  fitHint();
  new ResizeObserver(fitHint).observe(scores);
}
