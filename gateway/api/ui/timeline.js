/* The session page's timeline: one entry per event of the session shown, each event once
 * (a reconnected stream replays some); a tool call's result goes in its call's entry. */
(function (page) {
  "use strict";

  var dom = page.dom;
  var $ = dom.$;
  var el = dom.el;
  var clear = dom.clear;
  var pretty = dom.pretty;
  var asNumber = dom.asNumber;

  var hooks = null; /* { state(to), reply(text) }: what the page does on those events */
  var shown = null; /* { count, seen: Set, intents: {key: element}, view } */

  /** Start over, empty, for a session opened. */
  function reset() {
    shown = { count: 0, seen: new Set(), intents: {}, view: null };
    clear($("events"));
    $("event-count").textContent = "0 events";
  }

  /** An event of the stream (`streamId`: the frame's id), unless it was shown already. */
  function add(data, streamId) {
    var id = streamId || data.id;
    if (id) {
      if (shown.seen.has(id)) return; // replayed after a reconnect
      shown.seen.add(id);
    }
    renderEvent(data);
  }

  /** The stream lost events: say which. */
  function gap(data) {
    addEvent("gap", "events lost", function (body) {
      body.appendChild(
        el("span", null, "The stream lost the events after " + (data.after || "the start") + " through " + (data.lost_through || "?") + "; the summary above is current.")
      );
    });
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
    shown.count += 1;
    $("event-count").textContent = shown.count + (shown.count === 1 ? " event" : " events");
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
        if (e.to) hooks.state(e.to);
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
        if (e.key) shown.intents[e.key] = intent;
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
        if (typeof e.text === "string") hooks.reply(e.text);
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
    var intent = e.key ? shown.intents[e.key] : null;
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
      shown.count += 1;
      $("event-count").textContent = shown.count + " events";
      return;
    }
    var item = addEvent("result", title, fill, refused ? "refused" : bad ? "failed" : "ok");
    item.setAttribute("data-outcome", outcome);
    if (e.decision) item.setAttribute("data-decision", e.decision);
    if (e.key) {
      // A call refused before it was sent has no intent: the view's calls name its tool.
      item.setAttribute("data-key", e.key);
      item.setAttribute("data-untitled", "true");
      nameCalls(shown.view);
    }
  }

  /** Put the tool's name on results that came without an intent, from the view's calls;
   * the view is kept, for results that come later. */
  function nameCalls(view) {
    shown.view = view;
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

  page.timeline = {
    /** hooks: { state(to): a state event came, reply(text): a reply came }. */
    wire: function (given) {
      hooks = given;
    },
    reset: reset,
    add: add,
    gap: gap,
    nameCalls: nameCalls,
  };
})((window.GatewayPage = window.GatewayPage || {}));
