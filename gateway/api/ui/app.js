/* The gateway's session page: start an agent session, watch its events over Server-Sent
 * Events, answer its questions and approvals, cancel it, reopen a recent one.
 *
 * No framework, no build step. Every text from the API is put on the page with
 * textContent, never innerHTML. The API key lives in sessionStorage (this tab only) and
 * goes in the Authorization header, never in a URL. EventSource cannot send that header,
 * so the event stream is read with fetch and parsed here, and resumed with Last-Event-ID
 * after a dropped connection. */
(function () {
  "use strict";

  var KEY_STORE = "gateway.apiKey";
  var FINAL = ["completed", "failed", "canceled", "rejected"];
  var RETRY_MIN_MS = 500;
  var RETRY_MAX_MS = 10000;

  var ERROR_WORDS = {
    400: "The gateway could not use that request",
    401: "The gateway did not accept the key: check it, or paste a new one",
    403: "This key may not do that",
    404: "The gateway does not know that session (it may have expired)",
    409: "The session is not waiting for that now",
    413: "That is too long for the gateway",
    422: "The gateway could not use that request",
    429: "Too many requests: wait a moment and try again",
    503: "The gateway is not ready: try again in a moment",
  };

  // ---- small DOM helpers -------------------------------------------------------------

  function $(id) {
    return document.getElementById(id);
  }

  /** An element with a class, text (set as textContent) and attributes. */
  function el(tag, className, text, attrs) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        if (attrs[name] !== undefined && attrs[name] !== null) node.setAttribute(name, String(attrs[name]));
      });
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function pretty(value) {
    if (typeof value === "string") {
      try {
        return JSON.stringify(JSON.parse(value), null, 2);
      } catch (_) {
        return value;
      }
    }
    try {
      return JSON.stringify(value, null, 2);
    } catch (_) {
      return String(value);
    }
  }

  function when(seconds) {
    if (typeof seconds !== "number") return "";
    var date = new Date(seconds * 1000);
    return date.toLocaleString();
  }

  function short(text, length) {
    text = text || "";
    return text.length > length ? text.slice(0, length - 1) + "…" : text;
  }

  function asNumber(value) {
    return typeof value === "number" && isFinite(value) ? value : null;
  }

  // ---- the key -----------------------------------------------------------------------

  function apiKey() {
    return ($("api-key").value || "").trim();
  }

  function keepKey() {
    var key = apiKey();
    try {
      if (key) sessionStorage.setItem(KEY_STORE, key);
      else sessionStorage.removeItem(KEY_STORE);
    } catch (_) {
      /* storage may be disabled: the field still holds it */
    }
  }

  // ---- errors ------------------------------------------------------------------------

  function showError(text) {
    $("error-text").textContent = text;
    $("error").hidden = false;
  }

  function hideError() {
    $("error").hidden = true;
    $("error-text").textContent = "";
  }

  /** An error the API answered, or a failure to reach it, in words for a person. */
  function ApiError(status, code, detail) {
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.message = describe(status, code, detail);
  }

  function describe(status, code, detail) {
    var words = ERROR_WORDS[status] || (status >= 500 ? "The gateway failed to answer" : "The request failed");
    var said = detail || code;
    return said ? words + ": " + said + " (" + status + ")" : words + " (" + status + ")";
  }

  function failure(err) {
    if (err instanceof ApiError) return err.message;
    if (err && err.name === "AbortError") return "";
    return "Could not reach the gateway: " + ((err && err.message) || String(err));
  }

  // ---- REST --------------------------------------------------------------------------

  /** An absolute URL for a path of the API: relative to the page, so that a gateway
   * served under a prefix works too; a link the API gave in full is kept. */
  function apiUrl(path) {
    if (/^https?:\/\//i.test(path)) return path;
    return new URL(String(path).replace(/^\/+/, ""), document.baseURI).toString();
  }

  function headers(extra) {
    var result = { Accept: "application/json" };
    var key = apiKey();
    if (key) result.Authorization = "Bearer " + key;
    Object.keys(extra || {}).forEach(function (name) {
      result[name] = extra[name];
    });
    return result;
  }

  function request(method, path, body) {
    if (!apiKey()) {
      return Promise.reject(new ApiError(401, "no_key", "paste an API key first"));
    }
    var options = { method: method, headers: headers(), cache: "no-store" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(apiUrl(path), options).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        if (text) {
          try {
            data = JSON.parse(text);
          } catch (_) {
            data = null;
          }
        }
        if (!response.ok) {
          var code = data && typeof data.error === "string" ? data.error : "";
          var detail = data && typeof data.detail === "string" ? data.detail : "";
          if (!code && !detail && text && text.length < 300) detail = text.trim();
          throw new ApiError(response.status, code, detail);
        }
        return data;
      });
    });
  }

  // ---- the session being shown -------------------------------------------------------

  var current = null;
  /* { id, links, view, lastEventId, seen: Set, controller, retry, timer, final,
       intents: {key: element}, count } */

  function sessionPath(id, what) {
    var links = current && current.id === id ? current.links || {} : {};
    var enc = encodeURIComponent(id);
    switch (what) {
      case "self":
        return links.self || "sessions/" + enc;
      case "events":
        return links.events || "events/" + enc;
      case "interact":
        return links.interact || "sessions/" + enc + "/interact";
      case "cancel":
        return links.cancel || "sessions/" + enc + "/cancel";
      default:
        return "sessions/" + enc + "/" + what;
    }
  }

  function open(id, links) {
    close();
    hideError();
    current = {
      id: id,
      links: links || {},
      view: null,
      lastEventId: null,
      seen: new Set(),
      controller: null,
      retry: RETRY_MIN_MS,
      timer: null,
      final: false,
      intents: {},
      count: 0,
    };
    if (location.hash !== "#" + id) history.replaceState(null, "", "#" + id);
    $("session-id").textContent = id;
    clear($("events"));
    $("event-count").textContent = "0 events";
    $("reply").textContent = "";
    $("reply-card").hidden = true;
    $("ask").hidden = true;
    $("approval").hidden = true;
    $("session-error").hidden = true;
    $("session-message").textContent = "";
    clear($("spent"));
    setStatus("submitted");
    markOpen();
    refreshView();
    connect();
  }

  function close() {
    if (!current) return;
    current.closed = true;
    if (current.timer) clearTimeout(current.timer);
    if (current.controller) current.controller.abort();
    current = null;
    setConnection("idle", "not connected");
  }

  function setStatus(status) {
    var node = $("status");
    node.textContent = status ? status.replace("_", " ") : "none";
    node.setAttribute("data-status", status || "");
    var final = FINAL.indexOf(status) >= 0;
    $("cancel").disabled = !current || final;
    if (current) {
      // The session's entry in the recent list says the same.
      var items = $("sessions").querySelectorAll("li[data-id]");
      Array.prototype.forEach.call(items, function (item) {
        if (item.getAttribute("data-id") !== current.id) return;
        item.setAttribute("data-status", status);
        var badge = item.querySelector(".status");
        if (badge) {
          badge.textContent = status.replace("_", " ");
          badge.setAttribute("data-status", status);
        }
      });
    }
    if (final) {
      $("ask").hidden = true;
      $("approval").hidden = true;
    }
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
    nameCalls(view);
    if (view.reply) showReply(view.reply);
    var problem = $("session-error");
    if (view.error) {
      problem.textContent = view.error;
      problem.hidden = false;
    } else {
      problem.hidden = true;
    }
    showAsk(view);
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

  /** The answer form or the approval card, as the session's waiting says. */
  function showAsk(view) {
    var waiting = view.status === "input_required" ? view.waiting : null;
    var ask = $("ask");
    var approval = $("approval");
    if (waiting === "approval" && view.approval) {
      ask.hidden = true;
      showApproval(view);
      return;
    }
    approval.hidden = true;
    if (waiting === "question" || waiting === "confidence" || (waiting && !view.approval)) {
      var wasHidden = ask.hidden;
      $("question").textContent = view.question || "The session waits for your answer.";
      ask.setAttribute("data-waiting", waiting);
      $("answer").placeholder = waiting === "confidence" ? "go ahead? (yes / no, and why)" : "your answer";
      ask.hidden = false;
      $("answer-send").disabled = false;
      if (wasHidden) $("answer").focus();
    } else {
      ask.hidden = true;
    }
  }

  function showApproval(view) {
    var card = $("approval");
    var list = $("approval-calls");
    var approvalId = view.approval.id;
    if (card.getAttribute("data-approval") === String(approvalId) && !card.hidden) return;
    card.setAttribute("data-approval", String(approvalId));
    $("approval-question").textContent = view.question || "";
    clear(list);
    (view.approval.calls || []).forEach(function (call, index) {
      var item = el("li", "held-call", null, { "data-testid": "approval-call", "data-index": index });
      item.appendChild(el("strong", "tool", call.tool));
      if (call.why) item.appendChild(el("p", "why", call.why));
      var label = el("label", "muted", "Arguments (edit to run with others)", { for: "approval-arguments-" + index });
      var area = el("textarea", "arguments", null, {
        id: "approval-arguments-" + index,
        "data-testid": "approval-arguments",
        "data-index": index,
        rows: 4,
        spellcheck: "false",
      });
      area.value = pretty(call.arguments === undefined ? {} : call.arguments);
      area.setAttribute("data-original", area.value);
      area.addEventListener("input", approvalEdited);
      item.appendChild(label);
      item.appendChild(area);
      list.appendChild(item);
    });
    $("approval-message").value = "";
    $("approve").textContent = "Approve";
    $("approve").disabled = false;
    $("reject").disabled = false;
    card.hidden = false;
  }

  function approvalEdited() {
    $("approve").textContent = editedArguments() ? "Approve with edits" : "Approve";
  }

  /** The held calls' arguments the user changed, by call index; null when none. A
   * textarea that is no JSON object throws, with its index. */
  function editedArguments() {
    var edits = null;
    var areas = $("approval-calls").querySelectorAll("textarea[data-index]");
    Array.prototype.forEach.call(areas, function (area) {
      if (area.value === area.getAttribute("data-original")) return;
      var parsed;
      try {
        parsed = JSON.parse(area.value);
      } catch (_) {
        throw new Error("the arguments of call " + (Number(area.getAttribute("data-index")) + 1) + " are not valid JSON");
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
        throw new Error("the arguments of call " + (Number(area.getAttribute("data-index")) + 1) + " must be a JSON object");
      }
      edits = edits || {};
      edits[area.getAttribute("data-index")] = parsed;
    });
    return edits;
  }

  function refreshView() {
    if (!current) return Promise.resolve();
    var id = current.id;
    return request("GET", sessionPath(id, "self"))
      .then(function (view) {
        showView(view);
      })
      .catch(function (err) {
        if (current && current.id === id) showError(failure(err));
      });
  }

  // ---- the event stream (SSE over fetch) ---------------------------------------------

  function connect() {
    if (!current || current.closed) return;
    var session = current;
    var controller = new AbortController();
    session.controller = controller;
    var extra = { Accept: "text/event-stream" };
    if (session.lastEventId) extra["Last-Event-ID"] = session.lastEventId;
    setConnection("connecting", session.lastEventId ? "reconnecting…" : "connecting…");
    fetch(apiUrl(sessionPath(session.id, "events")), {
      headers: headers(extra),
      cache: "no-store",
      signal: controller.signal,
    })
      .then(function (response) {
        if (!response.ok) {
          return response.text().then(function (text) {
            var data = null;
            try {
              data = JSON.parse(text);
            } catch (_) {
              data = null;
            }
            throw new ApiError(response.status, data && data.error, data && data.detail);
          });
        }
        if (!response.body) throw new Error("this browser cannot read a streamed response");
        setConnection("live", "live");
        return readFrames(response.body, session);
      })
      .then(function () {
        if (session.closed) return;
        // The stream ended: the session is final, or the connection was cut.
        if (session.final) {
          setConnection("closed", "ended");
          refreshView();
          return;
        }
        schedule(session);
      })
      .catch(function (err) {
        if (session.closed || (err && err.name === "AbortError")) return;
        if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
          setConnection("closed", "stopped");
          showError(err.message);
          return;
        }
        schedule(session, err);
      });
  }

  function schedule(session, err) {
    if (session.closed || current !== session) return;
    var wait = session.retry;
    session.retry = Math.min(session.retry * 2, RETRY_MAX_MS);
    var why = err ? " (" + (failure(err) || "dropped") + ")" : "";
    setConnection("retrying", "connection dropped, reconnecting in " + Math.round(wait / 100) / 10 + " s" + why);
    session.timer = setTimeout(function () {
      session.timer = null;
      connect();
    }, wait);
  }

  /** Read an event stream's frames (text/event-stream) until it ends. */
  function readFrames(body, session) {
    var reader = body.getReader();
    var decoder = new TextDecoder("utf-8");
    var buffer = "";
    var frame = { data: [], id: null, sawId: false };

    function line(text) {
      if (text === "") {
        dispatch();
        return;
      }
      if (text.charAt(0) === ":") return; // a comment: keep-alive
      var colon = text.indexOf(":");
      var field = colon < 0 ? text : text.slice(0, colon);
      var value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.charAt(0) === " ") value = value.slice(1);
      if (field === "data") frame.data.push(value);
      else if (field === "id") {
        if (value.indexOf("\u0000") < 0) {
          frame.id = value;
          frame.sawId = true;
        }
      } else if (field === "retry") {
        var ms = parseInt(value, 10);
        if (ms >= 0) session.serverRetry = ms;
      }
    }

    function dispatch() {
      var data = frame.data.join("\n");
      var id = frame.sawId ? frame.id : null;
      frame = { data: [], id: null, sawId: false };
      if (id) session.lastEventId = id;
      if (!data) return;
      var parsed;
      try {
        parsed = JSON.parse(data);
      } catch (_) {
        return;
      }
      if (session.closed || current !== session) return;
      session.retry = session.serverRetry || RETRY_MIN_MS;
      handleFrame(parsed, id);
    }

    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) {
          buffer += decoder.decode();
          if (buffer) splitLines(true);
          return;
        }
        buffer += decoder.decode(chunk.value, { stream: true });
        splitLines(false);
        return pump();
      });
    }

    function splitLines(last) {
      var match;
      var pattern = /\r\n|\r|\n/g;
      var start = 0;
      while ((match = pattern.exec(buffer)) !== null) {
        // A lone \r at the very end may be the first half of \r\n: wait for more.
        if (match[0] === "\r" && match.index === buffer.length - 1 && !last) break;
        line(buffer.slice(start, match.index));
        start = match.index + match[0].length;
      }
      buffer = buffer.slice(start);
    }

    return pump();
  }

  // ---- frames and events -------------------------------------------------------------

  function handleFrame(data, streamId) {
    if (!data || typeof data !== "object") return;
    var type = data.type;
    if (type === "ping") return;
    if (type === "snapshot") {
      if (data.session) showView(data.session);
      return;
    }
    if (type === "gap") {
      addEvent("gap", "events lost", function (body) {
        body.appendChild(
          el("span", null, "The stream lost the events after " + (data.after || "the start") + " through " + (data.lost_through || "?") + "; the summary above is current.")
        );
      });
      refreshView();
      return;
    }
    var id = streamId || data.id;
    if (id) {
      if (current.seen.has(id)) return; // replayed after a reconnect
      current.seen.add(id);
    }
    renderEvent(data);
  }

  /** Append one timeline entry: its type, a title, and what `fill` puts in its body. */
  function addEvent(type, title, fill, extraClass) {
    var item = el("li", "event event-" + type.replace(/[^a-z_]/gi, "") + (extraClass ? " " + extraClass : ""), null, {
      "data-testid": "event",
      "data-type": type,
    });
    var head = el("div", "event-head");
    head.appendChild(el("span", "event-type", type));
    head.appendChild(el("span", "event-title", title));
    item.appendChild(head);
    var body = el("div", "event-body");
    if (fill) fill(body, item);
    if (body.firstChild) item.appendChild(body);
    $("events").appendChild(item);
    current.count += 1;
    $("event-count").textContent = current.count + (current.count === 1 ? " event" : " events");
    item.scrollIntoView({ block: "nearest" });
    return item;
  }

  function confidenceMeter(parent, value) {
    var number = asNumber(value);
    if (number === null) return;
    var wrap = el("span", "confidence", null, { "data-testid": "confidence" });
    var meter = el("meter", null, null, { min: 0, max: 1, low: 0.5, high: 0.8, optimum: 1, value: number });
    wrap.appendChild(meter);
    wrap.appendChild(el("span", null, number.toFixed(2)));
    parent.appendChild(wrap);
  }

  function block(parent, className, text) {
    parent.appendChild(el("pre", className, text));
  }

  function renderEvent(e) {
    var type = String(e.type || "event");
    switch (type) {
      case "accepted":
        addEvent(type, "session accepted", function (body) {
          if (e.message) body.appendChild(el("p", null, e.message));
        });
        break;
      case "state":
        addEvent(type, (e.from || "?") + " → " + (e.to || "?"), function (body) {
          if (e.why) body.appendChild(el("span", "muted", e.why));
        });
        if (e.to) onState(e.to);
        break;
      case "envelope":
        addEvent(type, String(e.kind || "envelope"), function (body) {
          confidenceMeter(body, e.confidence);
          if (e.reasoning) body.appendChild(el("p", "reasoning", e.reasoning));
          var usage = e.usage || {};
          var tokens = [];
          if (usage.input_tokens) tokens.push(usage.input_tokens + " in");
          if (usage.output_tokens) tokens.push(usage.output_tokens + " out");
          if (tokens.length) body.appendChild(el("span", "muted", "tokens: " + tokens.join(", ")));
        });
        break;
      case "invalid_envelope":
        addEvent(type, "the model's answer was no valid envelope", function (body) {
          if (e.problem) body.appendChild(el("p", null, e.problem));
          if (e.repair) body.appendChild(el("span", "muted", "repair turn " + e.repair));
        }, "warn");
        break;
      case "intent":
        var intent = addEvent(type, String(e.tool || "a tool"), function (body) {
          if (e.arguments !== undefined) block(body, "arguments", pretty(e.arguments));
        }, "call");
        if (e.key) current.intents[e.key] = intent;
        break;
      case "result":
        renderResult(e);
        break;
      case "question":
        addEvent(type, "asks", function (body) {
          body.appendChild(el("p", "question", e.text || ""));
        });
        break;
      case "answer":
        addEvent(type, "you answered", function (body) {
          body.appendChild(el("p", null, e.text || ""));
        });
        break;
      case "reply":
        addEvent(type, e.flow ? "flow " + e.flow + " replied" : "replied", function (body) {
          body.appendChild(el("p", "reply", e.text || ""));
        });
        if (typeof e.text === "string") showReply(e.text);
        break;
      case "approval_decided":
        addEvent(type, String(e.verdict || "decided"), function (body) {
          if (e.message) body.appendChild(el("p", null, e.message));
          if (e.arguments && Object.keys(e.arguments).length) block(body, "arguments", pretty(e.arguments));
        }, e.verdict === "reject" ? "refused" : "");
        break;
      case "budget":
        addEvent(type, "budget exhausted: " + (e.name || "?"), function (body) {
          body.appendChild(el("span", null, "used " + e.used + " of " + e.limit));
        }, "warn");
        break;
      case "tainted":
        addEvent(type, "read untrusted output", function (body) {
          var what = e.tool || (Array.isArray(e.definitions) ? "tool definitions: " + e.definitions.join(", ") : "");
          body.appendChild(el("span", null, what + "; calls not planned before need approval from now on"));
        }, "warn");
        break;
      case "plan":
        addEvent(type, e.goal ? "plan: " + e.goal : "plan", function (body) {
          body.appendChild(stepList(e.steps));
        });
        break;
      case "flow":
        addEvent(type, "flow " + (e.flow || ""), function (body) {
          body.appendChild(stepList(e.steps));
        });
        break;
      case "step":
        addEvent(type, (e.step || "?") + ": " + (e.status || ""), function (body) {
          if (e.attempt > 1) body.appendChild(el("span", "muted", "attempt " + e.attempt + " "));
          if (e.error) body.appendChild(el("p", null, e.error));
        }, e.status === "failed" ? "refused" : "");
        break;
      case "replan":
        addEvent(type, "step " + (e.step || "?") + " failed: the model takes over", function (body) {
          if (e.why) body.appendChild(el("p", null, e.why));
        }, "warn");
        break;
      case "outcome_unknown":
        addEvent(type, "calls of unknown outcome held", function (body) {
          if (Array.isArray(e.keys)) body.appendChild(el("span", "muted", e.keys.join(", ")));
        }, "warn");
        break;
      case "resumed":
        addEvent(type, "another run took over", null);
        break;
      default:
        addEvent(type, "", function (body) {
          var rest = {};
          Object.keys(e).forEach(function (name) {
            if (name !== "type" && name !== "id") rest[name] = e[name];
          });
          if (Object.keys(rest).length) block(body, "arguments", pretty(rest));
        });
    }
  }

  function stepList(steps) {
    var list = el("ol", "steps");
    (Array.isArray(steps) ? steps : []).forEach(function (step) {
      var text = (step.id ? step.id + ": " : "") + (step.tool || "");
      if (step.needs && step.needs.length) text += " (after " + step.needs.join(", ") + ")";
      list.appendChild(el("li", null, text));
    });
    return list;
  }

  function renderResult(e) {
    var outcome = String(e.outcome || "result");
    var refused = outcome === "refused";
    var bad = refused || outcome === "failed" || outcome === "timeout" || outcome === "not_resent" || e.is_error;
    var title = refused ? "refused: " + (e.decision || "not permitted") : outcome + (e.is_error ? " (the tool said it failed)" : "");
    var intent = e.key ? current.intents[e.key] : null;
    var fill = function (body) {
      if (e.text) block(body, "result-text", e.text);
      if (e.error) body.appendChild(el("p", null, e.error));
    };
    if (intent) {
      // The call's result goes with its intent: one card per call.
      var part = el("div", "call-result" + (refused ? " refused" : bad ? " failed" : " ok"), null, {
        "data-testid": "call-result",
        "data-outcome": outcome,
      });
      var head = el("div", "event-head");
      head.appendChild(el("span", "event-type", refused ? "refused" : outcome));
      head.appendChild(el("span", "event-title", refused ? "decision: " + (e.decision || "?") : e.is_error ? "the tool said it failed" : ""));
      part.appendChild(head);
      var body = el("div", "event-body");
      fill(body);
      if (body.firstChild) part.appendChild(body);
      intent.appendChild(part);
      intent.classList.add(refused ? "refused" : bad ? "failed" : "ok");
      intent.setAttribute("data-outcome", outcome);
      if (e.decision) intent.setAttribute("data-decision", e.decision);
      // Still counted, and findable as a result, for those who look for one.
      current.count += 1;
      $("event-count").textContent = current.count + " events";
      return;
    }
    var item = addEvent("result", title, fill, refused ? "refused" : bad ? "failed" : "ok");
    item.setAttribute("data-outcome", outcome);
    if (e.decision) item.setAttribute("data-decision", e.decision);
    if (e.key) {
      // A call refused before it was sent has no intent: the view's calls name its tool.
      item.setAttribute("data-key", e.key);
      item.setAttribute("data-untitled", "true");
      nameCalls(current.view);
    }
  }

  /** Put the tool's name on results that came without an intent, from the view's calls. */
  function nameCalls(view) {
    if (!view || !Array.isArray(view.calls)) return;
    view.calls.forEach(function (call) {
      if (!call || !call.key || !call.tool) return;
      var items = $("events").querySelectorAll("li[data-untitled][data-key]");
      Array.prototype.forEach.call(items, function (item) {
        if (item.getAttribute("data-key") !== call.key) return;
        item.removeAttribute("data-untitled");
        item.setAttribute("data-tool", call.tool);
        var title = item.querySelector(".event-title");
        if (title) title.textContent = call.tool + " " + title.textContent;
      });
    });
  }

  function onState(to) {
    setStatus(to);
    if (FINAL.indexOf(to) >= 0) current.final = true;
    if (to === "working") {
      $("ask").hidden = true;
      $("approval").hidden = true;
    }
    // What the session waits for (and an approval's calls), its spending, its reply:
    // the view says; the events do not all carry them.
    if (to === "input_required" || current.final) refreshView();
  }

  // ---- actions -----------------------------------------------------------------------

  function start(event) {
    event.preventDefault();
    hideError();
    keepKey();
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
    request("POST", "sessions", body)
      .then(function (created) {
        open(created.id, created.links);
        if (created.status) setStatus(created.status);
        $("message").value = "";
        loadSessions(false);
      })
      .catch(function (err) {
        showError(failure(err));
      })
      .then(function () {
        button.disabled = false;
      });
  }

  function sendAnswer(event) {
    event.preventDefault();
    if (!current) return;
    var text = $("answer").value.trim();
    if (!text) {
      showError("Write an answer first.");
      return;
    }
    hideError();
    var button = $("answer-send");
    button.disabled = true;
    var id = current.id;
    request("POST", sessionPath(id, "interact"), { message: text })
      .then(function (accepted) {
        $("answer").value = "";
        $("ask").hidden = true;
        if (accepted && accepted.status && current && current.id === id) setStatus(accepted.status);
      })
      .catch(function (err) {
        showError(failure(err));
        button.disabled = false;
      });
  }

  function decide(decision) {
    if (!current || !current.view || !current.view.approval) return;
    hideError();
    var approval = current.view.approval;
    var body = { decision: decision };
    var message = $("approval-message").value.trim();
    if (message) body.message = message;
    if (decision === "approve") {
      var edits;
      try {
        edits = editedArguments();
      } catch (err) {
        showError(err.message);
        return;
      }
      if (edits) {
        body.decision = "edit";
        body.arguments = edits;
      }
    }
    $("approve").disabled = true;
    $("reject").disabled = true;
    var path = sessionPath(current.id, "approvals/" + encodeURIComponent(approval.id));
    request("POST", path, body)
      .then(function () {
        $("approval").hidden = true;
        $("approval").removeAttribute("data-approval");
      })
      .catch(function (err) {
        showError(failure(err));
        $("approve").disabled = false;
        $("reject").disabled = false;
      });
  }

  function cancel() {
    if (!current) return;
    hideError();
    var button = $("cancel");
    button.disabled = true;
    request("POST", sessionPath(current.id, "cancel"), { mode: $("cancel-mode").value })
      .then(function () {
        refreshView();
      })
      .catch(function (err) {
        showError(failure(err));
        button.disabled = !current || current.final;
      });
  }

  // ---- recent sessions ---------------------------------------------------------------

  var nextCursor = null;

  function loadSessions(more) {
    if (!apiKey()) return Promise.resolve();
    var path = "sessions?limit=20" + (more && nextCursor ? "&cursor=" + encodeURIComponent(nextCursor) : "");
    return request("GET", path)
      .then(function (page) {
        var list = $("sessions");
        if (!more) clear(list);
        var sessions = (page && Array.isArray(page.sessions)) ? page.sessions : [];
        sessions.forEach(function (s) {
          list.appendChild(sessionItem(s));
        });
        nextCursor = page && page.next ? page.next : null;
        $("sessions-more").hidden = !nextCursor;
        $("sessions-empty").hidden = list.childNodes.length > 0;
        $("sessions-empty").textContent = "No sessions yet.";
        markOpen();
      })
      .catch(function (err) {
        showError(failure(err));
      });
  }

  function sessionItem(s) {
    var item = el("li", null, null, { "data-testid": "session-item", "data-id": s.id, "data-status": s.status });
    var button = el("button", "session-open", null, { type: "button", "data-testid": "session-open", "data-id": s.id });
    var top = el("span", "row spread");
    top.appendChild(el("span", "status small", String(s.status || "").replace("_", " "), { "data-status": s.status }));
    top.appendChild(el("span", "muted small", when(s.updated || s.created)));
    button.appendChild(top);
    button.appendChild(el("span", "session-text", short(s.message || s.id, 90)));
    button.addEventListener("click", function () {
      keepKey();
      open(s.id);
    });
    item.appendChild(button);
    return item;
  }

  function markOpen() {
    var items = $("sessions").querySelectorAll("li[data-id]");
    Array.prototype.forEach.call(items, function (item) {
      item.classList.toggle("current", !!current && item.getAttribute("data-id") === current.id);
    });
  }

  // ---- wiring ------------------------------------------------------------------------

  function init() {
    var stored = null;
    try {
      stored = sessionStorage.getItem(KEY_STORE);
    } catch (_) {
      stored = null;
    }
    if (stored) $("api-key").value = stored;
    $("api-key").addEventListener("change", function () {
      keepKey();
      loadSessions(false);
    });
    $("api-key").addEventListener("input", keepKey);
    $("key-form").addEventListener("submit", function (event) {
      event.preventDefault();
      keepKey();
      loadSessions(false);
    });
    $("key-forget").addEventListener("click", function () {
      $("api-key").value = "";
      keepKey();
      close();
      clear($("sessions"));
      $("sessions-empty").hidden = false;
      $("sessions-empty").textContent = "None loaded yet.";
    });
    $("start-form").addEventListener("submit", start);
    $("answer-form").addEventListener("submit", sendAnswer);
    $("approve").addEventListener("click", function () { decide("approve"); });
    $("reject").addEventListener("click", function () { decide("reject"); });
    $("cancel").addEventListener("click", cancel);
    $("error-close").addEventListener("click", hideError);
    $("sessions-refresh").addEventListener("click", function () {
      keepKey();
      hideError();
      loadSessions(false);
    });
    $("sessions-more").addEventListener("click", function () { loadSessions(true); });
    // Ctrl/Cmd+Enter in the message starts the session.
    $("message").addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) start(event);
    });
    if (stored) {
      loadSessions(false);
      var wanted = location.hash.replace(/^#/, "");
      if (/^[A-Za-z0-9_-]+$/.test(wanted)) open(wanted);
    }
    window.addEventListener("hashchange", function () {
      var wanted = location.hash.replace(/^#/, "");
      if (wanted && /^[A-Za-z0-9_-]+$/.test(wanted) && (!current || current.id !== wanted) && apiKey()) open(wanted);
    });
    document.documentElement.setAttribute("data-ready", "true");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
