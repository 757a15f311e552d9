/* The payload editor of the start page: JSON with highlighting and a live parse check. */
(function () {
  "use strict";
  var area = document.getElementById("id_payload");
  var state = document.getElementById("json-state");
  var cm = CodeMirror.fromTextArea(area, {
    mode: { name: "javascript", json: true }, lineNumbers: true, matchBrackets: true, tabSize: 2,
  });
  function check() {
    try {
      var value = JSON.parse(cm.getValue() || "{}");
      var ok = value !== null && typeof value === "object" && !Array.isArray(value);
      state.textContent = ok ? "✓ valid JSON object" : "✗ the payload must be a JSON object";
      state.className = ok ? "ok-text" : "error-text";
    } catch (e) {
      state.textContent = "✗ " + e.message;
      state.className = "error-text";
    }
  }
  cm.on("change", check);
  check();
})();
