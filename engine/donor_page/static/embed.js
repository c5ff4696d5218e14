/* Surge donation page embedding: sizes each <iframe data-surge-donate> to the height its page reports.
   Usage: <iframe data-surge-donate src="https://surge.example/donate/CAMPAIGN" title="Donate" style="width:100%;border:0"></iframe>
          <script src="https://surge.example/donate/static/embed.js" async></script> */
(function () {
  "use strict";
  window.addEventListener("message", function (event) {
    var data = event.data;
    if (!data || data.type !== "surge-donate-height" || typeof data.height !== "number") return;
    var frames = document.querySelectorAll("iframe[data-surge-donate]");
    for (var i = 0; i < frames.length; i++) {
      var frame = frames[i];
      if (frame.contentWindow !== event.source) continue;
      if (new URL(frame.src, location.href).origin !== event.origin) return;
      frame.style.height = Math.min(Math.max(Math.ceil(data.height), 200), 10000) + "px";
    }
  });
})();
