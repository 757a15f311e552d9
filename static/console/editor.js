/* The code editor: CodeMirror with Python highlighting and line numbers, and the checks of
   the server (parse errors, a missing run) marked at their lines as you type. */
(function () {
  "use strict";
  var form = document.getElementById("code-form");
  var area = document.getElementById("id_code");
  var problems = document.getElementById("problems");
  var checkState = document.getElementById("check-state");
  var cm = CodeMirror.fromTextArea(area, {
    mode: "python", lineNumbers: true, indentUnit: 4, matchBrackets: true,
    styleActiveLine: true, viewportMargin: Infinity, gutters: ["CodeMirror-linenumbers", "problems"],
  });
  window.Stepwell = window.Stepwell || {};
  window.Stepwell.editor = cm;
  var marks = [];

  function clear() {
    marks.forEach(function (m) { m.clear(); });
    marks = [];
    cm.clearGutter("problems");
    problems.innerHTML = "";
  }

  function mark(list, kind) {
    list.forEach(function (p) {
      var line = Math.max(0, Math.min(cm.lineCount() - 1, p.line - 1));
      var cls = kind === "error" ? "cm-error-line" : "cm-flag-line";
      cm.addLineClass(line, "wrap", cls);
      marks.push({ clear: function () { cm.removeLineClass(line, "wrap", cls); } });
      var dot = document.createElement("span");
      dot.className = "gutter-" + kind;
      dot.title = p.message;
      dot.textContent = kind === "error" ? "●" : "⚑";
      cm.setGutterMarker(line, "problems", dot);
      var note = document.createElement("div");
      note.className = "line-note " + kind;
      note.textContent = (kind === "error" ? "✗ " : "⚑ ") + "line " + p.line + ": " + p.message;
      marks.push(cm.addLineWidget(line, note, { coverGutter: false }));
      var row = document.createElement("div");
      row.className = "problem " + kind;
      row.dataset.line = p.line;
      row.textContent = (kind === "error" ? "Line " : "Flag, line ") + p.line + ", column " + p.column + ": " + p.message;
      row.onclick = function () { cm.focus(); cm.setCursor({ line: line, ch: p.column }); };
      problems.appendChild(row);
    });
  }

  function show(report) {
    clear();
    mark(report.errors || [], "error");
    mark(report.flags || [], "flag");
    checkState.textContent = (report.errors || []).length ? "✗ fix the marked lines" : "✓ the code checks out";
    checkState.className = (report.errors || []).length ? "error-text" : "ok-text";
  }

  var timer = null;
  function validate() {
    timer = null;
    var body = new URLSearchParams({ code: cm.getValue() });
    fetch(form.dataset.validateUrl, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRFToken": form.csrfmiddlewaretoken.value },
    }).then(function (r) { return r.json(); }).then(show).catch(function () {});
  }
  cm.on("change", function () {
    checkState.textContent = "checking…";
    checkState.className = "muted";
    clearTimeout(timer);
    timer = setTimeout(validate, 300);
  });

  var initial = JSON.parse(document.getElementById("code-errors").textContent);
  if (initial.length) show({ errors: initial, flags: [] });

  var file = form.querySelector("input[type=file]");
  if (file) file.addEventListener("change", function () {
    if (!file.files.length) return;
    file.files[0].text().then(function (text) { cm.setValue(text); });
  });
  form.addEventListener("submit", function () { cm.save(); });
})();
