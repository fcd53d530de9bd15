#!/usr/bin/env python3
"""A stand-in for Cloudflare Turnstile, for tests: the widget's script and `siteverify`,
held to Cloudflare's documented behaviour (developers.cloudflare.com/turnstile):

- `GET /turnstile/v0/api.js` defines `window.turnstile` with `render(container, {sitekey,
  callback, "error-callback", "expired-callback"})`, `reset`, `remove` and `getResponse`.
  The rendered widget is a checkbox labelled "Verify you are human"; ticking it asks this
  server for a token (bound to the page's host name) and calls `callback(token)`.
- `POST /turnstile/v0/siteverify` (form or JSON: `secret`, `response`, optional `remoteip`,
  `idempotency_key`) answers `{"success", "challenge_ts", "hostname", "error-codes",
  "action", "cdata"}`. Error codes: `missing-input-secret`, `invalid-input-secret`,
  `missing-input-response`, `invalid-input-response`, `timeout-or-duplicate` (a token is
  valid for 300 seconds and verifies once), `bad-request`.
- `POST /_fake/token {"hostname": "..."}` mints a token as if a browser solved the challenge
  on that host (for API tests); `GET /_fake/verifications` counts siteverify calls.

Usage: fake_turnstile.py --secret S --site-key K. Prints `listening on PORT` when ready.
Standard library only.
"""
import argparse
import json
import secrets
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_LIFETIME = 300

SCRIPT = r"""
(function () {
  var base = %(base)s;
  var widgets = {};
  var next = 0;
  function el(target) {
    return typeof target === "string" ? document.querySelector(target) : target;
  }
  window.turnstile = {
    render: function (container, options) {
      var host = el(container);
      if (!host) { throw new Error("turnstile: container not found"); }
      var id = "cf-" + (next++);
      var label = document.createElement("label");
      label.setAttribute("data-turnstile-widget", id);
      var box = document.createElement("input");
      box.type = "checkbox";
      label.appendChild(box);
      label.appendChild(document.createTextNode(" Verify you are human"));
      host.appendChild(label);
      widgets[id] = { label: label, token: "", options: options || {} };
      box.addEventListener("change", function () {
        if (!box.checked) { return; }
        box.disabled = true;
        fetch(base + "/_fake/token", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ hostname: location.hostname, sitekey: (options || {}).sitekey })
        }).then(function (r) { return r.json(); }).then(function (answer) {
          if (!answer.token) { throw new Error("no token"); }
          widgets[id].token = answer.token;
          if (options && typeof options.callback === "function") { options.callback(answer.token); }
        }).catch(function () {
          box.disabled = false; box.checked = false;
          if (options && typeof options["error-callback"] === "function") { options["error-callback"]("network"); }
        });
      });
      return id;
    },
    reset: function (id) {
      var w = widgets[id];
      if (!w) { return; }
      w.token = "";
      var box = w.label.querySelector("input");
      box.checked = false; box.disabled = false;
    },
    remove: function (id) {
      var w = widgets[id];
      if (w && w.label.parentNode) { w.label.parentNode.removeChild(w.label); }
      delete widgets[id];
    },
    getResponse: function (id) {
      var w = widgets[id];
      return w ? w.token : undefined;
    }
  };
})();
"""


class State:
    def __init__(self, secret, site_key):
        self.secret = secret
        self.site_key = site_key
        self.tokens = {}  # token -> (issued_at, hostname, used)
        self.verifications = 0
        self.lock = threading.Lock()


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status, body, content_type="application/json"):
            data = body if isinstance(body, bytes) else body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Headers", "Content-Type")
            self.end_headers()
            self.wfile.write(data)

        def do_OPTIONS(self):
            self._send(204, b"", "text/plain")

        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            if path == "/turnstile/v0/api.js":
                host = self.headers.get("Host", "127.0.0.1")
                script = SCRIPT % {"base": json.dumps("http://" + host)}
                self._send(200, script, "application/javascript")
            elif path == "/_fake/verifications":
                with state.lock:
                    self._send(200, json.dumps({"verifications": state.verifications}))
            else:
                self._send(404, json.dumps({"error": "not found"}))

        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if kind == "application/json":
                try:
                    value = json.loads(raw or b"{}")
                    return value if isinstance(value, dict) else None
                except ValueError:
                    return None
            return {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode(errors="replace")).items()}

        def do_POST(self):
            path = urllib.parse.urlsplit(self.path).path
            body = self._body()
            if path == "/_fake/token":
                hostname = (body or {}).get("hostname") or "localhost"
                token = "XXXX.DUMMY.TOKEN." + secrets.token_urlsafe(24)
                with state.lock:
                    state.tokens[token] = [time.time(), hostname, False]
                self._send(200, json.dumps({"token": token}))
                return
            if path != "/turnstile/v0/siteverify":
                self._send(404, json.dumps({"error": "not found"}))
                return
            with state.lock:
                state.verifications += 1
            codes = []
            if body is None:
                codes = ["bad-request"]
            elif not body.get("secret"):
                codes = ["missing-input-secret"]
            elif body.get("secret") != state.secret:
                codes = ["invalid-input-secret"]
            elif not body.get("response"):
                codes = ["missing-input-response"]
            hostname = None
            issued = None
            if not codes:
                with state.lock:
                    entry = state.tokens.get(body["response"])
                    if entry is None:
                        codes = ["invalid-input-response"]
                    elif entry[2] or time.time() - entry[0] > TOKEN_LIFETIME:
                        codes = ["timeout-or-duplicate"]
                    else:
                        entry[2] = True
                        issued, hostname = entry[0], entry[1]
            if codes:
                self._send(200, json.dumps({"success": False, "error-codes": codes, "messages": []}))
                return
            stamp = datetime.fromtimestamp(issued, timezone.utc).isoformat().replace("+00:00", "Z")
            self._send(200, json.dumps({
                "success": True, "challenge_ts": stamp, "hostname": hostname,
                "error-codes": [], "action": "", "cdata": "", "metadata": {"interactive": True},
            }))

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret", required=True)
    parser.add_argument("--site-key", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    state = State(args.secret, args.site_key)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state))
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
