/* The gateway's chat widget: one script tag on any page runs an agent session over the
 * gateway's WebSocket and shows it in a small chat box, in a shadow DOM of its own.
 *
 *   <div id="chat"></div>
 *   <script src="https://gw.example/widget.js" data-gateway="https://gw.example"
 *           data-token="<a token from POST /tokens>" data-target="#chat"></script>
 *
 * or, from a script: GatewayWidget.mount(element, {url, token, title}), where `token` is
 * a token, or a function returning one (or a promise of one): with a function, the widget
 * reconnects after a dropped connection and starts a new session after one ended, since
 * a token is good for one connection only. The token is short-lived and single-use; never
 * put an API key here. No dependencies; every text is set with textContent. */
(function () {
  "use strict";

  if (window.GatewayWidget && window.GatewayWidget.mount) {
    // Loaded twice: the first copy mounts this tag's widget too.
    autoMount(document.currentScript, window.GatewayWidget.mount);
    return;
  }

  var FINAL = ["completed", "failed", "canceled", "rejected"];

  var CSS = [
    ":host{all:initial;display:block;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#1d2330}",
    "*{box-sizing:border-box}",
    "[hidden]{display:none!important}",
    ".box{display:flex;flex-direction:column;width:100%;max-width:420px;height:460px;border:1px solid #d9dde5;border-radius:10px;background:#fff;overflow:hidden}",
    ".head{display:flex;align-items:center;justify-content:space-between;gap:8px;padding:8px 12px;background:#2f5bd3;color:#fff}",
    ".title{font-weight:600}",
    ".status{font-size:11px;text-transform:uppercase;letter-spacing:.04em;opacity:.9}",
    ".stop{font:inherit;font-size:12px;background:transparent;color:#fff;border:1px solid rgba(255,255,255,.6);border-radius:6px;padding:2px 8px;cursor:pointer}",
    ".log{flex:1;overflow-y:auto;padding:10px;display:flex;flex-direction:column;gap:6px;background:#f7f8fa}",
    ".msg{max-width:85%;padding:6px 10px;border-radius:10px;white-space:pre-wrap;overflow-wrap:anywhere}",
    ".user{align-self:flex-end;background:#2f5bd3;color:#fff;border-bottom-right-radius:2px}",
    ".question,.reply{align-self:flex-start;background:#fff;border:1px solid #d9dde5;border-bottom-left-radius:2px}",
    ".question{border-color:#b9c8f5;background:#eef3ff}",
    ".reply{border-color:#9fd3b6;background:#e8f5ee}",
    ".tool,.note{align-self:center;max-width:100%;font-size:12px;color:#667085;background:none;padding:0 4px}",
    ".tool.refused,.tool.failed{color:#b42318}",
    ".error{align-self:stretch;max-width:100%;font-size:13px;color:#b42318;background:#fdecea;border:1px solid #f3b8b2}",
    ".typing{align-self:flex-start;font-size:12px;color:#667085;padding:0 4px}",
    ".approval{border-top:1px solid #e8c66f;background:#fff4db;padding:8px 10px;display:flex;flex-direction:column;gap:6px}",
    ".approval ul{margin:0;padding-left:18px;font-size:13px}",
    ".approval code{font-family:ui-monospace,Menlo,Consolas,'DejaVu Sans Mono',monospace;font-size:11px;overflow-wrap:anywhere}",
    ".row{display:flex;gap:6px;align-items:center}",
    ".form{display:flex;gap:6px;padding:8px;border-top:1px solid #d9dde5;background:#fff}",
    "input,textarea{flex:1;font:inherit;color:inherit;border:1px solid #d9dde5;border-radius:6px;padding:6px 8px;min-width:0;background:#fff}",
    "textarea{resize:none;height:38px}",
    "button.act{font:inherit;border:1px solid #2f5bd3;background:#2f5bd3;color:#fff;border-radius:6px;padding:6px 12px;cursor:pointer}",
    "button.act.no{background:#b42318;border-color:#b42318}",
    "button:disabled{opacity:.5;cursor:default}",
    "input:focus,textarea:focus,button:focus-visible{outline:2px solid #2f5bd3;outline-offset:1px}",
  ].join("\n");

  var instances = typeof WeakMap === "function" ? new WeakMap() : null;

  function el(doc, tag, className, text, attrs) {
    var node = doc.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        node.setAttribute(name, String(attrs[name]));
      });
    }
    return node;
  }

  function compact(value) {
    var text;
    try {
      text = typeof value === "string" ? value : JSON.stringify(value);
    } catch (_) {
      text = String(value);
    }
    return text && text.length > 160 ? text.slice(0, 159) + "…" : text || "";
  }

  /** The WebSocket URL of `path` on the gateway at `base`. */
  function socketUrl(base, path, query) {
    var url = new URL(base, document.baseURI);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.pathname = url.pathname.replace(/\/+$/, "") + path;
    url.search = "";
    url.hash = "";
    Object.keys(query).forEach(function (name) {
      if (query[name] !== undefined && query[name] !== null && query[name] !== "") url.searchParams.set(name, query[name]);
    });
    return url.toString();
  }

  function Widget(host, options) {
    this.host = host;
    this.options = options || {};
    this.url = this.options.url || this.options.gateway || location.origin;
    this.token = this.options.token;
    this.socket = null;
    this.sessionId = null;
    this.status = null;
    this.waiting = null;
    this.approval = null;
    this.lastId = null;
    this.seen = {};
    this.calls = {};
    this.pending = [];
    this.closedByUs = false;
    this.optimistic = null;
    this.tokenUsed = false;
    this.retries = 0;
    this.build();
  }

  Widget.prototype.build = function () {
    var root = this.host.shadowRoot || this.host.attachShadow({ mode: "open" });
    while (root.firstChild) root.removeChild(root.firstChild);
    this.root = root;
    var doc = this.host.ownerDocument || document;
    this.doc = doc;
    var sheet = null;
    try {
      if (typeof CSSStyleSheet === "function" && "adoptedStyleSheets" in root) {
        sheet = new CSSStyleSheet();
        sheet.replaceSync(CSS);
        root.adoptedStyleSheets = [sheet];
      }
    } catch (_) {
      sheet = null;
    }
    if (!sheet) root.appendChild(el(doc, "style", null, CSS));

    var box = el(doc, "div", "box", null, { "data-testid": "widget", part: "box" });
    this.box = box;
    var head = el(doc, "div", "head");
    var left = el(doc, "div");
    left.appendChild(el(doc, "div", "title", this.options.title || "Assistant"));
    this.statusNode = el(doc, "div", "status", "ready", { "data-testid": "widget-status", "data-status": "" });
    left.appendChild(this.statusNode);
    head.appendChild(left);
    this.stopButton = el(doc, "button", "stop", "Stop", { type: "button", "data-testid": "widget-cancel", hidden: "" });
    head.appendChild(this.stopButton);
    box.appendChild(head);

    this.log = el(doc, "div", "log", null, { "data-testid": "widget-messages", role: "log", "aria-live": "polite" });
    this.typing = el(doc, "div", "typing", "…", { "data-testid": "widget-typing", hidden: "" });
    this.log.appendChild(this.typing);
    box.appendChild(this.log);

    this.approvalNode = el(doc, "div", "approval", null, { "data-testid": "widget-approval", hidden: "" });
    this.approvalText = el(doc, "div", null, "");
    this.approvalList = el(doc, "ul");
    this.approvalMessage = el(doc, "input", null, null, {
      type: "text",
      placeholder: "why (optional)",
      "data-testid": "widget-approval-message",
      "aria-label": "Why (optional)",
    });
    var buttons = el(doc, "div", "row");
    this.approveButton = el(doc, "button", "act", "Approve", { type: "button", "data-testid": "widget-approve" });
    this.rejectButton = el(doc, "button", "act no", "Reject", { type: "button", "data-testid": "widget-reject" });
    buttons.appendChild(this.approveButton);
    buttons.appendChild(this.rejectButton);
    this.approvalNode.appendChild(this.approvalText);
    this.approvalNode.appendChild(this.approvalList);
    this.approvalNode.appendChild(this.approvalMessage);
    this.approvalNode.appendChild(buttons);
    box.appendChild(this.approvalNode);

    var form = el(doc, "form", "form", null, { "data-testid": "widget-form" });
    this.input = el(doc, "textarea", null, null, {
      "data-testid": "widget-input",
      placeholder: this.options.placeholder || "Type a message…",
      "aria-label": "Message",
      rows: 1,
    });
    this.sendButton = el(doc, "button", "act", "Send", { type: "submit", "data-testid": "widget-send" });
    form.appendChild(this.input);
    form.appendChild(this.sendButton);
    box.appendChild(form);
    root.appendChild(box);

    var self = this;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      self.submit();
    });
    this.input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        self.submit();
      }
    });
    this.approveButton.addEventListener("click", function () {
      self.decide("approve");
    });
    this.rejectButton.addEventListener("click", function () {
      self.decide("reject");
    });
    this.stopButton.addEventListener("click", function () {
      self.send({ type: "cancel" });
    });
  };

  // ---- showing -----------------------------------------------------------------------

  Widget.prototype.add = function (kind, text, testid) {
    var node = el(this.doc, "div", "msg " + kind, text, { "data-testid": testid || "widget-" + kind });
    this.log.insertBefore(node, this.typing);
    this.log.scrollTop = this.log.scrollHeight;
    return node;
  };

  Widget.prototype.error = function (text) {
    return this.add("error", text, "widget-error");
  };

  Widget.prototype.setStatus = function (status) {
    this.status = status;
    this.statusNode.textContent = status ? status.replace("_", " ") : "ready";
    this.statusNode.setAttribute("data-status", status || "");
    var running = status && FINAL.indexOf(status) < 0;
    this.stopButton.hidden = !running;
    this.typing.hidden = !(status === "working" || status === "submitted");
    if (!running) this.hideApproval();
    this.updateInput();
  };

  Widget.prototype.isFinal = function () {
    return FINAL.indexOf(this.status) >= 0;
  };

  Widget.prototype.updateInput = function () {
    var canStart = !this.sessionId || (this.isFinal() && typeof this.token === "function");
    var canAnswer = this.status === "input_required" && this.waiting !== "approval";
    var open = canStart || canAnswer;
    this.input.disabled = !open;
    this.sendButton.disabled = !open;
    if (this.isFinal() && !canStart) this.input.placeholder = "The session has ended.";
    else if (canAnswer) this.input.placeholder = "Your answer…";
    else this.input.placeholder = this.options.placeholder || "Type a message…";
  };

  Widget.prototype.showApproval = function (approval, question) {
    if (!approval || !approval.id) return;
    this.approval = approval;
    this.approvalText.textContent = question || "Approve these calls?";
    while (this.approvalList.firstChild) this.approvalList.removeChild(this.approvalList.firstChild);
    var doc = this.doc;
    var list = this.approvalList;
    (approval.calls || []).forEach(function (call) {
      var item = el(doc, "li", null, null, { "data-testid": "widget-approval-call" });
      item.appendChild(el(doc, "strong", null, call.tool || "a tool"));
      item.appendChild(doc.createTextNode(" "));
      item.appendChild(el(doc, "code", null, compact(call.arguments)));
      if (call.why) item.appendChild(el(doc, "div", null, call.why));
      list.appendChild(item);
    });
    this.approvalMessage.value = "";
    this.approveButton.disabled = false;
    this.rejectButton.disabled = false;
    this.approvalNode.hidden = false;
  };

  Widget.prototype.hideApproval = function () {
    this.approval = null;
    this.approvalNode.hidden = true;
  };

  // ---- the socket --------------------------------------------------------------------

  Widget.prototype.getToken = function () {
    var token = this.token;
    if (typeof token === "function") return Promise.resolve().then(token);
    if (this.tokenUsed) return Promise.reject(new Error("the token was used: reload the page to go on"));
    this.tokenUsed = true;
    return Promise.resolve(token);
  };

  Widget.prototype.connect = function (path, since) {
    var self = this;
    return this.getToken().then(function (token) {
      if (!token) throw new Error("no token: the page gives the widget none");
      return new Promise(function (resolve, reject) {
        var socket;
        try {
          socket = new WebSocket(socketUrl(self.url, path, { token: token, since: since }));
        } catch (err) {
          reject(err);
          return;
        }
        self.socket = socket;
        var opened = false;
        socket.onopen = function () {
          opened = true;
          self.retries = 0;
          resolve(socket);
        };
        socket.onmessage = function (message) {
          var data;
          try {
            data = JSON.parse(message.data);
          } catch (_) {
            return;
          }
          self.frame(data);
        };
        socket.onerror = function () {
          /* onclose follows, with what there is to say */
        };
        socket.onclose = function (event) {
          if (self.socket === socket) self.socket = null;
          if (!opened) {
            reject(new Error("the gateway refused the connection" + (event.reason ? ": " + event.reason : "")));
            return;
          }
          self.closed(event);
        };
      });
    });
  };

  Widget.prototype.closed = function (event) {
    if (this.closedByUs || this.isFinal()) return;
    this.typing.hidden = true;
    if (typeof this.token === "function" && this.sessionId && this.retries < 5) {
      var self = this;
      this.retries += 1;
      var wait = Math.min(500 * Math.pow(2, this.retries - 1), 8000);
      this.add("note", "Connection lost; reconnecting…", "widget-note");
      setTimeout(function () {
        self.connect("/ws/" + encodeURIComponent(self.sessionId), self.lastId).catch(function (err) {
          self.error(err.message || String(err));
        });
      }, wait);
      return;
    }
    var why = event && event.reason ? ": " + event.reason : "";
    this.error("The connection to the assistant was lost" + why + ".");
    this.input.disabled = true;
    this.sendButton.disabled = true;
  };

  Widget.prototype.send = function (frame) {
    if (!this.socket || this.socket.readyState !== 1) {
      this.error("Not connected to the assistant.");
      return false;
    }
    this.socket.send(JSON.stringify(frame));
    return true;
  };

  // ---- what the user does ------------------------------------------------------------

  Widget.prototype.submit = function () {
    var text = (this.input.value || "").trim();
    if (!text || this.input.disabled) return;
    var self = this;
    if (this.status === "input_required" && this.waiting !== "approval" && this.sessionId) {
      if (this.send({ type: "interact", message: text })) {
        this.optimistic = { waiting: this.waiting, approval: null };
        this.add("user", text, "widget-user");
        this.input.value = "";
        this.waiting = null;
        this.setStatus("working");
      }
      return;
    }
    if (this.sessionId && !this.isFinal()) return;
    // A new session.
    this.add("user", text, "widget-user");
    this.input.value = "";
    this.reset();
    this.setStatus("submitted");
    this.input.disabled = true;
    this.sendButton.disabled = true;
    var start = { type: "start", message: text };
    ["intent", "flow", "inputs"].forEach(function (name) {
      if (self.options[name] !== undefined) start[name] = self.options[name];
    });
    this.connect("/ws")
      .then(function () {
        self.send(start);
      })
      .catch(function (err) {
        self.setStatus(null);
        self.sessionId = null;
        self.error(err.message || String(err));
        self.updateInput();
      });
  };

  Widget.prototype.reset = function () {
    if (this.socket) {
      this.closedByUs = true;
      this.socket.close();
      this.socket = null;
    }
    this.closedByUs = false;
    this.sessionId = "(starting)";
    this.lastId = null;
    this.seen = {};
    this.calls = {};
    this.waiting = null;
    this.hideApproval();
  };

  Widget.prototype.decide = function (verdict) {
    if (!this.approval) return;
    var frame = { type: verdict, approval: this.approval.id };
    var message = (this.approvalMessage.value || "").trim();
    if (message) frame.message = message;
    var approval = this.approval;
    if (this.send(frame)) {
      this.optimistic = { waiting: "approval", approval: approval };
      this.add("user", (verdict === "approve" ? "Approved" : "Rejected") + (message ? ": " + message : ""), "widget-user");
      this.approveButton.disabled = true;
      this.rejectButton.disabled = true;
      this.hideApproval();
      this.waiting = null;
      this.setStatus("working");
    }
  };

  // ---- what the gateway sends --------------------------------------------------------

  Widget.prototype.view = function (session) {
    if (!session || typeof session !== "object") return;
    if (session.id) {
      this.sessionId = session.id;
      this.box.setAttribute("data-session", session.id);
    }
    if (session.waiting !== undefined) this.waiting = session.waiting;
    if (session.status) this.setStatus(session.status);
    if (session.status === "input_required" && session.waiting === "approval" && session.approval) {
      this.showApproval(session.approval, session.question);
    }
    this.updateInput();
  };

  Widget.prototype.frame = function (data) {
    if (!data || typeof data !== "object") return;
    var type = data.type;
    if (type === "started" || type === "snapshot") {
      this.view(data.session);
      return;
    }
    if (type === "ping") return;
    if (type === "ack") {
      this.optimistic = null;
      return;
    }
    if (type === "error") {
      this.error(data.detail || data.error || "The gateway refused that.");
      var before = this.optimistic;
      this.optimistic = null;
      if (before && this.status === "working") {
        // The answer or decision did not land: the session still asks.
        this.waiting = before.waiting;
        this.setStatus("input_required");
        if (before.approval) this.showApproval(before.approval, this.approvalText.textContent);
      }
      if (this.sessionId === "(starting)") {
        // The session never started: the box is as it was before.
        this.sessionId = null;
        this.setStatus(null);
      }
      this.updateInput();
      return;
    }
    if (type === "gap") {
      this.add("note", "Some events were lost on the way.", "widget-note");
      return;
    }
    this.optimistic = null;
    if (data.id) {
      if (this.seen[data.id]) return;
      this.seen[data.id] = true;
      this.lastId = data.id;
    }
    if (data.approval && data.approval.id) this.showApproval(data.approval, data.question || data.text);
    if (data.waiting !== undefined && typeof data.waiting !== "object") this.waiting = data.waiting;
    switch (type) {
      case "state":
        if (data.to === "working") this.waiting = null;
        // An approval's id is the id of the state event that moves the session to wait.
        if (data.to === "input_required" && this.held) {
          this.showApproval({ id: data.id, calls: this.held.calls }, this.held.question);
        }
        this.held = null;
        this.setStatus(data.to);
        if (data.to && FINAL.indexOf(data.to) >= 0 && data.to !== "completed") {
          this.error("The session " + data.to + (data.why ? ": " + data.why : "."));
        }
        break;
      case "question":
        if (data.waiting === "approval" && data.calls) {
          this.held = { calls: data.calls, question: data.text };
          break;
        }
        this.add("question", data.text || "", "widget-question");
        this.typing.hidden = true;
        break;
      case "reply":
        this.add("reply", data.text || "", "widget-reply");
        break;
      case "intent":
        this.calls[data.key] = this.add("tool", "Calling " + (data.tool || "a tool") + "…", "widget-tool");
        break;
      case "result":
        var line = data.key ? this.calls[data.key] : null;
        var outcome = data.outcome || "done";
        var what = outcome === "refused" ? "refused (" + (data.decision || "not permitted") + ")" : outcome;
        if (line) {
          line.textContent = line.textContent.replace(/…$/, "") + ": " + what;
        } else {
          line = this.add("tool", "A call: " + what, "widget-tool");
        }
        if (outcome !== "completed" || data.is_error) line.className = "msg tool " + (outcome === "refused" ? "refused" : "failed");
        break;
      case "budget":
        this.error("A budget ran out (" + (data.name || "?") + ").");
        break;
      default:
        break;
    }
  };

  Widget.prototype.destroy = function () {
    this.closedByUs = true;
    if (this.socket) this.socket.close();
    this.socket = null;
    while (this.root.firstChild) this.root.removeChild(this.root.firstChild);
    if (instances) instances.delete(this.host);
  };

  function mount(element, options) {
    if (typeof element === "string") element = document.querySelector(element);
    if (!element) throw new Error("GatewayWidget.mount: no element to mount on");
    var existing = instances && instances.get(element);
    if (existing) existing.destroy();
    var widget = new Widget(element, options || {});
    if (instances) instances.set(element, widget);
    return widget;
  }

  /** Mount on the page the script tag's data attributes name, if it names a token. */
  function autoMount(script, mountOn) {
    if (!script || !script.getAttribute) return;
    var token = script.getAttribute("data-token");
    if (!token) return;
    var gateway = script.getAttribute("data-gateway");
    if (!gateway && script.src) gateway = new URL(script.src, document.baseURI).origin;
    var options = {
      url: gateway || location.origin,
      token: token,
      title: script.getAttribute("data-title") || undefined,
      placeholder: script.getAttribute("data-placeholder") || undefined,
      intent: script.getAttribute("data-intent") || undefined,
    };
    var go = function () {
      var selector = script.getAttribute("data-target");
      var target = selector ? document.querySelector(selector) : null;
      if (!target) {
        target = document.createElement("div");
        target.className = "gateway-widget";
        if (script.parentNode) script.parentNode.insertBefore(target, script.nextSibling);
        else document.body.appendChild(target);
      }
      mountOn(target, options);
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", go);
    else go();
  }

  window.GatewayWidget = { mount: mount, version: "1" };
  autoMount(document.currentScript, mount);
})();
