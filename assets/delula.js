/* Delula dashboard: small browser-side helpers.
 *
 * 1. Every <time class="local-time" datetime="…Z"> is shown in the viewer's time zone
 *    ("12 Mar, 14:03:05", or "3 min ago" with data-format="relative"); the full local time
 *    and zone go into the tooltip. New and changed elements are picked up by a MutationObserver.
 * 2. The tab's visibility is pushed into the Dash store "page-visibility" ("visible"/"hidden"),
 *    so pages can pause their live refresh while nobody looks.
 * 3. window.dash_clientside.delula: clientside callbacks (figures in local time, live state).
 */
(function () {
  "use strict";

  var pad = function (n) { return (n < 10 ? "0" : "") + n; };

  var absolute = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit"
  });
  var full = new Intl.DateTimeFormat(undefined, {
    weekday: "short", year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
  });

  function relative(date, now) {
    var s = Math.round((date.getTime() - now) / 1000);
    var future = s > 0;
    s = Math.abs(s);
    var text;
    if (s < 5) return "just now";
    if (s < 60) text = s + " s";
    else if (s < 3600) text = Math.round(s / 60) + " min";
    else if (s < 86400) text = Math.round(s / 3600) + " h";
    else text = Math.round(s / 86400) + " d";
    return future ? "in " + text : text + " ago";
  }

  function formatTime(el, now) {
    var iso = el.getAttribute("datetime");
    if (!iso) return;
    var date = new Date(iso);
    if (isNaN(date.getTime())) return;
    var text = el.getAttribute("data-format") === "relative" ? relative(date, now) : absolute.format(date);
    if (el.textContent !== text) el.textContent = text;
    var title = full.format(date);
    if (el.getAttribute("title") !== title) el.setAttribute("title", title);
  }

  function formatAll(root) {
    var now = Date.now();
    if (root.matches && root.matches("time.local-time")) formatTime(root, now);
    if (!root.querySelectorAll) return;
    var els = root.querySelectorAll("time.local-time");
    for (var i = 0; i < els.length; i++) formatTime(els[i], now);
  }

  function watch() {
    formatAll(document.body);
    new MutationObserver(function (mutations) {
      var now = Date.now();
      mutations.forEach(function (m) {
        var target = m.target.nodeType === 3 ? m.target.parentNode : m.target;
        if (target && target.matches && target.matches("time.local-time")) formatTime(target, now);
        m.addedNodes.forEach(function (n) { if (n.nodeType === 1) formatAll(n); });
      });
    }).observe(document.body, {
      subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ["datetime"]
    });
    setInterval(function () {
      var now = Date.now();
      document.querySelectorAll('time.local-time[data-format="relative"]').forEach(function (el) {
        formatTime(el, now);
      });
    }, 15000);
  }

  function pushVisibility() {
    var dc = window.dash_clientside;
    if (!dc || !dc.set_props) return;
    try {  // the store lives in the shell; pages that are not the dashboard's have none
      dc.set_props("page-visibility", {data: document.visibilityState});
    } catch (e) { /* nothing listens here */ }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", watch);
  else watch();
  document.addEventListener("visibilitychange", pushVisibility);

  /* An ISO UTC timestamp ("…Z") as a local "YYYY-MM-DD HH:MM:SS" string for Plotly, which
     draws date strings as given (it has no notion of time zones). */
  function localStamp(value) {
    if (typeof value !== "string" || value.charAt(value.length - 1) !== "Z") return value;
    var d = new Date(value);
    if (isNaN(d.getTime())) return value;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function localizeFigure(fig) {
    if (!fig || !fig.layout || !fig.layout.meta || !fig.layout.meta.localTime) return fig;
    var out = JSON.parse(JSON.stringify(fig));
    (out.data || []).forEach(function (trace) {
      if (Array.isArray(trace.x)) trace.x = trace.x.map(localStamp);
    });
    var axis = out.layout.xaxis;
    if (axis && Array.isArray(axis.range)) axis.range = axis.range.map(localStamp);
    (out.layout.shapes || []).forEach(function (shape) {
      if (shape.xref === "x") { shape.x0 = localStamp(shape.x0); shape.x1 = localStamp(shape.x1); }
    });
    return out;
  }

  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.delula = {
    /* payload: {"order": [graph ids, in output order], "figures": {graphId: figure}}. */
    renderFigures: function (payload) {
      var nu = window.dash_clientside.no_update;
      if (!payload || !payload.order) throw window.dash_clientside.PreventUpdate;
      return payload.order.map(function (id) {
        var fig = payload.figures[id];
        return fig ? localizeFigure(fig) : nu;
      });
    },
    localizeFigure: localizeFigure,
    /* Live refresh: runs unless paused by the user or the tab is hidden. */
    liveState: function (visibility, paused, intervalMs) {
      // the store only triggers this callback; the document knows the truth
      var hidden = document.visibilityState === "hidden";
      var seconds = Math.round((intervalMs || 0) / 1000);
      var label, tone;
      if (paused) { label = "Paused"; tone = "paused"; }
      else if (hidden) { label = "Paused while the tab is hidden"; tone = "paused"; }
      else { label = "Live · every " + seconds + " s"; tone = "live"; }
      return [Boolean(paused || hidden), label, "live-indicator live-" + tone,
              paused ? "Resume" : "Pause"];
    }
  };
})();
