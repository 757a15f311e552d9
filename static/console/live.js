/* A WebSocket that reconnects and, for an instance, asks for what it missed (?after=N). */
(function () {
  "use strict";

  function LiveStream(path, handlers) {
    this.path = path;
    this.handlers = handlers;
    this.lastSeq = null;
    this.delay = 500;
    this.connects = 0;
    this.open();
  }

  LiveStream.prototype.url = function () {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + location.host + this.path;
    if (this.lastSeq !== null) url += (url.indexOf("?") < 0 ? "?" : "&") + "after=" + this.lastSeq;
    return url;
  };

  LiveStream.prototype.open = function () {
    var self = this;
    var socket = new WebSocket(this.url());
    this.socket = socket;
    this.connects += 1;
    socket.onopen = function () { self.delay = 500; };
    socket.onmessage = function (e) {
      var message = JSON.parse(e.data);
      if (message.type === "snapshot") {
        self.handlers.state("live");
        self.handlers.snapshot(message);
      } else {
        self.handlers.event(message);
      }
      if (typeof message.seq === "number" && (self.lastSeq === null || message.seq > self.lastSeq)) {
        self.lastSeq = message.seq;
      }
    };
    socket.onclose = function (e) {
      if (socket !== self.socket) return;
      if (e.code === 4404 || e.code === 4401) { self.handlers.state("closed"); return; }
      self.handlers.state("reconnecting");
      setTimeout(function () { self.open(); }, self.delay);
      self.delay = Math.min(self.delay * 2, 10000);
    };
  };

  /* Drops the connection as a network failure would; the stream reconnects by itself. */
  LiveStream.prototype.drop = function () { this.socket.close(); };

  function showState(el, state) {
    if (!el) return;
    el.className = "live " + (state === "live" ? "on" : "off");
    el.textContent = state === "live" ? "live" : state === "closed" ? "not available" : "reconnecting…";
  }

  window.Stepwell = window.Stepwell || {};
  window.Stepwell.LiveStream = LiveStream;
  window.Stepwell.showState = showState;

  window.Stepwell.csrf = function () {
    var m = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return m ? decodeURIComponent(m[1]) : input ? input.value : "";
  };
})();
