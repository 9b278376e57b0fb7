/* effbench: record any script error or console.error so a test (and a reader) can see it. */
(function () {
  "use strict";
  var errs = window.__ebErrors = [];
  function note(msg) {
    errs.push(String(msg));
    var el = document.getElementById("eb-status");
    if (el) { el.setAttribute("data-state", "error"); el.textContent = "script error: " + errs.join(" | "); }
  }
  window.addEventListener("error", function (ev) { note(ev.message || ev.type); });
  window.addEventListener("unhandledrejection", function (ev) { note("unhandled rejection: " + (ev.reason && ev.reason.message || ev.reason)); });
  document.addEventListener("securitypolicyviolation", function (ev) { note("blocked by the page's policy: " + ev.blockedURI); });
  var orig = console.error;
  console.error = function () { note(Array.prototype.join.call(arguments, " ")); return orig.apply(console, arguments); };
})();
