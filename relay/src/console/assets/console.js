// qunbridge console: live refresh while the tab is visible (no timer while it is hidden),
// and the Release / Drop buttons of the held page. No framework, no network but this host.
(function () {
  "use strict";
  var labelsEl = document.getElementById("qb-labels");
  var L = labelsEl ? JSON.parse(labelsEl.textContent) : {};
  function t(s) { return L[s] || s; }
  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function span(secs) {
    if (secs < 60) return secs + "s";
    if (secs < 3600) return Math.floor(secs / 60) + "m";
    if (secs < 86400) return Math.floor(secs / 3600) + "h " + Math.floor(secs % 3600 / 60) + "m";
    return Math.floor(secs / 86400) + "d " + Math.floor(secs % 86400 / 3600) + "h";
  }
  function ago(ms) { return span(Math.max(0, Math.floor((Date.now() - ms) / 1000))); }
  function getJson(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }
  function setHtml(id, html) { var el = document.getElementById(id); if (el) el.innerHTML = html; }
  function countRows(obj) {
    var keys = Object.keys(obj || {});
    if (!keys.length) return '<tr><td colspan="2" class="empty">' + esc(t("None.")) + "</td></tr>";
    return keys.map(function (k) {
      return "<tr><td>" + esc(k) + '</td><td class="num">' + esc(obj[k]) + "</td></tr>";
    }).join("");
  }
  var STATES = ["up", "down", "starting", "auth_failed", "stopped"];

  // Overview: redraw from /api/v1/status.
  function drawStatus(s) {
    var yn = function (flag, yes, no) {
      return '<span class="' + (flag ? "good" : "bad") + '">' + esc(t(flag ? yes : no)) + "</span>";
    };
    var f = function (name) { return document.querySelector('[data-field="' + name + '"]'); };
    if (f("broker")) f("broker").innerHTML = yn(s.broker && s.broker.connected, "connected", "disconnected");
    if (f("ready")) f("ready").innerHTML = yn(s.ready, "yes", "no");
    if (f("uptime")) f("uptime").textContent = span(s.uptime_secs || 0);
    setHtml("accounts", (s.accounts || []).map(function (a) {
      var state = STATES.indexOf(a.state) >= 0 ? a.state : "starting";
      var since = a.since_ms ? ago(a.since_ms) + " " + t("ago") : "-";
      var title = a.since_ms ? new Date(a.since_ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "";
      return '<tr data-account="' + esc(a.account) + '" data-state="' + esc(state) + '"><td>' + esc(a.account) +
        "</td><td>" + esc(a.platform) + '</td><td><span class="state s-' + esc(state) + '">' + esc(t(state)) +
        '</span></td><td title="' + esc(title) + '" data-since-ms="' + esc(a.since_ms || 0) + '">' + esc(since) +
        '</td><td class="reason">' + esc(a.reason || "") + '</td><td class="num">' + esc(a.queued || 0) + "</td></tr>";
    }).join(""));
    var queues = s.queues || [];
    setHtml("queues", queues.length ? queues.map(function (q) {
      return "<tr><td>" + esc(q.alias || "?") + "</td><td>" + esc(q.account) + '</td><td class="num">' + esc(q.depth) + "</td></tr>";
    }).join("") : '<tr><td colspan="3" class="empty">' + esc(t("No queue yet.")) + "</td></tr>");
    var hour = s.last_hour || {};
    var relayed = hour.relayed || {}, dropped = hour.dropped || {};
    setHtml("relayed", countRows(relayed.by_route));
    setHtml("dropped", countRows(dropped.by_reason));
    if (f("relayed-total")) f("relayed-total").textContent = relayed.total || 0;
    if (f("dropped-total")) f("dropped-total").textContent = dropped.total || 0;
  }

  // Held for review: redraw from /api/v1/held.
  function drawHeld(doc) {
    var rows = (doc.held || []).map(function (h) {
      var to = h.to || {};
      return '<tr data-id="' + esc(h.id) + '"><td>' + esc(to.alias || "?") + " <small>(" + esc(to.account) + ")</small></td><td>" +
        esc(h.rule) + '</td><td class="excerpt">' + esc(h.excerpt) + "</td><td>" + esc(h.sender) +
        '</td><td data-held-ms="' + esc(h.held_ms) + '">' + esc(ago(h.held_ms)) + '</td><td class="buttons">' +
        '<button type="button" data-action="release" data-id="' + esc(h.id) + '">' + esc(t("Release")) + "</button> " +
        '<button type="button" class="secondary" data-action="drop" data-id="' + esc(h.id) + '">' + esc(t("Drop")) + "</button></td></tr>";
    });
    setHtml("held-rows", rows.length ? rows.join("") :
      '<tr><td colspan="6" class="empty">' + esc(t("No messages are held for review.")) + "</td></tr>");
  }

  // Other pages (links, group health): fetch the page again and swap its main part.
  function redrawPage() {
    return fetch(location.href, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    }).then(function (text) {
      var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("main");
      var main = document.querySelector("main");
      if (fresh && main) main.innerHTML = fresh.innerHTML;
    });
  }

  var live = document.querySelector("[data-live]");
  var kind = live && live.getAttribute("data-live");

  // Overview: the status as Server-Sent Events (on every account or broker change, else
  // every 2 s), open only while the tab is visible.
  if (kind === "status" && window.EventSource) {
    var source = null;
    var listen = function () {
      if (document.hidden || source) return;
      source = new EventSource("/api/v1/status/events");
      source.addEventListener("status", function (event) {
        try { drawStatus(JSON.parse(event.data)); } catch (e) { /* next event */ }
      });
    };
    var quiet = function () { if (source) { source.close(); source = null; } };
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) quiet(); else listen();
    });
    window.addEventListener("pagehide", quiet);
    listen();
    return wireButtons();
  }

  // Other pages poll while visible: the held list every 2 s, links and group health (which
  // change by the day or on a reload) every 30 s.
  var jobs = {
    status: { every: 2000, run: function () { return getJson("/api/v1/status").then(drawStatus); } },
    held: { every: 2000, run: function () { return getJson("/api/v1/held").then(drawHeld); } },
    page: { every: 30000, run: redrawPage }
  };
  var job = jobs[kind];
  var timer = null;
  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (!job || document.hidden) return; // nothing at all while the tab is hidden
    timer = setTimeout(tick, job.every);
  }
  function tick() {
    timer = null;
    if (document.hidden) return;
    job.run().catch(function () { /* stale until the next try */ }).then(schedule);
  }
  if (job) {
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) { clearTimeout(timer); timer = null; } else { tick(); }
    });
    schedule();
  }
  wireButtons();

  // Release and Drop.
  function wireButtons() {
    document.addEventListener("click", function (event) {
      var button = event.target.closest && event.target.closest("button[data-action]");
      if (!button) return;
      var id = button.getAttribute("data-id");
      var action = button.getAttribute("data-action");
      var row = button.closest("tr");
      Array.prototype.forEach.call(row ? row.querySelectorAll("button") : [button], function (b) { b.disabled = true; });
      fetch("/api/v1/held/" + encodeURIComponent(id) + "/" + action, {
        method: "POST", credentials: "same-origin", headers: { "Accept": "application/json" }
      }).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) { return { ok: r.ok, body: body }; });
      }).then(function (answer) {
        var text = answer.ok
          ? id + ": " + t(answer.body.outcome || "released") + (answer.body.reason ? " (" + answer.body.reason + ")" : "")
          : id + ": " + t("failed") + " — " + (answer.body.error || "");
        var result = document.getElementById("held-result");
        if (result) {
          result.textContent = text;
          result.className = answer.ok ? "good" : "bad";
          result.setAttribute("data-outcome", answer.ok ? (answer.body.outcome || "") : "error");
        }
      }).catch(function (error) {
        var result = document.getElementById("held-result");
        if (result) { result.textContent = id + ": " + t("failed") + " — " + error; result.className = "bad"; }
      }).then(function () {
        return getJson("/api/v1/held").then(drawHeld);
      }).catch(function () {});
    });
  }
})();
