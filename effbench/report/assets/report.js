/* effbench report: draw the embedded plotly figures, make tables sortable and filterable.
   Plain JavaScript, no network: everything the page needs is in this file. */
(function () {
  "use strict";
  var status = document.getElementById("eb-status");

  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  function themed(layout) {
    var fg = cssVar("--fg"), grid = cssVar("--grid"), soft = cssVar("--soft"), line = cssVar("--line");
    var l = JSON.parse(JSON.stringify(layout));
    l.paper_bgcolor = "rgba(0,0,0,0)";
    l.plot_bgcolor = "rgba(0,0,0,0)";
    l.font = Object.assign({}, l.font || {}, { color: fg,
      family: 'system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif' });
    l.hoverlabel = Object.assign({}, l.hoverlabel || {}, { bgcolor: soft, bordercolor: line, font: { color: fg } });
    Object.keys(l).forEach(function (k) {
      if (/^[xy]axis\d*$/.test(k)) {
        l[k] = Object.assign({ gridcolor: grid, zerolinecolor: line, linecolor: line, automargin: true }, l[k]);
      }
    });
    (l.updatemenus || []).forEach(function (m) { m.bgcolor = soft; m.bordercolor = line; m.font = { color: fg }; });
    if (l.legend) { l.legend.bgcolor = "rgba(0,0,0,0)"; }
    return l;
  }

  var figs = {};
  var drawn = 0;
  try {
    var packed = JSON.parse(document.getElementById("eb-figures").textContent);
    var texts = packed.texts || [];
    figs = packed.figures || {};
    /* hover texts are stored once (see pack_figures in html.py): put them back */
    Object.keys(figs).forEach(function (id) {
      figs[id].data.forEach(function (tr) {
        if (tr._hv === undefined) { return; }
        tr.hovertext = Array.isArray(tr._hv) ? tr._hv.map(function (i) { return texts[i]; }) : texts[tr._hv];
        delete tr._hv;
      });
    });
  } catch (err) { console.error("cannot read the embedded figures: " + err); }
  var config = { displaylogo: false, responsive: true, showSendToCloud: false,
                 modeBarButtonsToRemove: ["select2d", "lasso2d"] };
  Object.keys(figs).forEach(function (id) {
    var el = document.getElementById(id);
    if (!el) { return; }
    try {
      Plotly.newPlot(el, figs[id].data, themed(figs[id].layout), config);
      drawn += 1;
    } catch (err) { console.error("chart " + id + " failed: " + err); }
  });
  var media = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)");
  if (media && media.addEventListener) {
    media.addEventListener("change", function () {
      Object.keys(figs).forEach(function (id) {
        var el = document.getElementById(id);
        if (el && el.layout) { Plotly.relayout(el, themed(figs[id].layout)); }
      });
    });
  }

  /* ---- sorting: numbers by data-v (absent last), text by content ---- */
  function sortTable(table, col, type, dir) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var ca = a.cells[col], cb = b.cells[col];
      if (type === "num") {
        var va = ca && ca.getAttribute("data-v"), vb = cb && cb.getAttribute("data-v");
        var na = va === null || va === "" ? NaN : parseFloat(va), nb = vb === null || vb === "" ? NaN : parseFloat(vb);
        if (isNaN(na) && isNaN(nb)) { return 0; }
        if (isNaN(na)) { return 1; }
        if (isNaN(nb)) { return -1; }
        return dir * (na - nb);
      }
      var ta = ca ? ca.textContent : "", tb = cb ? cb.textContent : "";
      return dir * ta.localeCompare(tb, undefined, { numeric: true });
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.eb-table"), function (table) {
    var ths = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(ths, function (th, col) {
      var type = th.getAttribute("data-type");
      if (!type) { return; }
      function go() {
        var dir = th.classList.contains("asc") ? -1 : 1;
        Array.prototype.forEach.call(ths, function (o) { o.classList.remove("asc", "desc"); });
        th.classList.add(dir === 1 ? "asc" : "desc");
        sortTable(table, col, type, dir);
      }
      th.addEventListener("click", go);
      th.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); go(); } });
    });
  });

  /* ---- decision table filters: batch tab, selects, free text ---- */
  var table = document.getElementById("decision-table");
  var count = document.getElementById("decision-count");
  var state = { batch: "" };
  function applyFilters() {
    if (!table) { return; }
    var selects = document.querySelectorAll("#decision [data-filter]");
    var want = {};
    Array.prototype.forEach.call(selects, function (s) { want[s.getAttribute("data-filter")] = s.value.trim().toLowerCase(); });
    var shown = 0, total = table.tBodies[0].rows.length;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (tr) {
      var ok = !state.batch || tr.getAttribute("data-batch") === state.batch;
      ["model", "runner", "scenario", "status"].forEach(function (k) {
        if (ok && want[k] && (tr.getAttribute("data-" + k) || "").toLowerCase() !== want[k]) { ok = false; }
      });
      if (ok && want.text && tr.textContent.toLowerCase().indexOf(want.text) < 0) { ok = false; }
      tr.hidden = !ok;
      shown += ok ? 1 : 0;
    });
    if (count) { count.textContent = "showing " + shown + " of " + total + " cells"; }
  }
  Array.prototype.forEach.call(document.querySelectorAll("#decision .tab"), function (tab, _i, all) {
    tab.addEventListener("click", function () {
      Array.prototype.forEach.call(document.querySelectorAll("#decision .tab"), function (t) { t.classList.remove("active"); });
      tab.classList.add("active");
      state.batch = tab.getAttribute("data-batch") || "";
      applyFilters();
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("#decision [data-filter]"), function (el) {
    el.addEventListener(el.tagName === "INPUT" ? "input" : "change", applyFilters);
  });
  applyFilters();

  if (status && status.getAttribute("data-state") !== "error") {
    status.setAttribute("data-state", "ready");
    status.setAttribute("data-charts", String(drawn));
    status.textContent = "interactive: " + drawn + " charts drawn, tables sortable";
  }
})();
