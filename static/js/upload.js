// Upload page: drag-and-drop onto the drop zone, submit on choice, show progress.
const form = document.getElementById("upload-form");
const input = document.getElementById("image");
const zone = document.getElementById("dropzone");
const fileLabel = document.getElementById("dz-file");
const busy = document.getElementById("busy");

function chosen() {
  const file = input.files && input.files[0];
  fileLabel.textContent = file ? `${file.name} (${Math.round(file.size / 1024)} KB)` : "";
  return file;
}

input.addEventListener("change", () => { if (chosen()) form.requestSubmit(); });
form.addEventListener("submit", () => { busy.hidden = false; });

["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (e) => {
  e.preventDefault();
  zone.classList.add("over");
}));
["dragleave", "drop"].forEach((type) => zone.addEventListener(type, (e) => {
  e.preventDefault();
  zone.classList.remove("over");
}));
zone.addEventListener("drop", (e) => {
  if (!e.dataTransfer || !e.dataTransfer.files.length) return;
  input.files = e.dataTransfer.files;
  if (chosen()) form.requestSubmit();
});
