/* The instance page: a snapshot, then live events; a Gantt-like timeline of the steps. */
(function () {
  "use strict";
  var S = window.Stepwell;
  var state = JSON.parse(document.getElementById("instance-data").textContent);
  var seq = state.seq || 0;
  var TERMINAL = { complete: 1, errored: 1, terminated: 1 };
  var el = function (id) { return document.getElementById(id); };

  function h(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  function ms(iso) { return iso ? Date.parse(iso) : null; }
  function duration(msec) {
    if (msec === null || isNaN(msec)) return "—";
    if (msec < 1000) return Math.max(0, Math.round(msec)) + " ms";
    var s = msec / 1000;
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min " + Math.round(s % 60) + " s";
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }
  function json(value) { return value === null || value === undefined ? "—" : JSON.stringify(value, null, 2); }
  function badge(status) { return h("span", "badge s-" + status, status); }

  function stepEnd(step, now) {
    if (step.finished_at) return ms(step.finished_at);
    if (TERMINAL[state.status] || state.status === "paused") return ms(state.finished_at || state.updated_at) || now;
    return now;
  }

  function renderTimeline(now) {
    var box = el("timeline");
    box.innerHTML = "";
    var steps = state.steps || [];
    if (!steps.length) { box.appendChild(h("p", "muted", "No steps yet.")); return; }
    var t0 = ms(state.created_at);
    var end = TERMINAL[state.status] ? ms(state.finished_at || state.updated_at) : now;
    steps.forEach(function (s) {
      end = Math.max(end, stepEnd(s, now));
      if (s.wake_at && s.status === "sleeping") end = Math.max(end, ms(s.wake_at));
    });
    var span = Math.max(end - t0, 1000);
    var axis = h("div", "tl-axis");
    for (var i = 0; i <= 4; i++) {
      var tick = h("span", "tl-tick", "+" + duration((span * i) / 4));
      tick.style.left = (i * 25) + "%";
      axis.appendChild(tick);
    }
    var head = h("div", "tl-row tl-head");
    head.appendChild(h("div", "tl-label"));
    var axisBox = h("div", "tl-track");
    axisBox.appendChild(axis);
    head.appendChild(axisBox);
    box.appendChild(head);
    steps.forEach(function (s) {
      var row = h("div", "tl-row");
      row.dataset.step = s.index;
      row.dataset.status = s.status;
      var label = h("div", "tl-label");
      label.appendChild(h("span", "tl-name", s.name));
      label.appendChild(h("span", "tl-kind", s.kind.replace(/_/g, " ")));
      row.appendChild(label);
      var track = h("div", "tl-track");
      var start = ms(s.started_at) || t0;
      var stop = stepEnd(s, now);
      var bar = h("div", "tl-bar s-" + s.status + (s.kind === "sleep" ? " sleep" : "") + (s.kind === "wait_for_event" ? " wait" : ""));
      bar.style.left = ((start - t0) / span) * 100 + "%";
      bar.style.width = Math.max(((stop - start) / span) * 100, 0.6) + "%";
      var text = s.status + " · " + duration(stop - start);
      if (s.attempts > 1) text += " · " + s.attempts + " attempts";
      bar.title = s.name + ": " + text + (s.wake_at ? " · wakes " + new Date(s.wake_at).toLocaleTimeString() : "");
      var tag = h("span", "tl-text", text);
      track.appendChild(bar);
      if (s.status === "sleeping" && s.wake_at) {
        var planned = h("div", "tl-planned");
        planned.style.left = bar.style.left;
        planned.style.width = Math.max(((ms(s.wake_at) - start) / span) * 100, 0.6) + "%";
        track.appendChild(planned);
      }
      tag.style.left = "calc(" + bar.style.left + " + " + bar.style.width + " + 6px)";
      if ((start - t0) / span > 0.6) { tag.style.left = "auto"; tag.style.right = (100 - ((start - t0) / span) * 100) + "%"; tag.classList.add("before"); }
      track.appendChild(tag);
      if (s.attempts > 1) {
        for (var a = 1; a < s.attempts; a++) {
          var retry = h("span", "tl-retry", "↻");
          retry.title = "retry " + a;
          retry.style.left = "calc(" + bar.style.left + " + " + (a * 8) + "px)";
          track.appendChild(retry);
        }
      }
      row.appendChild(track);
      box.appendChild(row);
    });
  }

  var openSteps = {};  // what the reader opened or closed survives re-rendering
  var openAttempts = {};

  function errorText(error) {
    return (error.type || "Error") + ": " + (error.message || "") + (error.traceback ? "\n\n" + error.traceback : "");
  }

  /* A step's (or one attempt's) error, with the tenant code's traceback, and its logs. */
  function renderAttempt(box, a) {
    if (a.error) {
      box.appendChild(h("div", "k", "Error"));
      box.appendChild(h("pre", "error-box", errorText(a.error)));
    }
    if (a.logs) {
      box.appendChild(h("div", "k", "Logs"));
      box.appendChild(h("pre", "logs", a.logs));
    }
  }

  function renderSteps() {
    var box = el("steps");
    box.innerHTML = "";
    (state.steps || []).forEach(function (s) {
      var item = h("details", "step s-" + s.status);
      item.dataset.step = s.index;
      if (s.error || s.status === "running" || s.logs || (state.steps || []).length <= 6) item.open = true;
      if (openSteps.hasOwnProperty(s.index)) item.open = openSteps[s.index];
      item.addEventListener("toggle", function () { openSteps[s.index] = item.open; });
      var sum = h("summary");
      sum.appendChild(h("span", "step-index", "#" + s.index));
      sum.appendChild(h("span", "step-name", s.name));
      sum.appendChild(h("span", "tl-kind", s.kind.replace(/_/g, " ")));
      sum.appendChild(badge(s.status));
      if (s.attempts > 1) sum.appendChild(h("span", "muted", s.attempts + " attempts"));
      item.appendChild(sum);
      if (s.output !== null && s.output !== undefined) {
        item.appendChild(h("div", "k", "Output"));
        item.appendChild(h("pre", "json", json(s.output)));
      }
      renderAttempt(item, s);
      var earlier = (s.attempts_detail || []).slice(0, -1);
      if (earlier.length) {
        var list = h("details", "attempts");
        list.open = openAttempts.hasOwnProperty(s.index) ? openAttempts[s.index] : true;
        list.addEventListener("toggle", function () { openAttempts[s.index] = list.open; });
        list.appendChild(h("summary", "muted", "Earlier attempts (" + earlier.length + ")"));
        earlier.forEach(function (a) {
          var box = h("div", "attempt");
          box.dataset.attempt = a.attempt;
          box.appendChild(h("div", "k", "Attempt " + a.attempt + " · " + a.status + " · " + duration(ms(a.finished_at) - ms(a.started_at))));
          renderAttempt(box, a);
          list.appendChild(box);
        });
        item.appendChild(list);
      }
      if (s.wake_at && (s.status === "sleeping" || s.status === "failed")) {
        item.appendChild(h("div", "muted small", (s.status === "failed" ? "Retries at " : "Wakes at ") + new Date(s.wake_at).toLocaleString()));
      }
      box.appendChild(item);
    });
    if (!(state.steps || []).length) box.appendChild(h("p", "muted", "The instance has not run a step yet."));
  }

  function render() {
    var now = Date.now();
    el("status").innerHTML = "";
    el("status").appendChild(badge(state.status));
    document.body.dataset.status = state.status;
    var end = TERMINAL[state.status] ? ms(state.finished_at || state.updated_at) : now;
    el("duration").textContent = duration(end - ms(state.created_at));
    el("step-count").textContent = (state.steps || []).length;
    el("output").textContent = json(state.output);
    el("payload").textContent = json(state.payload);
    var err = el("instance-error");
    err.innerHTML = "";
    if (state.error) {
      err.appendChild(h("h3", null, "Error"));
      err.appendChild(h("pre", "error-box", errorText(state.error)));
    }
    renderTimeline(now);
    renderSteps();
    renderControls();
  }

  var ACTIVE = { queued: 1, running: 1, sleeping: 1, waiting: 1 };
  function renderControls() {
    var allowed = {
      pause: !!ACTIVE[state.status],
      resume: state.status === "paused",
      terminate: !TERMINAL[state.status],
      restart: true,
    };
    document.querySelectorAll("form[data-action]").forEach(function (form) {
      var button = form.querySelector("button");
      if (button.dataset.readOnly === undefined) button.dataset.readOnly = button.disabled ? "1" : "";
      button.disabled = button.dataset.readOnly === "1" || !allowed[form.dataset.action];
    });
  }

  function findStep(summary) {
    var steps = state.steps || (state.steps = []);
    for (var i = 0; i < steps.length; i++) if (steps[i].index === summary.index) return steps[i];
    var step = { index: summary.index, output: null, error: null, logs: "", started_at: null, finished_at: null };
    steps.push(step);
    steps.sort(function (a, b) { return a.index - b.index; });
    return step;
  }

  /* Applies one event at once; the full record (outputs, times) follows from the server. */
  function apply(e) {
    if (e.type === "instance.status") {
      state.status = e.status;
      state.updated_at = e.at;
      if (TERMINAL[e.status]) state.finished_at = e.at;
      if (e.status === "queued" && !(state.steps || []).length) state.output = null;
    } else if (e.step) {
      var step = findStep(e.step);
      ["name", "kind", "status", "attempts"].forEach(function (k) { step[k] = e.step[k]; });
      if (e.type === "step.started" && !step.started_at) step.started_at = e.at;
      if (e.type === "step.completed" || (e.type === "step.failed" && e.step.status !== "failed")) step.finished_at = e.at;
      if (e.type === "step.log") step.logs = (step.logs || "") + e.line + "\n";
    }
    render();
    refreshSoon();
  }

  var timer = null;
  function refreshSoon() {
    clearTimeout(timer);
    timer = setTimeout(function () {
      fetch(location.pathname + "data/", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (data) { if (data.seq >= seq) { state = data; render(); } })
        .catch(function () {});
    }, 200);
  }

  S.live = new S.LiveStream("/ws/instances/" + encodeURIComponent(state.id) + "/", {
    state: function (s) { S.showState(el("live"), s); },
    snapshot: function (m) { if (m.seq >= seq) { state = m.instance; seq = m.seq; render(); } },
    event: function (e) {
      if (e.seq <= seq) return;
      seq = e.seq;
      apply(e);
    },
  });
  S.events = 0;
  var flash = el("flash");
  function say(ok, text) {
    flash.className = "flash " + (ok ? "success" : "error");
    flash.textContent = text;
  }

  document.querySelectorAll("form[data-fetch]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
      fetch(form.action, {
        method: "POST", body: new FormData(form), credentials: "same-origin",
        headers: { "X-Requested-With": "fetch" },
      }).then(function (r) { return r.json().then(function (b) { return [r.ok, b]; }); })
        .then(function (res) {
          say(res[0], res[1].detail);
          if (res[0] && form.id === "event-form") { S.events += 1; }
          refreshSoon();
        })
        .catch(function () { say(false, "The server did not answer; try again."); });
    });
  });

  render();
  setInterval(function () { if (!TERMINAL[state.status]) render(); }, 1000);
})();
