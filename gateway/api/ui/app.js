/* The gateway's session page: start an agent session, watch its events over Server-Sent
 * Events, answer its questions and approvals, cancel it, reopen a recent one.
 *
 * No framework, no build step. Every text from the API is put on the page with
 * textContent, never innerHTML. Plain scripts, loaded in order by index.html, sharing one
 * namespace (window.GatewayPage):
 *
 *   dom.js       DOM helpers, formatting, the error line
 *   api.js       the key, REST calls, errors in words, the event stream (SSE over fetch)
 *   timeline.js  the session's events, each once; calls with their results
 *   ask.js       the answer form and the approval card, and sending them
 *   sessions.js  the recent sessions
 *   app.js       this: the session shown (its state and summary), the wiring */
(function (page) {
  "use strict";

  var dom = page.dom;
  var api = page.api;
  var timeline = page.timeline;
  var ask = page.ask;
  var sessions = page.sessions;
  var $ = dom.$;
  var el = dom.el;
  var clear = dom.clear;
  var asNumber = dom.asNumber;
  var showError = dom.showError;
  var hideError = dom.hideError;

  var FINAL = ["completed", "failed", "canceled", "rejected"];

  // ---- the session being shown -------------------------------------------------------

  var current = null;
  /* { id, links, view, final, stream: {close()} } */

  function open(id, links) {
    close();
    hideError();
    current = { id: id, links: links || {}, view: null, final: false, stream: null };
    if (location.hash !== "#" + id) history.replaceState(null, "", "#" + id);
    $("session-id").textContent = id;
    timeline.reset();
    $("reply").textContent = "";
    $("reply-card").hidden = true;
    ask.hide();
    $("session-error").hidden = true;
    $("session-message").textContent = "";
    clear($("spent"));
    setStatus("submitted");
    sessions.markOpen();
    refreshView();
    connect();
  }

  function close() {
    if (!current) return;
    if (current.stream) current.stream.close();
    current = null;
    setConnection("idle", "not connected");
  }

  function setStatus(status) {
    var node = $("status");
    node.textContent = status ? status.replace("_", " ") : "none";
    node.setAttribute("data-status", status || "");
    var final = FINAL.indexOf(status) >= 0;
    $("cancel").disabled = !current || final;
    // The session's entry in the recent list says the same.
    if (current) sessions.markStatus(current.id, status);
    if (final) ask.hide();
  }

  function setConnection(state, text) {
    var node = $("connection");
    node.setAttribute("data-state", state);
    node.textContent = text;
  }

  /** Show what GET /sessions/{id} (or a snapshot frame) says of the session. */
  function showView(view) {
    if (!current || !view || view.id !== current.id) return;
    current.view = view;
    setStatus(view.status);
    if (FINAL.indexOf(view.status) >= 0) current.final = true;
    $("session-message").textContent = view.message || (view.flow ? "flow " + view.flow : "");
    showSpent(view);
    timeline.nameCalls(view);
    if (view.reply) showReply(view.reply);
    var problem = $("session-error");
    if (view.error) {
      problem.textContent = view.error;
      problem.hidden = false;
    } else {
      problem.hidden = true;
    }
    ask.show(view);
  }

  function showReply(text) {
    $("reply").textContent = text;
    $("reply-card").hidden = false;
  }

  function showSpent(view) {
    var list = $("spent");
    clear(list);
    var spent = view.spent || {};
    var budgets = view.budgets || {};
    var tokens = null;
    if (asNumber(spent.input_tokens) !== null || asNumber(spent.output_tokens) !== null) {
      tokens = (spent.input_tokens || 0) + (spent.output_tokens || 0);
    }
    var rows = [
      ["turns", spent.turns, budgets.turns],
      ["tool calls", spent.tool_calls, budgets.tool_calls],
      ["tokens", tokens, budgets.tokens],
      ["cost (USD)", spent.cost_usd, budgets.cost_usd],
      ["seconds", spent.seconds, budgets.wall_seconds],
      ["violations", spent.violations, budgets.violations],
    ];
    rows.forEach(function (row) {
      if (row[1] === undefined || row[1] === null) return;
      var value = typeof row[1] === "number" && row[0] === "cost (USD)" ? row[1].toFixed(4) : row[1];
      if (row[0] === "tokens" && tokens) value = tokens + " (" + (spent.input_tokens || 0) + " in, " + (spent.output_tokens || 0) + " out)";
      var limit = row[2] !== undefined && row[2] !== null ? " / " + row[2] : "";
      var item = el("div", "spent-item", null, { "data-testid": "spent-" + row[0].replace(/[^a-z]+/g, "-") });
      item.appendChild(el("dt", null, row[0]));
      item.appendChild(el("dd", null, value + limit));
      list.appendChild(item);
    });
    var confidence = Array.isArray(view.confidence) ? view.confidence.filter(asNumber) : [];
    if (confidence.length) {
      var item = el("div", "spent-item", null, { "data-testid": "spent-confidence" });
      item.appendChild(el("dt", null, "confidence"));
      item.appendChild(el("dd", null, confidence.map(function (c) { return c.toFixed(2); }).join(" → ")));
      list.appendChild(item);
    }
    var calls = Array.isArray(view.calls) ? view.calls : [];
    var refused = calls.filter(function (c) { return c && c.decision && c.decision !== "allowed"; }).length;
    if (refused) {
      var bad = el("div", "spent-item refused", null, { "data-testid": "spent-refused" });
      bad.appendChild(el("dt", null, "refused calls"));
      bad.appendChild(el("dd", null, refused));
      list.appendChild(bad);
    }
  }

  function refreshView() {
    if (!current) return Promise.resolve();
    var id = current.id;
    return api.request("GET", api.sessionPath(current, "self"))
      .then(function (view) {
        showView(view);
      })
      .catch(function (err) {
        if (current && current.id === id) showError(api.failure(err));
      });
  }

  // ---- its event stream --------------------------------------------------------------

  function connect() {
    var session = current;
    session.stream = api.follow(api.sessionPath(session, "events"), {
      connection: setConnection,
      frame: handleFrame,
      over: function () { return session.final; },
      ended: refreshView,
      refused: function (err) { showError(err.message); },
    });
  }

  function handleFrame(data, streamId) {
    if (!data || typeof data !== "object") return;
    var type = data.type;
    if (type === "ping") return;
    if (type === "snapshot") {
      if (data.session) showView(data.session);
      return;
    }
    if (type === "gap") {
      timeline.gap(data);
      refreshView();
      return;
    }
    timeline.add(data, streamId);
  }

  function onState(to) {
    setStatus(to);
    if (FINAL.indexOf(to) >= 0) current.final = true;
    if (to === "working") ask.hide();
    // What the session waits for (and an approval's calls), its spending, its reply:
    // the view says; the events do not all carry them.
    if (to === "input_required" || current.final) refreshView();
  }

  // ---- actions -----------------------------------------------------------------------

  function start(event) {
    event.preventDefault();
    hideError();
    api.keepKey();
    var body = {};
    var message = $("message").value.trim();
    var flow = $("flow").value.trim();
    var intent = $("intent").value.trim();
    var inputs = $("inputs").value.trim();
    if (message) body.message = message;
    if (flow) body.flow = flow;
    if (intent) body.intent = intent;
    if (inputs) {
      try {
        body.inputs = JSON.parse(inputs);
      } catch (err) {
        showError("The inputs are not valid JSON: " + err.message);
        return;
      }
      if (!body.inputs || typeof body.inputs !== "object" || Array.isArray(body.inputs)) {
        showError("The inputs must be a JSON object, like {\"order_id\": \"ORD-100001\"}.");
        return;
      }
    }
    if (!body.message && !body.flow) {
      showError("Write a message, or name a flow to run.");
      return;
    }
    var button = $("start");
    button.disabled = true;
    api.request("POST", "sessions", body)
      .then(function (created) {
        open(created.id, created.links);
        if (created.status) setStatus(created.status);
        $("message").value = "";
        sessions.load(false);
      })
      .catch(function (err) {
        showError(api.failure(err));
      })
      .then(function () {
        button.disabled = false;
      });
  }

  function cancel() {
    if (!current) return;
    hideError();
    var button = $("cancel");
    button.disabled = true;
    api.request("POST", api.sessionPath(current, "cancel"), { mode: $("cancel-mode").value })
      .then(function () {
        refreshView();
      })
      .catch(function (err) {
        showError(api.failure(err));
        button.disabled = !current || current.final;
      });
  }

  // ---- wiring ------------------------------------------------------------------------

  function init() {
    timeline.wire({ state: onState, reply: showReply });
    ask.wire({
      session: function () { return current; },
      status: setStatus,
      refresh: refreshView,
    });
    sessions.wire({
      open: function (id) { open(id); },
      shown: function () { return current ? current.id : null; },
    });
    var stored = api.storedKey();
    if (stored) $("api-key").value = stored;
    $("api-key").addEventListener("change", function () {
      api.keepKey();
      sessions.load(false);
    });
    $("api-key").addEventListener("input", api.keepKey);
    $("key-form").addEventListener("submit", function (event) {
      event.preventDefault();
      api.keepKey();
      sessions.load(false);
    });
    $("key-forget").addEventListener("click", function () {
      $("api-key").value = "";
      api.keepKey();
      close();
      sessions.forget();
    });
    $("start-form").addEventListener("submit", start);
    $("cancel").addEventListener("click", cancel);
    $("error-close").addEventListener("click", hideError);
    // Ctrl/Cmd+Enter in the message starts the session.
    $("message").addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) start(event);
    });
    if (stored) {
      sessions.load(false);
      var wanted = location.hash.replace(/^#/, "");
      if (/^[A-Za-z0-9_-]+$/.test(wanted)) open(wanted);
    }
    window.addEventListener("hashchange", function () {
      var wanted = location.hash.replace(/^#/, "");
      if (wanted && /^[A-Za-z0-9_-]+$/.test(wanted) && (!current || current.id !== wanted) && api.apiKey()) open(wanted);
    });
    document.documentElement.setAttribute("data-ready", "true");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})((window.GatewayPage = window.GatewayPage || {}));
