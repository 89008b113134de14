/*
 * Browser side of the Recipes, Queue and Asset viewer pages (pages/recipes.py, queue.py,
 * generation.py): the Instant buttons' 10 s lock with its countdown, the InstantMakeModal's
 * progress animation, and the queue grid's formatters (times in the viewer's zone) and cell renderers.
 */
(function () {
  "use strict";

  var ns = (window.dash_clientside = window.dash_clientside || {});
  var noUpdate = function () { return ns.no_update; };

  var INSTANT = "\u26a1 Instant";
  var STAGES = [
    [40, "Finding a finished video in the backlog\u2026"],
    [80, "Handing it over and charging credits\u2026"],
    [100, "Preparing the preview\u2026"],
  ];

  function triggered(prop) {
    var t = (ns.callback_context && ns.callback_context.triggered) || [];
    return t.some(function (x) { return x.prop_id === prop; });
  }

  /* Same format as the dashboard's <time class="local-time"> (assets/delula.js). */
  var absolute = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });

  function localTime(iso) {
    if (!iso) { return "\u2014"; }
    var d = new Date(iso);
    return isNaN(d.getTime()) ? String(iso) : absolute.format(d);
  }

  ns.delula_recipes = {
    /* Instant clicked: remember when, for the button lock. */
    rememberClick: function (clicks) {
      return (clicks || []).some(function (n) { return n > 0; }) ? Date.now() : noUpdate();
    },

    /* Disable every Instant button while the modal is open and for the lock after a click,
       with the seconds left on the buttons; the ticker runs only while counting down. */
    lockButtons: function (_tick, clickedAt, modalOpen, ids, actingAs, lockSeconds) {
      var lockMs = (Number(lockSeconds) || 10) * 1000;
      var left = clickedAt ? Math.max(0, clickedAt + lockMs - Date.now()) : 0;
      var secs = Math.ceil(left / 1000);
      var disabled = !actingAs || !!modalOpen || left > 0;
      var label = secs > 0 ? INSTANT + " \u00b7 " + secs + " s" : INSTANT;
      return [ids.map(function () { return disabled; }), ids.map(function () { return label; }), left <= 0];
    },

    /* A new claim resets the bar (success) or shows the refusal at once; each tick adds a random
       step until 100 %, then the result replaces the bar. */
    animateClaim: function (claim, _n, value) {
      var show = { display: "block" };
      var hide = { display: "none" };
      var success = claim && claim.kind === "success";
      if (triggered("recipes-claim.data")) {
        if (!success) { return [0, "", "", hide, show, true]; }
        return [0, "", STAGES[0][1], show, hide, false];
      }
      if (!success) { return [noUpdate(), noUpdate(), noUpdate(), noUpdate(), noUpdate(), true]; }
      var v = Math.min(100, (value || 0) + 6 + Math.floor(Math.random() * 17));
      if (v >= 100) { return [100, "100%", "Done", hide, show, true]; }
      var stage = STAGES.filter(function (s) { return v < s[0]; })[0][1];
      return [v, v + "%", stage, show, hide, false];
    },

  };

  /* dash-ag-grid: value formatters (dashGridOptions / columnDefs "function" strings). */
  var fmt = (window.dashAgGridFunctions = window.dashAgGridFunctions || {});
  fmt.delulaLocalTime = localTime;
  fmt.delulaDuration = function (seconds) {
    if (seconds === null || seconds === undefined) { return "\u2014"; }
    var s = Math.abs(Math.round(seconds));
    var text = s < 60 ? s + " s" : s < 3600 ? Math.floor(s / 60) + " min" :
      s < 86400 ? Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min" : Math.floor(s / 86400) + " d";
    return text;
  };
  fmt.delulaNextPoll = function (seconds) {
    if (seconds === null || seconds === undefined) { return "\u2014"; }
    return seconds <= 0 ? "due now" : "in " + fmt.delulaDuration(seconds);
  };

  /* dash-ag-grid: cell renderers. */
  var cells = (window.dashAgGridComponentFunctions = window.dashAgGridComponentFunctions || {});
  var h = function () { return window.React.createElement.apply(null, arguments); };
  var STATUS_COLOURS = {
    pending: "secondary", processing: "primary", completed: "success", failed: "danger", cancelled: "dark",
  };

  /* Same look as pages.layout.status_badge. */
  cells.DelulaStatus = function (props) {
    var status = props.value || "";
    return h("span", { className: "badge text-bg-" + (STATUS_COLOURS[status] || "secondary") +
      " status-badge text-uppercase delula-status-" + status }, status);
  };

  /* The empty grid says why it is empty. */
  cells.DelulaNoRows = function (props) {
    return h("div", { className: "text-body-secondary p-3 queue-empty" }, props.message || "No rows");
  };

  /* Same-page navigation like dcc.Link (push the URL, tell Dash's router); the href keeps
     middle-click / open-in-new-tab working. */
  cells.DelulaJobLink = function (props) {
    var href = "/generations/" + props.value;
    return h("a", {
      href: href,
      className: "delula-job-link",
      onClick: function (e) {
        if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) { return; }
        e.preventDefault();
        window.history.pushState({}, "", href);
        window.dispatchEvent(new CustomEvent("_dashprivate_pushstate"));
        window.scrollTo(0, 0);
      },
    }, "#" + props.value);
  };

  /* Retry / Cancel buttons; a click reports {action, id} through the grid's cellRendererData. */
  cells.DelulaJobActions = function (props) {
    var actions = props.value || [];
    if (!actions.length) { return h("span", { className: "text-muted small" }, "\u2014"); }
    return h("span", { className: "d-inline-flex gap-1" }, actions.map(function (action) {
      return h("button", {
        key: action,
        type: "button",
        className: "btn btn-sm " + (action === "retry" ? "btn-outline-primary" : "btn-outline-danger") +
          " delula-action delula-action-" + action,
        onClick: function () { props.setData({ action: action, id: props.data.id }); },
      }, action === "retry" ? "Retry" : "Cancel");
    }));
  };
})();
