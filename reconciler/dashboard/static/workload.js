// The live parts of a container's or pod's page: a log tail (server-sent
// events) and a shell (the access API's exec WebSocket, with a TTY). A
// small terminal of its own: it shows the output as text, without
// escape sequences, and sends each key as a terminal would.
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
  var term = document.getElementById("terminal");
  var shellStatus = document.getElementById("shell-status");
  if (!open || !term) { return; }
  var enc = new TextEncoder();
  var dec = new TextDecoder();
  var ws = null;
  var screen = "";
  // Channels of the exec protocol (reconciler/access/exec.go).
  var STDIN = 0, STDOUT = 1, STDERR = 2, EXIT = 3, RESIZE = 4;

  function send(ch, bytes) {
    if (!ws || ws.readyState !== 1) { return; }
    var msg = new Uint8Array(bytes.length + 1);
    msg[0] = ch; msg.set(bytes, 1);
    ws.send(msg);
  }
  // show adds output to the screen: escape sequences are dropped, a
  // backspace takes back a character, a carriage return not followed by
  // a newline starts the line again.
  function show(text) {
    text = text.replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, "").replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, "").replace(/\x1b[()][0-9A-Za-z]|\x1b[=>78DEHM]/g, "");
    for (var i = 0; i < text.length; i++) {
      var c = text[i];
      if (c === "\b") { screen = screen.slice(0, -1); }
      else if (c === "\r") { if (text[i + 1] !== "\n") { screen = screen.slice(0, screen.lastIndexOf("\n") + 1); } }
      else if (c === "\x07") { }
      else { screen += c; }
    }
    if (screen.length > 200000) { screen = screen.slice(-100000); }
    term.textContent = screen;
    term.scrollTop = term.scrollHeight;
  }
  function size() {
    var cols = Math.max(20, Math.floor(term.clientWidth / 8.5));
    return { rows: 24, cols: cols };
  }
  // Tab is left to the browser, so a keyboard user can leave the terminal.
  var keys = { Enter: "\r", Backspace: "\x7f", Escape: "\x1b", ArrowUp: "\x1b[A", ArrowDown: "\x1b[B", ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D", Home: "\x1b[H", End: "\x1b[F", Delete: "\x1b[3~" };
  term.addEventListener("keydown", function (e) {
    var out = null;
    if (e.ctrlKey && !e.altKey && e.key.length === 1 && /[a-z@\[\\\]^_]/i.test(e.key)) {
      out = String.fromCharCode(e.key.toUpperCase().charCodeAt(0) & 31);
    } else if (keys[e.key] !== undefined) {
      out = keys[e.key];
    } else if (e.key.length === 1 && !e.metaKey) {
      out = e.key;
    }
    if (out !== null && ws) { e.preventDefault(); send(STDIN, enc.encode(out)); }
  });
  term.addEventListener("paste", function (e) {
    var t = (e.clipboardData || window.clipboardData).getData("text");
    if (t && ws) { e.preventDefault(); send(STDIN, enc.encode(t)); }
  });
  open.addEventListener("click", function () {
    if (ws) { ws.close(); return; }
    var s = size();
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(proto + "//" + location.host + open.dataset.src + "?cmd=sh&tty=1&stdin=1&rows=" + s.rows + "&cols=" + s.cols);
    ws.binaryType = "arraybuffer";
    screen = "";
    term.hidden = false;
    shellStatus.textContent = "connecting";
    ws.onopen = function () { shellStatus.textContent = "connected: type in the terminal"; open.textContent = "Close the shell"; term.focus(); };
    ws.onmessage = function (e) {
      var b = new Uint8Array(e.data);
      if (b.length === 0) { return; }
      if (b[0] === STDOUT || b[0] === STDERR) { show(dec.decode(b.subarray(1), { stream: true })); }
      else if (b[0] === EXIT) {
        var st = JSON.parse(dec.decode(b.subarray(1)));
        shellStatus.textContent = "the shell ended (exit " + st.exitCode + ")";
      }
    };
    ws.onclose = function () { ws = null; open.textContent = "Open a shell"; if (shellStatus.textContent.indexOf("ended") < 0) { shellStatus.textContent = "closed"; } };
    window.addEventListener("resize", function () { if (ws) { send(RESIZE, enc.encode(JSON.stringify(size()))); } });
  });
})();
