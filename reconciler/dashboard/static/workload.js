// The live parts of a container's or pod's page: a log tail (server-sent
// events) and a shell: xterm.js (static/xterm.js, bundled from Debian's
// node-xterm by ci/xterm-bundle) over the access API's exec WebSocket,
// with a TTY sized to the terminal's element.
"use strict";
(function () {
  var logs = document.getElementById("logs");
  var follow = document.getElementById("follow");
  var logStatus = document.getElementById("logs-status");
  var source = null;
  if (follow) {
    follow.addEventListener("click", function () {
      if (source) { source.close(); source = null; follow.textContent = "Follow the logs"; logStatus.textContent = "stopped"; return; }
      logs.textContent = "";
      source = new EventSource(follow.dataset.src);
      follow.textContent = "Stop following";
      logStatus.textContent = "following";
      source.onmessage = function (e) {
        logs.appendChild(document.createTextNode(e.data + "\n"));
        logs.scrollTop = logs.scrollHeight;
      };
      source.addEventListener("end", function () { source.close(); source = null; follow.textContent = "Follow the logs"; logStatus.textContent = "the stream ended"; });
      source.onerror = function () { if (source) { source.close(); source = null; } follow.textContent = "Follow the logs"; logStatus.textContent = "the stream was refused or broke"; };
    });
  }

  var open = document.getElementById("open-shell");
  var box = document.getElementById("terminal");
  var shellStatus = document.getElementById("shell-status");
  if (!open || !box || typeof window.Terminal !== "function") { return; }
  var enc = new TextEncoder();
  var dec = null;
  var ws = null;
  var term = null;
  // Channels of the exec protocol (reconciler/access/exec.go).
  var STDIN = 0, STDOUT = 1, STDERR = 2, EXIT = 3, RESIZE = 4;

  function send(ch, bytes) {
    if (!ws || ws.readyState !== 1) { return; }
    var msg = new Uint8Array(bytes.length + 1);
    msg[0] = ch; msg.set(bytes, 1);
    ws.send(msg);
  }
  // terminal makes xterm's Terminal in the box once, sized to it. The
  // canvas renderer needs no style element (the Content-Security-Policy
  // allows none); the screen reader mode keeps the rows as text in the
  // page, for screen readers.
  function terminal() {
    if (term) { term.reset(); return term; }
    term = new window.Terminal({ cursorBlink: true, fontSize: 14, fontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace',
      rendererType: "canvas", screenReaderMode: true, scrollback: 2000 });
    term.open(box);
    term.fit();
    box.terminal = term; // for the page's tests: xterm's buffer holds what it shows
    term.on("data", function (d) { send(STDIN, enc.encode(d)); });
    term.on("resize", function (s) { send(RESIZE, enc.encode(JSON.stringify({ rows: s.rows, cols: s.cols }))); });
    // The terminal keeps Tab for the shell: Escape, then Tab, leaves it
    // (the Escape reaches the shell too, which ignores it at a prompt).
    var escaped = false;
    term.attachCustomKeyEventHandler(function (e) {
      if (e.type !== "keydown") { return true; }
      if (e.key === "Tab" && escaped) { escaped = false; return false; }
      escaped = e.key === "Escape";
      return true;
    });
    window.addEventListener("resize", function () { term.fit(); });
    return term;
  }
  open.addEventListener("click", function () {
    if (ws) { ws.close(); return; }
    box.hidden = false;
    var t = terminal();
    dec = new TextDecoder();
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(proto + "//" + location.host + open.dataset.src + "?cmd=sh&tty=1&stdin=1&rows=" + t.rows + "&cols=" + t.cols);
    ws.binaryType = "arraybuffer";
    shellStatus.textContent = "connecting";
    ws.onopen = function () { shellStatus.textContent = "connected: type in the terminal (Escape, then Tab, leaves it)"; open.textContent = "Close the shell"; t.focus(); };
    ws.onmessage = function (e) {
      var b = new Uint8Array(e.data);
      if (b.length === 0) { return; }
      if (b[0] === STDOUT || b[0] === STDERR) { t.write(dec.decode(b.subarray(1), { stream: true })); }
      else if (b[0] === EXIT) {
        var st = JSON.parse(new TextDecoder().decode(b.subarray(1)));
        t.write("\r\n[the shell ended: exit " + st.exitCode + "]\r\n");
        shellStatus.textContent = "the shell ended (exit " + st.exitCode + ")";
      }
    };
    ws.onclose = function () { ws = null; open.textContent = "Open a shell"; if (shellStatus.textContent.indexOf("ended") < 0) { shellStatus.textContent = "closed"; } };
  });
})();
