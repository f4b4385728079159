/* The session page's calls to the gateway: the API key, REST requests, errors in words
 * for a person, and the event stream.
 *
 * The API key lives in sessionStorage (this tab only) and goes in the Authorization
 * header, never in a URL. EventSource cannot send that header, so the event stream is
 * read with fetch and parsed here, and resumed with Last-Event-ID after a dropped
 * connection. */
(function (page) {
  "use strict";

  var $ = page.dom.$;

  var KEY_STORE = "gateway.apiKey";
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

  /** The key this tab kept, or null. */
  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORE);
    } catch (_) {
      return null;
    }
  }

  // ---- errors ------------------------------------------------------------------------

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

  /** The path of `what` for a session ({id, links}): the link the API gave, if any. */
  function sessionPath(session, what) {
    var links = session.links || {};
    var enc = encodeURIComponent(session.id);
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

  // ---- the event stream (SSE over fetch) ---------------------------------------------

  /** Follow the event stream at `path` until closed. Every frame's JSON goes to
   * on.frame(data, id); the connection's state to on.connection(state, text). A dropped
   * connection is made again, after a growing wait, with Last-Event-ID. A stream that
   * ends while on.over() is true stops, and on.ended() is called; a refusal (a 4xx but
   * 408 and 429) stops too, and on.refused(err) is called. Returns { close() }. */
  function follow(path, on) {
    var stream = { lastEventId: null, serverRetry: null, retry: RETRY_MIN_MS, timer: null, controller: null, closed: false };

    function connect() {
      if (stream.closed) return;
      var controller = new AbortController();
      stream.controller = controller;
      var extra = { Accept: "text/event-stream" };
      if (stream.lastEventId) extra["Last-Event-ID"] = stream.lastEventId;
      on.connection("connecting", stream.lastEventId ? "reconnecting…" : "connecting…");
      fetch(apiUrl(path), {
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
          on.connection("live", "live");
          return readFrames(response.body, stream, on.frame);
        })
        .then(function () {
          if (stream.closed) return;
          // The stream ended: the session is final, or the connection was cut.
          if (on.over()) {
            on.connection("closed", "ended");
            on.ended();
            return;
          }
          schedule();
        })
        .catch(function (err) {
          if (stream.closed || (err && err.name === "AbortError")) return;
          if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
            on.connection("closed", "stopped");
            on.refused(err);
            return;
          }
          schedule(err);
        });
    }

    function schedule(err) {
      if (stream.closed) return;
      var wait = stream.retry;
      stream.retry = Math.min(stream.retry * 2, RETRY_MAX_MS);
      var why = err ? " (" + (failure(err) || "dropped") + ")" : "";
      on.connection("retrying", "connection dropped, reconnecting in " + Math.round(wait / 100) / 10 + " s" + why);
      stream.timer = setTimeout(function () {
        stream.timer = null;
        connect();
      }, wait);
    }

    function close() {
      stream.closed = true;
      if (stream.timer) clearTimeout(stream.timer);
      if (stream.controller) stream.controller.abort();
    }

    connect();
    return { close: close };
  }

  /** Read an event stream's frames (text/event-stream) until it ends; each frame's data,
   * parsed as JSON, to deliver(data, id). */
  function readFrames(body, stream, deliver) {
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
        if (ms >= 0) stream.serverRetry = ms;
      }
    }

    function dispatch() {
      var data = frame.data.join("\n");
      var id = frame.sawId ? frame.id : null;
      frame = { data: [], id: null, sawId: false };
      if (id) stream.lastEventId = id;
      if (!data) return;
      var parsed;
      try {
        parsed = JSON.parse(data);
      } catch (_) {
        return;
      }
      if (stream.closed) return;
      stream.retry = stream.serverRetry || RETRY_MIN_MS;
      deliver(parsed, id);
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

  page.api = {
    apiKey: apiKey,
    keepKey: keepKey,
    storedKey: storedKey,
    ApiError: ApiError,
    failure: failure,
    request: request,
    sessionPath: sessionPath,
    follow: follow,
  };
})((window.GatewayPage = window.GatewayPage || {}));
