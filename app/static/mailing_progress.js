// Live progress for a mailing that is sending: polls its JSON every 2 seconds and
// updates the bar, the numbers and the aria-live summary. Without JavaScript the
// page shows the same numbers and a "Refresh" link.
(function () {
  "use strict";
  var section = document.querySelector(".mailing-progress[data-progress-url]");
  if (!section || section.getAttribute("data-active") !== "yes" || !window.fetch) {
    return;
  }
  var url = section.getAttribute("data-progress-url");
  var bar = section.querySelector("progress");
  var INTERVAL = 2000;
  var number = new Intl.NumberFormat("en");

  function put(field, value) {
    var el = section.querySelector('[data-field="' + field + '"]');
    if (el) {
      el.textContent = value;
    }
  }

  function summary(p) {
    var text = (p.materialising ? "Finding recipients… " : "") + p.percent + "% done: " +
      number.format(p.sent) + " sent of " + number.format(p.recipients);
    if (p.status === "sent") { text += ". Finished."; }
    else if (p.status === "paused") { text += ". Paused."; }
    else if (p.status === "cancelled") { text += ". Cancelled."; }
    else if (p.status === "testing") { text += ". A/B test under way."; }
    return text;
  }

  function show(p) {
    bar.value = p.percent;
    bar.textContent = p.percent + "%";
    ["recipients", "sent", "queued", "skipped", "failed"].forEach(function (name) {
      put(name, number.format(p[name]));
    });
    put("summary", summary(p));
    section.setAttribute("data-status", p.status);
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) { throw new Error("progress " + response.status); }
        return response.json();
      })
      .then(function (p) {
        show(p);
        if (p.active) {
          window.setTimeout(poll, INTERVAL);
        } else {
          // Finished, paused or cancelled: reload once so the buttons match the new state.
          section.setAttribute("data-active", "no");
          window.setTimeout(function () { window.location.reload(); }, 500);
        }
      })
      .catch(function () {
        // A failed poll (network, signed out) stops polling; the Refresh link still works.
        put("summary", "Live updates stopped. Use Refresh to see the latest numbers.");
      });
  }

  window.setTimeout(poll, INTERVAL);
})();
