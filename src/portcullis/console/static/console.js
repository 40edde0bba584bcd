// Portcullis console: the one own script. Sends the session's CSRF token (from the csrf-token meta
// tag) with every htmx request, as the X-CSRF-Token header (hx-headers on <body>).
(function () {
  "use strict";
  function setup() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta && meta.content && document.body) {
      document.body.setAttribute("hx-headers", JSON.stringify({"X-CSRF-Token": meta.content}));
    }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setup);
  } else {
    setup();
  }
})();
