/* Live progress for an admin bulk operation page.
 *
 * The WebSocket (/ws/bulk/, session cookie) pushes the operation's events; a small JSON
 * view is polled whenever the socket is not subscribed to the operation (and, slowly,
 * even when it is), so the page always reaches the final state. The socket counts as
 * live only once it answered `subscribed`: a superuser watching another user's
 * operation gets `not_found` there (the socket carries a user's own operations), and
 * the page says it polls. The highest `version` wins. On the final state the
 * server-rendered page replaces this one's content (failed items, download, retry).
 * Without JavaScript the page refreshes itself (<noscript> meta refresh).
 */
(function () {
  "use strict";
  const FINAL = ["completed", "partial", "failed", "cancelled"];
  const FAST_POLL_MS = 1000;
  const SLOW_POLL_MS = 5000;
  // A rate over less than this much running time says little (16 items in 10 ms).
  const MIN_RATE_SECONDS = 1;
  const COUNTS = ["succeeded", "skipped", "failed", "cancelled"];

  // The bar's width comes from its aria-valuenow, set here: the Content-Security-Policy
  // (style-src 'self') refuses a style="" attribute in the page.
  function paintBar(root) {
    const bar = root.querySelector(".bulkops-bar");
    const fill = root.querySelector(".bulkops-bar-fill");
    if (bar && fill) fill.style.width = (bar.getAttribute("aria-valuenow") || 0) + "%";
  }

  function start(root) {
    const opId = root.dataset.operationId;
    const statusUrl = root.dataset.statusUrl;
    let version = Number(root.dataset.version || 0);
    let finished = root.dataset.finished === "1";
    let socket = null;
    let socketOpen = false; // subscribed: the operation's events come over it
    let socketRefused = false; // the server will not send this operation's events
    let pollTimer = null;
    let reconnectDelay = 1000;
    let last = null;

    function field(name) {
      return root.querySelectorAll('[data-field="' + name + '"]');
    }
    function setText(name, text) {
      field(name).forEach(function (el) { el.textContent = text; });
    }
    function seconds(value) {
      if (value === null || value === undefined) return "—";
      if (value < 1) return Math.round(value * 1000) + " ms";
      if (value < 60) return value.toFixed(1) + " s";
      const m = Math.floor(value / 60);
      return m + " min " + Math.round(value - m * 60) + " s";
    }
    function live(text) {
      const el = root.querySelector("[data-live]");
      if (!el) return;
      el.hidden = false;
      el.textContent = text;
    }

    function render(op) {
      if (!op || op.operation_id !== opId) return;
      if (typeof op.version === "number" && op.version < version) return;
      version = op.version || version;
      const bar = root.querySelector(".bulkops-bar");
      const fill = root.querySelector(".bulkops-bar-fill");
      if (bar) bar.setAttribute("aria-valuenow", op.progress);
      if (fill) {
        fill.style.width = op.progress + "%";
        fill.className = "bulkops-bar-fill bulkops-status-" + op.status;
      }
      const badge = root.querySelector('[data-field="status"]');
      if (badge) {
        badge.className = "bulkops-badge bulkops-status-" + op.status;
        badge.textContent = op.status;
      }
      ["progress", "processed", "total"].concat(COUNTS).forEach(
        function (name) { setText(name, String(op[name])); }
      );
      // A count of zero is quiet (no green or red accent on its card).
      COUNTS.forEach(function (name) {
        field(name).forEach(function (el) {
          if (el.parentElement) el.parentElement.classList.toggle("bulkops-zero", !op[name]);
        });
      });
      const timed = op.duration_seconds >= MIN_RATE_SECONDS;
      const rate = timed ? op.processed / op.duration_seconds : 0;
      setText("rate", rate ? Math.round(rate).toLocaleString() + "/s" : "—");
      setText("duration", seconds(op.duration_seconds));
      // A large operation's slices come with the polled state (events do not carry them).
      if (op.slices) setText("slices", op.slices.running + " of " + op.slices.total);
      // Paused, pausing or resumed: the buttons change (Pause / Resume), so the
      // server-rendered actions are swapped in, as on the final state.
      const control = op.status + (op.pause_requested ? "+pausing" : "");
      const before = root.dataset.control || "";
      const controlChanged = before !== control && (before + control).indexOf("paus") !== -1;
      root.dataset.control = control;
      last = op;
      root.dataset.status = op.status;
      if (FINAL.indexOf(op.status) !== -1) {
        setText("eta", "done");
        finish();
      } else {
        setText("eta", op.status === "paused" ? "paused" : seconds(op.eta_seconds));
        if (controlChanged) swapIn(false);
      }
    }

    // Swap in the server-rendered state: failed items, download link, the buttons.
    function swapIn(final) {
      fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) { return response.ok ? response.text() : Promise.reject(response); })
        .then(function (html) {
          const doc = new DOMParser().parseFromString(html, "text/html");
          const fresh = doc.getElementById("bulk-operation");
          if (fresh && (final || FINAL.indexOf(fresh.dataset.status) === -1)) {
            root.innerHTML = fresh.innerHTML;
            paintBar(root);
            if (final) root.dataset.finished = "1";
            root.dataset.status = fresh.dataset.status;
            if (!final && last) render(last); // the page may be older than the last event
          }
        })
        .catch(function () { if (final) live("finished — refresh the page for the details"); });
    }

    function finish() {
      if (finished) return;
      finished = true;
      clearTimeout(pollTimer);
      if (socket) socket.close();
      swapIn(true);
    }

    function poll() {
      if (finished) return;
      fetch(statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          const type = response.headers.get("Content-Type") || "";
          if (!response.ok || type.indexOf("application/json") === -1) return Promise.reject(response);
          return response.json();
        })
        .then(function (op) {
          if (!socketOpen) live("live (polling)");
          render(op);
        })
        .catch(function () { if (!socketOpen) live("connection lost — retrying"); })
        .finally(schedule);
    }

    function schedule() {
      if (finished) return;
      clearTimeout(pollTimer);
      pollTimer = setTimeout(poll, socketOpen ? SLOW_POLL_MS : FAST_POLL_MS);
    }

    function connect() {
      if (finished || !("WebSocket" in window)) return;
      const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      try {
        socket = new WebSocket(scheme + window.location.host + root.dataset.wsPath);
      } catch (e) {
        return;
      }
      socket.addEventListener("open", function () {
        reconnectDelay = 1000;
        socket.send(JSON.stringify({ type: "subscribe", operation_id: opId }));
      });
      socket.addEventListener("message", function (event) {
        let data;
        try { data = JSON.parse(event.data); } catch (e) { return; }
        if (data.type === "subscribed") {
          socketOpen = true;
          live("live (WebSocket)");
          schedule();
          render(data.operation);
        } else if (data.type === "error" && data.operation_id === opId) {
          // Not this user's operation (a superuser's view): polling brings it.
          socketRefused = true;
          socket.close();
        } else if (data.type && data.type.indexOf("bulk_operation_") === 0) render(data);
      });
      socket.addEventListener("close", function () {
        const wasOpen = socketOpen;
        socketOpen = false;
        if (finished || socketRefused) return;
        schedule();
        // Reconnect with back-off; polling keeps the page current meanwhile.
        setTimeout(connect, wasOpen ? 1000 : Math.min((reconnectDelay *= 2), 30000));
      });
    }

    if (finished) return;
    poll();
    connect();
  }

  function init() {
    const root = document.getElementById("bulk-operation");
    if (!root) return;
    paintBar(root);
    start(root);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
