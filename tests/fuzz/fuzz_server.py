#!/usr/bin/env python
"""Seeded fuzzer for `tfchargen serve`'s REST API: bad requests get their error, the server lives.

    python tests/fuzz/fuzz_server.py --url http://127.0.0.1:8501 [--cases 1000] [--seed 0] [--json OUT]

Sends random hostile requests (malformed and non-object JSON, random bytes, wrong types,
missing and extra inputs, both or neither of instances/inputs, bad base64, controls the
graph refuses, NaN/Infinity tokens, mismatched row counts, unknown models, versions,
signatures and paths, bodies over the size limit, raw protocol garbage, clients that hang
up mid-body) and, after each, one good request. Every bad request must get a JSON
``{"error": ...}`` with the 4xx status TF Serving would use (never a 5xx, a hang or a closed
connection without an answer, except where the client itself hung up; a path outside /v1/
gets TF Serving's HTML 404 page), and every good
request must succeed. Exit code 1 on any violation; with --json, writes the counts.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import random
import socket
import sys
import time
import urllib.parse

GOOD = {"signature_name": "generate", "instances": [
    {"prompt": "Today ", "max_length": 3, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 1}]}
CONTROLS = {"max_length": 3, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 1}
HOSTILE_VALUES = [None, True, 1.5, -1, 2 ** 31, 2 ** 63, "x", [], [[]], [[1, 2], [3]], {}, {"b64": "!!"},
                  {"b64": 5}, float("nan"), float("inf"), "\ud800", "\x00" * 10, ["a"] * 3]


def _case(rng: random.Random, model: str, limit: int) -> tuple[str, str, bytes, set[int]]:
    """(kind, path, body, allowed statuses) of one bad request."""
    path = f"/v1/models/{model}:predict"
    kind = rng.choice(["bytes", "truncated", "not_object", "wrong_type", "missing", "extra", "both_neither",
                       "bad_control", "mismatch", "unknown", "too_big", "columnar_wrong"])
    if kind == "bytes":
        return kind, path, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))), {400}
    if kind == "truncated":
        body = json.dumps(GOOD).encode()
        return kind, path, body[:rng.randint(1, len(body) - 1)], {400}
    if kind == "not_object":
        return kind, path, json.dumps(rng.choice([[1], 3, "s", None, [GOOD]])).encode(), {400}
    if kind == "wrong_type":
        row = dict(CONTROLS, prompt="Today ")
        row[rng.choice(list(row))] = rng.choice(HOSTILE_VALUES)
        # Some hostile values are valid where they land (a NUL prompt, a temperature of 1.5).
        return kind, path, json.dumps({"signature_name": "generate", "instances": [row]}).encode(), {200, 400}
    if kind == "missing":
        row = dict(CONTROLS, prompt="x")
        del row[rng.choice(list(row))]
        return kind, path, json.dumps({"signature_name": "generate", "instances": [row]}).encode(), {400}
    if kind == "extra":
        row = dict(CONTROLS, prompt="x", **{rng.choice(["foo", "text", "Prompt"]): 1})
        return kind, path, json.dumps({"signature_name": "generate", "instances": [row]}).encode(), {400}
    if kind == "both_neither":
        body = rng.choice([{"instances": ["a"], "inputs": ["a"]}, {}, {"signature_name": "generate"},
                           {"instances": []}, {"instances": "a"}, {"signature_name": 3, "instances": ["a"]}])
        return kind, path, json.dumps(body).encode(), {400}
    if kind == "bad_control":
        row = dict(CONTROLS, prompt="x")
        name, value = rng.choice([("max_length", -1), ("max_length", 5000), ("temperature", -0.5),
                                  ("temperature", float("nan")), ("temperature", float("inf")),
                                  ("top_k", -3), ("top_p", 0.0), ("top_p", 1.5)])
        row[name] = value
        return kind, path, json.dumps({"signature_name": "generate", "instances": [row]}).encode(), {400}
    if kind == "mismatch":
        inputs = {k: [v] for k, v in CONTROLS.items()}
        inputs["prompt"] = ["a", "b"]
        return kind, path, json.dumps({"signature_name": "generate", "inputs": inputs}).encode(), {400}
    if kind == "unknown":
        # TF Serving's codes (http_rest_api_handler.cc, http_rest_api_util.cc, http_server.cc): unknown
        # models and versions 404; URLs its grammar refuses, versions past int64, :classify without
        # "examples" and unknown signatures 400; paths outside /v1/ libevent's 404 page.
        path, status = rng.choice([(f"/v1/models/no-{model}:predict", 404),
                                   (f"/v1/models/{model}/versions/999:predict", 404),
                                   (f"/v1/models/{model}:classify", 400), (f"/v1/models/{model}:regress", 400),
                                   (f"/v1/models/{model}:explain", 400), ("/v1/x", 400), ("/v1/models", 400),
                                   (f"/v1/models/{model}/versions/{2 ** 64}:predict", 400),
                                   (f"/v1/models/{model}/labels/none:predict", 400), ("/v2/x", 404),
                                   (path, 400)])  # the last: an unknown signature
        if path == "/v2/x":
            return "unknown_path", path, b"{}", {404}
        return kind, path, json.dumps({"signature_name": "nope", "instances": ["a"]}).encode(), {status}
    if kind == "too_big":
        return kind, path, b"", {413}  # sent with a Content-Length over the limit (see fuzz())
    prompt = rng.choice([[1, 2], [[b"x".hex()]], 7, [None]])
    return kind, path, json.dumps({"inputs": {"prompt": prompt}}).encode(), {400}


def _post(url, path: str, body: bytes, content_length: int | None = None, timeout=60.0):
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body) if content_length is None else content_length))
        conn.endheaders()
        if content_length is None:
            conn.send(body)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def _raw(url, data: bytes, read=True) -> bytes:
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        s.sendall(data)
        if not read:
            return b""
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def fuzz(url: str, model: str = "chargen", cases: int = 1000, seed: int = 0, body_limit: int = 8 << 20) -> dict:
    """Runs the fuzzer; returns counts and the first violations."""
    rng = random.Random(seed)
    u = urllib.parse.urlsplit(url)
    counts, statuses, violations = collections.Counter(), collections.Counter(), []
    good_body = json.dumps(GOOD).encode()
    t0 = time.monotonic()
    for i in range(cases):
        if i % 50 == 49:  # raw-socket cases: protocol garbage and clients that hang up
            kind = ("raw_garbage", "hangup_mid_body", "hangup_before_reply")[(i // 50) % 3]
            if kind == "raw_garbage":
                reply = _raw(u, bytes(rng.getrandbits(8) for _ in range(64)) + b"\r\n\r\n")
                first = reply.split(b"\r\n")[0].split(b" ")
                ok = reply == b"" or first[0].startswith(b"HTTP/") and first[1][:1] == b"4" and b'"error": ' in reply
            elif kind == "hangup_mid_body":
                head = f"POST /v1/models/{model}:predict HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{{"
                _raw(u, head.encode(), read=False)
                ok = True
            else:
                _raw(u, f"POST /v1/models/{model}:predict HTTP/1.1\r\nContent-Length: {len(good_body)}\r\n\r\n".encode()
                     + good_body, read=False)
                ok = True
            status = "raw"
        else:
            kind, path, body, allowed = _case(rng, model, body_limit)
            try:
                if kind == "too_big":
                    status, reply = _post(u, path, b"", content_length=body_limit + rng.randint(1, 1 << 30))
                else:
                    status, reply = _post(u, path, body)
                if kind == "unknown_path":  # libevent's HTML page, as TF Serving answers it
                    ok = status in allowed and b"<TITLE>404 Not Found</TITLE>" in reply
                else:
                    error = json.loads(reply).get("error") if status != 200 else None
                    ok = status in allowed and (status == 200 or isinstance(error, str) and error != "")
            except (OSError, http.client.HTTPException, ValueError) as e:
                status, ok, reply = f"exception {type(e).__name__}", False, str(e).encode()
        counts[kind] += 1
        statuses[str(status)] += 1
        if not ok and len(violations) < 20:
            shown = reply[:300].decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
            violations.append({"case": i, "kind": kind, "status": str(status), "reply": shown})
        if not ok:
            counts["violations"] += 1
        status, reply = _post(u, f"/v1/models/{model}:predict", good_body)  # the next good request
        if status != 200 or "predictions" not in json.loads(reply):
            counts["good_failed"] += 1
            if len(violations) < 20:
                violations.append({"case": i, "kind": "good_after_" + kind, "status": status,
                                   "reply": reply[:300].decode("utf-8", "replace")})
        else:
            counts["good_ok"] += 1
    return {"cases": cases, "seed": seed, "seconds": round(time.monotonic() - t0, 1), "by_kind": dict(counts),
            "by_status": dict(statuses), "violations": violations}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--model-name", default="chargen")
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the summary here")
    args = p.parse_args(argv)
    result = fuzz(args.url, args.model_name, args.cases, args.seed)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "server_fuzz", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "command": " ".join(["python tests/fuzz/fuzz_server.py", *(argv or sys.argv[1:])]),
                       **result}, f, indent=2)
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
