// The classes page: "New class" sends its form once; a second click while it is on its way does nothing
// (the server also answers a resent form with the class created the first time).
const form = document.getElementById("new-class");

if (form) {
  const button = form.querySelector("button[type=submit]");
  form.addEventListener("submit", (event) => {
    if (form.dataset.sent === "true") {
      event.preventDefault();
      return;
    }
    form.dataset.sent = "true";
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
  });
  // Back from the dashboard (the page restored from the back-forward cache): the form works again.
  window.addEventListener("pageshow", () => {
    delete form.dataset.sent;
    button.disabled = false;
    button.removeAttribute("aria-busy");
  });
}
