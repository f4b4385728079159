/* The session page's list of the caller's recent sessions, a page at a time; each opens
 * the session it names. */
(function (page) {
  "use strict";

  var dom = page.dom;
  var api = page.api;
  var $ = dom.$;
  var el = dom.el;
  var clear = dom.clear;

  var hooks = null; /* { open(id), shown(): the id of the session shown, or null } */
  var nextCursor = null;

  function load(more) {
    if (!api.apiKey()) return Promise.resolve();
    var path = "sessions?limit=20" + (more && nextCursor ? "&cursor=" + encodeURIComponent(nextCursor) : "");
    return api.request("GET", path)
      .then(function (listing) {
        var list = $("sessions");
        if (!more) clear(list);
        var sessions = (listing && Array.isArray(listing.sessions)) ? listing.sessions : [];
        sessions.forEach(function (s) {
          list.appendChild(sessionItem(s));
        });
        nextCursor = listing && listing.next ? listing.next : null;
        $("sessions-more").hidden = !nextCursor;
        $("sessions-empty").hidden = list.childNodes.length > 0;
        $("sessions-empty").textContent = "No sessions yet.";
        markOpen();
      })
      .catch(function (err) {
        dom.showError(api.failure(err));
      });
  }

  function sessionItem(s) {
    var item = el("li", null, null, { "data-testid": "session-item", "data-id": s.id, "data-status": s.status });
    var button = el("button", "session-open", null, { type: "button", "data-testid": "session-open", "data-id": s.id });
    var top = el("span", "row spread");
    top.appendChild(el("span", "status small", String(s.status || "").replace("_", " "), { "data-status": s.status }));
    top.appendChild(el("span", "muted small", dom.when(s.updated || s.created)));
    button.appendChild(top);
    button.appendChild(el("span", "session-text", dom.short(s.message || s.id, 90)));
    button.addEventListener("click", function () {
      api.keepKey();
      hooks.open(s.id);
    });
    item.appendChild(button);
    return item;
  }

  /** The session shown is marked so in the list. */
  function markOpen() {
    var id = hooks.shown();
    var items = $("sessions").querySelectorAll("li[data-id]");
    Array.prototype.forEach.call(items, function (item) {
      item.classList.toggle("current", !!id && item.getAttribute("data-id") === id);
    });
  }

  /** The session's entry says its status. */
  function markStatus(id, status) {
    var items = $("sessions").querySelectorAll("li[data-id]");
    Array.prototype.forEach.call(items, function (item) {
      if (item.getAttribute("data-id") !== id) return;
      item.setAttribute("data-status", status);
      var badge = item.querySelector(".status");
      if (badge) {
        badge.textContent = status.replace("_", " ");
        badge.setAttribute("data-status", status);
      }
    });
  }

  /** None listed, as before a key was given. */
  function forget() {
    clear($("sessions"));
    $("sessions-empty").hidden = false;
    $("sessions-empty").textContent = "None loaded yet.";
  }

  /** hooks: { open(id), shown() }; the Refresh and More buttons' listeners. */
  function wire(given) {
    hooks = given;
    $("sessions-refresh").addEventListener("click", function () {
      api.keepKey();
      dom.hideError();
      load(false);
    });
    $("sessions-more").addEventListener("click", function () { load(true); });
  }

  page.sessions = { wire: wire, load: load, markOpen: markOpen, markStatus: markStatus, forget: forget };
})((window.GatewayPage = window.GatewayPage || {}));
