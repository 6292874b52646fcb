# SPDX-License-Identifier: MIT
"""A small disaggregation proxy: routes each request prefill -> decode with
kv_transfer_params, as vLLM's disaggregated-serving proxies do.

- concurrent (default; the shape of vLLM's P2P proxies): the proxy picks the
  prefill and the decode engine, gives both the same transfer id and sends
  both requests at once -- prefill {"do_remote_decode": true}, max_tokens 1;
  decode {"do_remote_prefill": true, "remote_uri": <prefill's kvwire URI>}.
  The decode grants its blocks while the prefill computes, so each layer
  moves as soon as it is made.
- sequential (the shape of vLLM's toy_proxy_server for NixlConnector): the
  prefill request first; its answer's kv_transfer_params (from the
  connector's request_finished) go to the decode request.

    python3 proxy.py --prefill http://127.0.0.1:8100 --decode http://127.0.0.1:8200 --port 8000
    curl -s localhost:8000/v1/completions -d '{"prompt_token_ids": [1,2,3], "max_tokens": 8}'
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import urlparse


def post(url: str, path: str, body: dict, timeout: float = 300.0) -> dict:
    u = urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        data = json.dumps(body).encode()
        c.request("POST", path, data, {"Content-Type": "application/json"})
        r = c.getresponse()
        return json.loads(r.read())
    finally:
        c.close()


def get(url: str, path: str, timeout: float = 10.0) -> dict:
    u = urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        c.request("GET", path)
        return json.loads(c.getresponse().read())
    finally:
        c.close()


class Proxy:
    def __init__(self, prefills: list[str], decodes: list[str], mode: str = "concurrent"):
        self.prefills = [(u, get(u, "/health")) for u in prefills]
        self.decodes = [(u, get(u, "/health")) for u in decodes]
        self._p = itertools.cycle(range(len(self.prefills)))
        self._d = itertools.cycle(range(len(self.decodes)))
        self.mode = mode
        self._lock = threading.Lock()
        self.connect_all()

    def connect_all(self, timeout: float = 60.0) -> None:
        """Has every decode engine dial every prefill engine now (kvwire handshakes
        while the engines are idle), and waits until the endpoints are up."""
        for durl, _ in self.decodes:
            for _purl, pinfo in self.prefills:
                post(durl, "/kv_connect", {"uri": pinfo["kv_uri"], "engine_id": pinfo["engine_id"]})
        want = {p["engine_id"] for _, p in self.prefills}
        end = time.monotonic() + timeout
        for durl, _ in self.decodes:
            while not want <= set(get(durl, "/health").get("peers_ready") or ()):
                if time.monotonic() > end:
                    raise TimeoutError(f"decode {durl} did not connect to {sorted(want)}")
                time.sleep(0.02)

    def complete(self, prompt: list[int], max_tokens: int, request_id: Optional[str] = None,
                 layerwise: bool = True, prefill: Optional[int] = None,
                 mode: Optional[str] = None) -> dict:
        rid = request_id or uuid.uuid4().hex[:16]
        t_arrival = time.monotonic()
        with self._lock:
            pi = next(self._p) if prefill is None else prefill
            di = next(self._d)
        purl, pinfo = self.prefills[pi]
        durl, _dinfo = self.decodes[di]
        pre_body = {"request_id": f"{rid}-p", "prompt_token_ids": prompt, "max_tokens": 1,
                    "kv_transfer_params": {"do_remote_decode": True, "transfer_id": rid,
                                           "layerwise": layerwise}}
        if (mode or self.mode) == "sequential":
            pre = post(purl, "/v1/completions", pre_body)
            if pre.get("error"):
                return {"request_id": rid, "error": pre["error"], "prefill": pre}
            params = dict(pre["kv_transfer_params"])
            dec = post(durl, "/v1/completions", {"request_id": f"{rid}-d",
                                                 "prompt_token_ids": prompt,
                                                 "max_tokens": max_tokens,
                                                 "kv_transfer_params": params})
        else:
            out: dict[str, Any] = {}

            def run_prefill() -> None:
                try:
                    out["prefill"] = post(purl, "/v1/completions", pre_body)
                except Exception as e:  # noqa: BLE001 - a killed prefill engine
                    out["prefill"] = {"error": {"status": "PROXY", "message": repr(e)}}
            th = threading.Thread(target=run_prefill, daemon=True)
            th.start()
            dec = post(durl, "/v1/completions", {
                "request_id": f"{rid}-d", "prompt_token_ids": prompt, "max_tokens": max_tokens,
                "kv_transfer_params": {"do_remote_prefill": True, "transfer_id": rid,
                                       "remote_engine_id": pinfo["engine_id"],
                                       "remote_uri": pinfo["kv_uri"],
                                       # the prefill's geometry, as its health page says
                                       "remote_block_size": pinfo.get("block_size"),
                                       "remote_kv_layout": pinfo.get("kv_layout")}})
            th.join(60)
            pre = out.get("prefill", {"error": {"status": "PROXY", "message": "no answer"}})
        return {"request_id": rid, "token_ids": dec.get("token_ids"), "error": dec.get("error"),
                "logits_b64": dec.get("logits_b64"), "logits_sha256": dec.get("logits_sha256"),
                "t_arrival": t_arrival, "prefill": pre, "decode": dec,
                "prefill_engine": pinfo["engine_id"]}

    def serve(self, port: int) -> ThreadingHTTPServer:
        proxy = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                res = proxy.complete(body["prompt_token_ids"], int(body.get("max_tokens", 16)),
                                     body.get("request_id"), bool(body.get("layerwise", True)))
                data = json.dumps(res).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        srv = ThreadingHTTPServer(("127.0.0.1", port), H)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return srv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prefill", action="append", required=True, help="prefill engine URL")
    ap.add_argument("--decode", action="append", required=True, help="decode engine URL")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--mode", choices=["concurrent", "sequential"], default="concurrent")
    a = ap.parse_args()
    srv = Proxy(a.prefill, a.decode, a.mode).serve(a.port)
    print(f"proxy on http://127.0.0.1:{srv.server_address[1]}", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
