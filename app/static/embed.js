/* Groundswell embeds: tell the framing page how tall this card is, so it can size the iframe.
   Served from our own origin (the CSP allows only 'self' scripts); sends nothing but a number. */
(function () {
  "use strict";
  if (window.parent === window) { return; }
  var last = 0;
  function report() {
    var height = Math.ceil(document.documentElement.scrollHeight);
    if (height === last) { return; }
    last = height;
    window.parent.postMessage({ type: "groundswell:height", height: height }, "*");
  }
  window.addEventListener("load", report);
  window.addEventListener("resize", report);
  if (window.ResizeObserver) { new window.ResizeObserver(report).observe(document.body); }
}());
