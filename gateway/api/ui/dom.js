/* The session page's DOM helpers: find and build elements (text always as textContent,
 * never innerHTML), format values for a person, and the page's error line.
 *
 * The page's scripts share one namespace, window.GatewayPage, and load in order (see
 * index.html): dom.js, api.js, timeline.js, ask.js, sessions.js, then app.js, which
 * wires them. */
(function (page) {
  "use strict";

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

  // ---- the error line ----------------------------------------------------------------

  function showError(text) {
    $("error-text").textContent = text;
    $("error").hidden = false;
  }

  function hideError() {
    $("error").hidden = true;
    $("error-text").textContent = "";
  }

  page.dom = {
    $: $,
    el: el,
    clear: clear,
    pretty: pretty,
    when: when,
    short: short,
    asNumber: asNumber,
    showError: showError,
    hideError: hideError,
  };
})((window.GatewayPage = window.GatewayPage || {}));
