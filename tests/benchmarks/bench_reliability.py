"""Reliability of the protocol layer over real stdio (issue 13): not a timed test, a report.

    .venv/bin/python tests/benchmarks/bench_reliability.py [--edits 10000] [--requests 5000]
                                                          [--fuzz 1000] [--model PATH]

Prints:
- edits per second held over stdio, the server's copy checked equal to the client's after
  every 1,000 edits (typing with emoji, CJK and CRLF, and random ranged edits);
- requests per second held (hover, inline completion, document state, an unknown method),
  pipelined 32 deep, and typing with a completion request after every edit: every request
  answered exactly once, none lost, none stuck;
- the server's memory growth (RSS) over 10,000 edits after a warm-up;
- malformed messages tried (fixed hostile cases and random mutations of valid frames) with
  the number that crashed the server or left it deaf (a request after each must be answered);
- the lifecycle checks (exit codes, requests after shutdown, leaving while the model loads).

Without --model the server has no model (its load fails at once): the figures are the
protocol layer's. With --model, completions run the model too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from tests.e2e.rawlsp import RawServer  # noqa: E402
from tests.lsp_reference import apply_ref, random_edit, random_text  # noqa: E402

URI = "file:///tmp/tandem-bench/bench.py"
EOL = re.compile(r"\r\n|\r|\n")


def u16(s: str) -> int:
    return len(s) + sum(1 for c in s if ord(c) > 0xFFFF)


def cp_at(line: str, units: int) -> int:
    """Code points of `line` covering `units` UTF-16 units (positions we generate are on boundaries)."""
    n = 0
    for i, c in enumerate(line):
        if n >= units:
            return i
        n += 2 if ord(c) > 0xFFFF else 1
    return len(line)


class Client:
    """The editor's side: lines with their terminators; UTF-16 positions; fast for big files."""

    def __init__(self, text: str):
        self.lines = EOL.split(text)  # contents only
        self.eols = EOL.findall(text)

    def text(self) -> str:
        return "".join(line + eol for line, eol in zip(self.lines, self.eols + [""]))

    def typing_edit(self, rng: random.Random, cursor: list[int]):
        line = min(cursor[0], len(self.lines) - 1)
        content = self.lines[line]
        col = min(cursor[1], u16(content))
        r = rng.random()
        if r < 0.75:  # type a character (now and then an emoji or CJK)
            ch = rng.choice("abcdefghijklmnopqrstuvwxyz_ ()=:.,0123456789") if rng.random() < 0.9 else rng.choice("😀中é👩‍👩‍👧")
            i = cp_at(content, col)
            self.lines[line] = content[:i] + ch + content[i:]
            cursor[:] = [line, col + u16(ch)]
            return (line, col), (line, col), ch
        if r < 0.85 and col > 0:  # backspace one character
            i = cp_at(content, col)
            prev = content[i - 1]
            self.lines[line] = content[:i - 1] + content[i:]
            cursor[:] = [line, col - u16(prev)]
            return (line, col - u16(prev)), (line, col), ""
        # a new line (CRLF one time in five), the cursor moves to a random line now and then
        eol = "\r\n" if rng.random() < 0.2 else "\n"
        i = cp_at(content, col)
        self.lines[line:line + 1] = [content[:i], content[i:]]
        self.eols[line:line] = [eol]
        cursor[:] = [line + 1, 0] if rng.random() < 0.7 else [rng.randrange(len(self.lines)), 0]
        return (line, col), (line, col), eol


def change_msg(version: int, a, b, text: str) -> dict:
    return {"jsonrpc": "2.0", "method": "textDocument/didChange",
            "params": {"textDocument": {"uri": URI, "version": version},
                       "contentChanges": [{"range": {"start": {"line": a[0], "character": a[1]},
                                                     "end": {"line": b[0], "character": b[1]}}, "text": text}]}}


def rss(s: RawServer) -> int:
    return psutil.Process(s.proc.pid).memory_info().rss


def document_state(s: RawServer) -> dict:
    return s.call("tandem/documentState", {"textDocument": {"uri": URI}}, 60)["result"]


def start_server(home: Path, model: str | None, env: dict | None = None) -> RawServer:
    s = RawServer(home=home, env=env)
    s.initialize(settings={"modelPath": model} if model else None)
    if model:
        s.wait_for_state("ready", 120)
    return s


# -- 1. edits ----------------------------------------------------------------------------------
def bench_edits(home: Path, n: int, model: str | None) -> dict:
    rng = random.Random(1)
    start_text = "".join(f"def f_{i}(x):  # ünïcødé 😀 中文\n    return x + {i}\n" for i in range(500))
    client = Client(start_text)
    with start_server(home, model) as s:
        s.open(URI, start_text)
        cursor = [100, 0]
        version = 1
        checks = mismatches = 0

        def run(count: int) -> float:
            nonlocal version, checks, mismatches
            t0 = time.perf_counter()
            buf = []
            for k in range(count):
                version += 1
                a, b, text = client.typing_edit(rng, cursor)
                buf.append(s.frame(json.dumps(change_msg(version, a, b, text)).encode()))
                if len(buf) >= 50:
                    s.write(b"".join(buf))
                    buf.clear()
                if (k + 1) % 1000 == 0:
                    s.write(b"".join(buf))
                    buf.clear()
                    state = document_state(s)
                    checks += 1
                    mismatches += state["text"] != client.text() or state["version"] != version
            s.write(b"".join(buf))
            document_state(s)
            return time.perf_counter() - t0

        run(1000)  # warm-up
        rss0 = rss(s)
        elapsed = run(n)
        rss1 = rss(s)
        # random ranged edits (any range, past line ends, reversed) on a small document, checked too
        text = random_text(rng, 40)
        s.open(URI, text, version=1)
        t0 = time.perf_counter()
        for v in range(2000):
            a, b, new = random_edit(rng, text, "utf-16")
            text = apply_ref(text, a, b, new, "utf-16")
            s.send(change_msg(v + 2, a, b, new))
        ranged_ok = document_state(s)["text"] == text
        ranged_s = time.perf_counter() - t0
        return {"edits": n, "seconds": elapsed, "per_s": n / elapsed, "checks": checks, "mismatches": mismatches,
                "rss_before": rss0, "rss_after": rss1, "chars": len(client.text()),
                "ranged_edits_per_s": 2000 / ranged_s, "ranged_in_sync": ranged_ok}


# -- 2. requests -------------------------------------------------------------------------------
def bench_requests(home: Path, n: int, model: str | None, window: int = 32) -> dict:
    rng = random.Random(2)
    text = "".join(f"def g_{i}(a, b):\n    return a * b + {i}\n" for i in range(300)) + "def add(a, b):\n    "
    last = text.count("\n")
    with start_server(home, model) as s:
        s.open(URI, text)

        def request(i: int) -> tuple[str, dict]:
            kind = i % 4
            pos = {"line": rng.randrange(last + 1), "character": rng.randrange(12)}
            if kind == 0:
                return "textDocument/hover", {"textDocument": {"uri": URI}, "position": pos}
            if kind == 1:
                return "textDocument/inlineCompletion", {"textDocument": {"uri": URI}, "position": pos,
                                                         "context": {"triggerKind": 2}}
            if kind == 2:
                return "tandem/documentState", {"textDocument": {"uri": URI}}
            return "tandem/ping", {}

        sent, answered, errors, t0 = 0, 0, 0, time.perf_counter()
        outstanding: list[int] = []
        latencies: list[float] = []
        sent_at: dict[int, float] = {}
        while answered < n:
            while sent < n and len(outstanding) < window:
                method, params = request(sent)
                rid = s.request(method, params)
                sent_at[rid] = time.perf_counter()
                outstanding.append(rid)
                sent += 1
            rid = outstanding.pop(0)
            r = s.response(rid, 30)
            latencies.append(time.perf_counter() - sent_at.pop(rid))
            answered += 1
            if "error" in r and r["error"]["code"] != -32601:
                errors += 1
        elapsed = time.perf_counter() - t0
        time.sleep(0.5)
        with s._cond:
            extra = len(s.responses)  # answered twice, or answers to ids never sent
        # typing: an edit then a completion request, as an editor sends them
        cursor, client = [last, 4], Client(text)
        t1 = time.perf_counter()
        typed = min(n, 2000)
        pending = []
        for v in range(typed):
            a, b, t = client.typing_edit(rng, cursor)
            s.send(change_msg(v + 2, a, b, t))
            pending.append(s.request("textDocument/inlineCompletion", {
                "textDocument": {"uri": URI}, "position": {"line": cursor[0], "character": cursor[1]},
                "context": {"triggerKind": 2}}))
            if len(pending) >= window:
                s.response(pending.pop(0), 60)
        for rid in pending:
            s.response(rid, 60)
        typing_s = time.perf_counter() - t1
        in_sync = document_state(s)["text"] == client.text()
        latencies.sort()
        return {"requests": n, "seconds": elapsed, "per_s": n / elapsed, "unexpected_errors": errors,
                "lost": sent - answered, "extra": extra, "p50_ms": 1000 * latencies[len(latencies) // 2],
                "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
                "typing_pairs": typed, "typing_pairs_per_s": typed / typing_s, "typing_in_sync": in_sync}


# -- 3. malformed input ------------------------------------------------------------------------
def _req(msg_id, method="textDocument/hover", params=None) -> bytes:
    params = params if params is not None else {"textDocument": {"uri": URI}, "position": {"line": 1, "character": 2}}
    return json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}).encode()


def _frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def fixed_cases() -> list[tuple[str, bytes]]:
    body = _req(1)
    inline = lambda pos: _frame(_req(2, "textDocument/inlineCompletion",  # noqa: E731
                                     {"textDocument": {"uri": URI}, "position": pos, "context": {"triggerKind": 2}}))
    return [
        ("Content-Length too small", b"Content-Length: %d\r\n\r\n" % (len(body) - 10) + body),
        ("Content-Length too large", b"Content-Length: %d\r\n\r\n" % (len(body) + 40) + body),
        ("Content-Length missing", b"Content-Type: application/vscode-jsonrpc\r\n\r\n" + body),
        ("no header at all", body),
        ("Content-Length non-numeric", b"Content-Length: abc\r\n\r\n" + body),
        ("Content-Length negative", b"Content-Length: -5\r\n\r\n" + body),
        ("Content-Length 1e3", b"Content-Length: 1e3\r\n\r\n" + body),
        ("Content-Length empty", b"Content-Length:\r\n\r\n" + body),
        ("Content-Length 2^40", b"Content-Length: %d\r\n\r\n" % 2**40 + body),
        ("Content-Length 10^32", b"Content-Length: %d\r\n\r\n" % 10**32 + body),
        ("4 KB of random bytes", bytes(random.Random(4).randrange(256) for _ in range(4096))),
        ("4 KB of CRLFs and NULs", b"\r\n\x00" * 1365),
        ("header without blank line", b"Content-Length: 5\r\n" + body),
        ("LF-only header", b"Content-Length: %d\n\n" % len(body) + body),
        ("invalid JSON", _frame(b'{"jsonrpc": "2.0", "id": 3, "method": ')),
        ("invalid UTF-8", _frame(b'{"jsonrpc": "2.0", "id": 4, "method": "\xff\xfe"}')),
        ("JSON array (batch)", _frame(b"[1, 2, 3]")),
        ("JSON string", _frame(b'"hello"')),
        ("jsonrpc 1.0", _frame(b'{"jsonrpc": "1.0", "id": 5, "method": "tandem/ping"}')),
        ("id an object", _frame(b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "tandem/ping"}')),
        ("method a number", _frame(b'{"jsonrpc": "2.0", "id": 6, "method": 7}')),
        ("deeply nested JSON", _frame(b'{"jsonrpc": "2.0", "id": 7, "method": "x", "params": ' + b"[" * 100000 + b"]" * 100000 + b"}")),
        ("position a string", inline("1:4")),
        ("line a string", inline({"line": "1", "character": 0})),
        ("negative line", inline({"line": -1, "character": 0})),
        ("line 10^30", inline({"line": 10**30, "character": 0})),
        ("character a float", inline({"line": 1, "character": 1.5})),
        ("params missing", _frame(json.dumps({"jsonrpc": "2.0", "id": 8, "method": "textDocument/hover"}).encode())),
        ("didChange range a string", _frame(json.dumps(change_msg(1, (0, 0), (0, 0), "x")).replace(
            '"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}}', '"range": "all"').encode())),
        ("lone surrogate and NUL in text", _frame(json.dumps({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
            "textDocument": {"uri": "file:///odd.py", "languageId": "python", "version": 1, "text": "\udcff\x00"}}}).encode())),
        ("response to nothing", _frame(b'{"jsonrpc": "2.0", "id": 99, "result": 1}')),
        ("unknown notification", _frame(b'{"jsonrpc": "2.0", "method": "$/whatever", "params": {}}')),
    ]


def mutate(rng: random.Random) -> bytes:
    bases = [_req(rng.randrange(1000)),
             json.dumps(change_msg(1, (0, 0), (0, 1), "y")).encode(),
             _req(rng.randrange(1000), "textDocument/inlineCompletion",
                  {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 3}, "context": {"triggerKind": 1}})]
    body = bytearray(rng.choice(bases))
    kind = rng.randrange(7)
    if kind == 0:  # Content-Length off by a little
        return b"Content-Length: %d\r\n\r\n" % max(0, len(body) + rng.choice([-1, 1]) * rng.randint(1, 60)) + bytes(body)
    if kind == 1:  # Content-Length junk
        junk = rng.choice([b"-1", b"abc", b"", b"0x10", b"%d" % 2**rng.randint(30, 80), b"1 2", b"\xff"])
        return b"Content-Length: " + junk + b"\r\n\r\n" + bytes(body)
    if kind == 2:  # bit flips in the body
        for _ in range(rng.randint(1, 5)):
            i = rng.randrange(len(body))
            body[i] ^= 1 << rng.randrange(8)
        return _frame(bytes(body))
    if kind == 3:  # truncated, or junk appended, with a matching Content-Length
        body = body[:rng.randrange(len(body))] if rng.random() < 0.5 else body + bytes(rng.randrange(256) for _ in range(20))
        return _frame(bytes(body))
    if kind == 4:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096)))
    if kind == 5:  # a header mangled
        frame = bytearray(_frame(bytes(body)))
        i = rng.randrange(0, 20)
        frame[i] = rng.randrange(256)
        return bytes(frame)
    # valid JSON, params of the wrong shape
    msg = json.loads(bytes(body))
    target = msg.get("params", {})
    for key in ("position", "textDocument", "contentChanges"):
        if key in target:
            target[key] = rng.choice([None, "x", -1, 10**30, [], {"line": "0"}, True, 1.5])
            break
    return _frame(json.dumps(msg).encode())


def bench_malformed(home: Path, fuzz: int) -> dict:
    rng = random.Random(3)
    results = {"fixed": 0, "fuzz": 0, "crashed": 0, "deaf": 0, "needed_more_input": 0, "failures": [],
               "error_popups": 0, "slow": []}
    cases = [(name, data) for name, data in fixed_cases()] + [(f"fuzz #{i}", mutate(rng)) for i in range(fuzz)]
    s = start_server(home, None)
    s.open(URI, "def add(a, b):\n    return a + b\n")
    try:
        for i, (name, data) in enumerate(cases):
            s.write(data)
            answered = False
            for attempt in range(3):  # later input may be what completes a broken frame
                rid = f"ping-{i}-{attempt}"
                s.request("tandem/ping", {}, msg_id=rid)
                try:
                    s.response(rid, 5)
                    answered = True
                    if attempt > 0:
                        results["needed_more_input"] += 1
                        results["slow"].append(name)
                    break
                except AssertionError:
                    if s.proc.poll() is not None:
                        break
            if s.proc.poll() is not None:
                results["crashed"] += 1
                results["failures"].append(f"{name}: the server exited ({s.proc.returncode})")
                s = start_server(home, None)
                s.open(URI, "x = 1\n")
            elif not answered:
                results["deaf"] += 1
                results["failures"].append(f"{name}: no answer")
            results["fixed" if not name.startswith("fuzz") else "fuzz"] += 1
        results["error_popups"] = sum("Error in server" in m for m in s.show_messages())
        results["rss"] = rss(s)
    finally:
        s.close()
    return results


# -- 4. lifecycle ------------------------------------------------------------------------------
def bench_lifecycle(home: Path) -> list[tuple[str, str, bool]]:
    out = []
    with RawServer(home=home) as s:
        s.initialize()
        s.notify("exit")
        code = s.wait_exit(10)
        out.append(("exit without shutdown", f"code {code}", code == 1))
    with RawServer(home=home) as s:
        s.initialize()
        s.call("shutdown")
        r = s.call("textDocument/hover", {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 0}})
        out.append(("request after shutdown", f"error {r.get('error', {}).get('code')}", r.get("error", {}).get("code") == -32600))
        s.notify("exit")
        code = s.wait_exit(10)
        out.append(("shutdown then exit", f"code {code}", code == 0))
    with RawServer(home=home) as s:
        r = s.call("textDocument/hover", {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 0}})
        out.append(("request before initialize", f"error {r.get('error', {}).get('code')}", r.get("error", {}).get("code") == -32002))
    for how in ("exit", "stdin closed"):
        with RawServer(home=home, env={"TANDEM_DEBUG_DELAYS": "load=3000"}) as s:
            s.initialize({"window": {"workDoneProgress": True}})
            time.sleep(0.5)
            t0 = time.monotonic()
            s.notify("exit") if how == "exit" else s.proc.stdin.close()
            code = s.wait_exit(10)
            took = time.monotonic() - t0
            time.sleep(0.3)
            out.append((f"{how} while the model loads", f"code {code} in {took * 1000:.0f} ms, stderr {s.stderr_bytes} bytes",
                        code == 1 and took < 1.5 and s.stderr_bytes < 20_000))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=5_000)
    ap.add_argument("--fuzz", type=int, default=1_000)
    ap.add_argument("--model", help="a model directory (e.g. the tiny test model); default: none")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}, "
          f"load average {load[0]:.1f} at start (shared with other jobs)")
    print(f"model: {args.model or 'none (the protocol layer alone)'}\n")

    e = bench_edits(home, args.edits, args.model)
    print(f"edits: {e['edits']:,} typing edits in {e['seconds']:.1f} s = {e['per_s']:,.0f} edits/s held "
          f"(document ~{e['chars'] // 1000} K chars); {e['checks']} sync checks, {e['mismatches']} mismatches")
    print(f"       random ranged edits: {e['ranged_edits_per_s']:,.0f} edits/s, in sync: {e['ranged_in_sync']}")
    print(f"memory: RSS {e['rss_before'] / 2**20:.1f} MiB after a 1,000-edit warm-up -> {e['rss_after'] / 2**20:.1f} MiB "
          f"after {e['edits']:,} more edits (growth {(e['rss_after'] - e['rss_before']) / 2**20:+.1f} MiB)")

    r = bench_requests(home, args.requests, args.model)
    print(f"requests: {r['requests']:,} pipelined 32 deep in {r['seconds']:.1f} s = {r['per_s']:,.0f} requests/s; "
          f"latency p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; lost {r['lost']}, answered twice {r['extra']}, "
          f"unexpected errors {r['unexpected_errors']}")
    print(f"typing: {r['typing_pairs']:,} edit + completion-request pairs = {r['typing_pairs_per_s']:,.0f} pairs/s, "
          f"all answered, in sync: {r['typing_in_sync']}")

    m = bench_malformed(home, args.fuzz)
    print(f"malformed: {m['fixed']} fixed hostile cases + {m['fuzz']} random mutations of valid frames: "
          f"{m['crashed']} crashed the server, {m['deaf']} left it deaf; {m['needed_more_input']} answered only after "
          f"more input; 'Error in server' pop-ups: {m['error_popups']}; RSS after: {m['rss'] / 2**20:.1f} MiB")
    if m["slow"]:
        print(f"    answered after more input: {', '.join(m['slow'][:10])}")
    for f in m["failures"][:20]:
        print("   ", f)

    print("lifecycle:")
    for name, what, ok in bench_lifecycle(home):
        print(f"    {name}: {what} -> {'ok' if ok else 'WRONG'}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
