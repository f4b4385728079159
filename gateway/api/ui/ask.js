/* What the session shown asks of you: the answer form for its question, the approval card
 * for the calls it holds; shown as the session's view says, and sent.
 *
 * An answer names the question it answers: the session's last_event when its view was
 * read asking (kept on #ask as data-question). The API refuses (409 not_waiting) one
 * meant for a question answered since, say from another tab: the page says so and reads
 * the session again. */
(function (page) {
  "use strict";

  var dom = page.dom;
  var api = page.api;
  var $ = dom.$;
  var el = dom.el;
  var clear = dom.clear;
  var pretty = dom.pretty;
  var showError = dom.showError;
  var hideError = dom.hideError;

  var ANSWERED_SINCE =
    "Your answer was not used: that question was answered already (from another tab, perhaps), " +
    "or the session asks something else now. The page shows the session as it is now.";

  var hooks = null; /* { session(): the session shown or null, status(status), refresh() } */

  function shownId(id) {
    var session = hooks.session();
    return !!session && session.id === id;
  }

  /** Neither the answer form nor the approval card. */
  function hide() {
    $("ask").hidden = true;
    $("approval").hidden = true;
  }

  /** The answer form or the approval card, as the session's waiting says. */
  function show(view) {
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
      if (view.last_event) ask.setAttribute("data-question", view.last_event);
      else ask.removeAttribute("data-question");
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

  // ---- sending -----------------------------------------------------------------------

  function sendAnswer(event) {
    event.preventDefault();
    var session = hooks.session();
    if (!session) return;
    var text = $("answer").value.trim();
    if (!text) {
      showError("Write an answer first.");
      return;
    }
    hideError();
    var button = $("answer-send");
    button.disabled = true;
    var id = session.id;
    var body = { message: text };
    var question = $("ask").getAttribute("data-question");
    if (question) body.question = question;
    api.request("POST", api.sessionPath(session, "interact"), body)
      .then(function (accepted) {
        $("answer").value = "";
        $("ask").hidden = true;
        if (accepted && accepted.status && shownId(id)) hooks.status(accepted.status);
      })
      .catch(function (err) {
        button.disabled = false;
        if (err instanceof api.ApiError && err.status === 409 && err.code === "not_waiting") {
          // Meant for a question answered since: what does the session ask now?
          showError(ANSWERED_SINCE);
          if (shownId(id)) hooks.refresh();
          return;
        }
        showError(api.failure(err));
      });
  }

  function decide(decision) {
    var session = hooks.session();
    if (!session || !session.view || !session.view.approval) return;
    hideError();
    var approval = session.view.approval;
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
    var path = api.sessionPath(session, "approvals/" + encodeURIComponent(approval.id));
    api.request("POST", path, body)
      .then(function () {
        $("approval").hidden = true;
        $("approval").removeAttribute("data-approval");
      })
      .catch(function (err) {
        showError(api.failure(err));
        $("approve").disabled = false;
        $("reject").disabled = false;
      });
  }

  /** hooks: { session(), status(status), refresh() }; the form's and buttons' listeners. */
  function wire(given) {
    hooks = given;
    $("answer-form").addEventListener("submit", sendAnswer);
    $("approve").addEventListener("click", function () { decide("approve"); });
    $("reject").addEventListener("click", function () { decide("reject"); });
  }

  page.ask = { wire: wire, show: show, hide: hide };
})((window.GatewayPage = window.GatewayPage || {}));
