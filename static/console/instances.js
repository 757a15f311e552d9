/* The instances list: refreshed from the server whenever an instance of the tenant changes. */
(function () {
  "use strict";
  var rows = document.getElementById("instance-rows");
  var timer = null;

  function refresh() {
    timer = null;
    fetch(rows.dataset.rowsUrl, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { rows.innerHTML = html; })
      .catch(function () {});
  }

  function soon() { if (!timer) timer = setTimeout(refresh, 250); }

  window.Stepwell.list = new window.Stepwell.LiveStream("/ws/tenant/", {
    state: function (s) { window.Stepwell.showState(document.getElementById("live"), s); },
    snapshot: function () { soon(); },
    event: function (e) { if (e.type === "instance.status") soon(); },
  });
})();
