#!/usr/bin/env python3
"""Head to head: regate against nginx and HAProxy doing the same mTLS job, in one run.

Every proxy terminates TLS 1.3 with a required client certificate (certs-dev/), checks what it
can of the caller, and forwards to the same upstream (an nginx answering `200 ok` on plain
HTTP/1.1 over keep-alive). Each proxy runs alone on CPU 0; the load generator and the
upstream share CPU 1. The load generators are wrk and h2load, which have no client-certificate
option: client-cert-shim.so (built here from client-cert-shim.c) makes them present one.

    python3 benches/compare/run.py            # 10 s per measurement, two repetitions
    python3 benches/compare/run.py --quick    # 3 s, one repetition
    python3 benches/compare/run.py --regate /path/to/regate   # another build (before/after)

It prints the tables BENCHMARKS.md keeps, and writes every figure to
target/compare/results.json. Needs: nginx, haproxy, wrk, h2load (nghttp2-client), gcc,
taskset, and a release build of regate (`cargo build --release`). Every load is bounded by a
duration; nothing here asserts on a figure.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "benches" / "compare"
CERTS = ROOT / "certs-dev"
REGATE = ROOT / "target" / "release" / "regate"
PORT = {"upstream": 18080, "nginx": 18443, "haproxy": 18444, "regate": 18445}
ADMIN = 19901
PROXY_CPU = "0"
LOAD_CPU = "1"
TICK = os.sysconf("SC_CLK_TCK")
SUMMARIZER = "spiffe://example.org/ns/agents/sa/summarizer"

POLICIES = {
    "allow": (HERE / "policies" / "allow", "`allow := true`"),
    "three-line": (HERE / "policies" / "three-line", "3-line policy"),
    "shipped": (ROOT / "policies", "the shipped `policies/`"),
    "realistic": (HERE / "policies" / "realistic", "realistic 20-grant policy"),
}
# A path each policy allows the summarizer (the shipped demo grants it /docs).
PATHS = {"shipped": "/docs/readme"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Server:
    """A process pinned to a CPU (or not), with its CPU time and memory readable."""

    def __init__(self, name, argv, cpu, log_dir, env=None, ready_port=None):
        self.name = name
        prefix = ["taskset", "-c", cpu] if cpu else []
        # To a file, never a pipe nobody reads: a full pipe would block the server.
        self.log = log_dir / f"{name}.log"
        self.proc = subprocess.Popen(
            prefix + argv,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        if ready_port:
            wait_port(ready_port, self)

    def pids(self):
        """The process and its children (nginx's workers)."""
        out = subprocess.run(
            ["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        return [int(p) for p in out] or [self.proc.pid]

    def cpu_seconds(self):
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError):
                pass
        return total / TICK

    def rss_mib(self):
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def wait_port(port, server, limit=20):
    import socket

    deadline = time.time() + limit
    while time.time() < deadline:
        if server.proc.poll() is not None:
            raise SystemExit(f"{server.name} exited: {server.log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{server.name} did not listen on {port}")


def nginx_conf(tmp, name, server_block):
    conf = tmp / f"{name}.conf"
    temp = tmp / f"{name}-temp"
    temp.mkdir(exist_ok=True)
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 10000000;
    {server_block}
}}
"""
    )
    return conf


def start_upstream(tmp):
    conf = nginx_conf(
        tmp,
        "upstream",
        f"""server {{
        listen 127.0.0.1:{PORT['upstream']} reuseport;
        location / {{ return 200 "ok\\n"; }}
    }}""",
    )
    return Server("upstream", ["nginx", "-c", str(conf), "-p", str(tmp)], LOAD_CPU, tmp, ready_port=PORT["upstream"])


def start_nginx(tmp):
    conf = nginx_conf(
        tmp,
        "nginx",
        f"""upstream app {{ server 127.0.0.1:{PORT['upstream']}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{PORT['nginx']} ssl http2;
        ssl_certificate {CERTS}/server.pem;
        ssl_certificate_key {CERTS}/server.key;
        ssl_client_certificate {CERTS}/ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}""",
    )
    return Server("nginx", ["nginx", "-c", str(conf), "-p", str(tmp)], PROXY_CPU, tmp, ready_port=PORT["nginx"])


def start_haproxy(tmp):
    combined = tmp / "haproxy-server.pem"
    combined.write_text((CERTS / "server.pem").read_text() + (CERTS / "server.key").read_text())
    spiffe_hex = SUMMARIZER.encode().hex().upper()
    conf = tmp / "haproxy.cfg"
    conf.write_text(
        f"""
global
    nbthread 1
    maxconn 4000
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend mtls
    bind 127.0.0.1:{PORT['haproxy']} ssl crt {combined} ca-file {CERTS}/ca.pem verify required alpn h2,http/1.1
    # The caller's SPIFFE ID, matched in the certificate's DER bytes: HAProxy 2.6 has no SAN fetch.
    acl summarizer ssl_c_der,hex -m sub {spiffe_hex}
    http-request deny unless summarizer
    default_backend app
backend app
    server app 127.0.0.1:{PORT['upstream']}
"""
    )
    return Server("haproxy", ["haproxy", "-f", str(conf), "-db"], PROXY_CPU, tmp, ready_port=PORT["haproxy"])


def start_regate(tmp, policy, cpu=PROXY_CPU, decision_log=True):
    directory, _ = POLICIES[policy]
    argv = [
        str(REGATE), "run",
        "--listen", f"127.0.0.1:{PORT['regate']}",
        "--upstream", f"http://127.0.0.1:{PORT['upstream']}",
        "--cert", str(CERTS / "server.pem"),
        "--key", str(CERTS / "server.key"),
        "--client-ca", str(CERTS / "ca.pem"),
        "--policies", str(directory),
        "--trust-domain", "example.org",
        "--context", "env=prod",
        "--admin", f"127.0.0.1:{ADMIN}",
        "--decision-log", str(tmp / "decisions.log") if decision_log else "/dev/null",
        "--max-connections-per-identity", "0",
    ]
    return Server(f"regate-{policy}", argv, cpu, tmp, env={"RUST_LOG": "warn"}, ready_port=PORT["regate"])


def load_env():
    return {
        "SHIM_CERT": str(CERTS / "summarizer.pem"),
        "SHIM_KEY": str(CERTS / "summarizer.key"),
        "LD_PRELOAD": str(SHIM),
    }


def wrk(url, server, seconds, connections=50, headers=(), env=None, cpu=LOAD_CPU, threads=1, sample_rss_at=None):
    """Run wrk against `url`; returns the figures and the server's CPU time per request."""
    argv = (["taskset", "-c", cpu] if cpu else []) + [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
        "-s", str(HERE / "report.lua"), url,
    ]
    for h in headers:
        argv[-1:-1] = ["-H", h]
    cpu_before = server.cpu_seconds() if server else 0
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **load_env(), **(env or {})})
    rss_mid = None
    if sample_rss_at is not None and server:
        time.sleep(sample_rss_at)
        rss_mid = server.rss_mib()
    out, err = proc.communicate(timeout=seconds + 60)
    cpu_after = server.cpu_seconds() if server else 0
    figures = {}
    for line in out.splitlines():
        if line.startswith("HARNESS "):
            figures.update({k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])})
        if line.startswith("Requests/sec:"):
            figures["rps"] = float(line.split()[1])
    if "rps" not in figures:
        raise SystemExit(f"wrk failed on {url}: {out}\n{err}")
    if server and figures["requests"]:
        figures["cpu_us_per_req"] = (cpu_after - cpu_before) * 1e6 / figures["requests"]
        figures["rss_mib"] = server.rss_mib()
    if rss_mid is not None:
        figures["rss_mid_mib"] = rss_mid
    return figures


def h2load(url, server, seconds):
    argv = ["taskset", "-c", LOAD_CPU, "h2load", "-c50", "-m10", "-t1", "-D", str(seconds), url]
    cpu_before = server.cpu_seconds()
    out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **load_env()},
                         timeout=seconds + 60).stdout
    cpu_after = server.cpu_seconds()
    figures = {}
    for line in out.splitlines():
        if line.startswith("finished in"):
            figures["rps"] = float(line.split(",")[1].split()[0])
        if line.startswith("requests:"):
            parts = line.replace(",", "").split()
            figures["requests"] = int(parts[parts.index("succeeded") - 1])
        if line.strip().startswith("time for request:"):
            figures["mean_us"] = line.split()[5]
    if "rps" not in figures:
        raise SystemExit(f"h2load failed on {url}: {out}")
    figures["cpu_us_per_req"] = (cpu_after - cpu_before) * 1e6 / max(figures.get("requests", 1), 1)
    return figures


def url(name, path="/api/items/42"):
    return f"https://127.0.0.1:{PORT[name]}{path}"


def main():
    global SHIM, REGATE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per measurement, one repetition")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--regate", type=Path, default=None,
                        help="the regate binary to measure [default: target/release/regate]")
    args = parser.parse_args()
    if args.regate:
        REGATE = args.regate.resolve()
    seconds, repeat = (3, 1) if args.quick else (args.seconds, args.repeat)
    for tool in ["nginx", "haproxy", "wrk", "h2load", "gcc", "taskset"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed (apt-get install nginx-light haproxy wrk nghttp2-client gcc util-linux)")
    if not REGATE.exists():
        raise SystemExit("build regate first: cargo build --release")
    out_dir = ROOT / "target" / "compare"
    out_dir.mkdir(parents=True, exist_ok=True)
    SHIM = out_dir / "client-cert-shim.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(SHIM), str(HERE / "client-cert-shim.c"), "-ldl"], check=True)

    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "seconds": seconds, "repeat": repeat, "runs": []}
    tmp = Path(tempfile.mkdtemp(prefix="regate-compare-"))
    upstream = start_upstream(tmp)
    try:
        for rep in range(repeat):
            log(f"== repetition {rep + 1}")
            run = {}
            run["direct"] = wrk(f"http://127.0.0.1:{PORT['upstream']}/api/items/42", None, seconds)
            for name, start in [("nginx", start_nginx), ("haproxy", start_haproxy)]:
                server = start(tmp)
                try:
                    log(f"{name}: keep-alive")
                    run[name] = wrk(url(name), server, seconds)
                    run[f"{name}-unique"] = wrk(url(name), server, seconds, env={"UNIQUE_PATHS": "1"})
                    log(f"{name}: handshakes, fixed rate, 1,000 connections, HTTP/2")
                    run[f"{name}-handshakes"] = wrk(url(name), server, seconds, headers=["Connection: close"])
                    run[f"{name}-rate"] = wrk(url(name), server, seconds, connections=20, env={"RATE_DELAY_MS": "20"})
                    run[f"{name}-1000"] = wrk(url(name), server, seconds, connections=1000, sample_rss_at=seconds / 2)
                    run[f"{name}-h2"] = h2load(url(name), server, seconds)
                finally:
                    server.stop()
            run["direct-rate"] = wrk(f"http://127.0.0.1:{PORT['upstream']}/api/items/42", None, seconds,
                                     connections=20, env={"RATE_DELAY_MS": "20"})
            for policy in POLICIES:
                server = start_regate(tmp, policy)
                try:
                    if rep == 0 and policy == "three-line":
                        run["regate-idle-rss"] = server.rss_mib()
                    log(f"regate {policy}: keep-alive")
                    run[f"regate-{policy}"] = wrk(url("regate", PATHS.get(policy, "/api/items/42")), server, seconds)
                    if policy in ("three-line", "realistic"):
                        run[f"regate-{policy}-unique"] = wrk(url("regate"), server, seconds, env={"UNIQUE_PATHS": "1"})
                        run[f"regate-{policy}-rate"] = wrk(url("regate"), server, seconds, connections=20,
                                                           env={"RATE_DELAY_MS": "20"})
                    if policy == "three-line":
                        log("regate three-line: handshakes, 1,000 connections, HTTP/2")
                        run["regate-handshakes"] = wrk(url("regate"), server, seconds, headers=["Connection: close"])
                        run["regate-1000"] = wrk(url("regate"), server, seconds, connections=1000,
                                                 sample_rss_at=seconds / 2)
                        time.sleep(5)
                        run["regate-after-peak-rss"] = server.rss_mib()
                        run["regate-h2"] = h2load(url("regate"), server, seconds)
                    status = json.loads(subprocess.run(
                        ["curl", "-s", f"http://127.0.0.1:{ADMIN}/status"], capture_output=True, text=True).stdout or "{}")
                    run[f"regate-{policy}-status"] = status.get("policy", {})
                finally:
                    server.stop()
            server = start_regate(tmp, "three-line", decision_log=False)
            try:
                log("regate three-line, decision log off")
                run["regate-three-line-nolog"] = wrk(url("regate"), server, seconds)
            finally:
                server.stop()
            server = start_regate(tmp, "three-line", cpu=None)
            try:
                log("regate three-line on two unpinned cores")
                run["regate-2cores"] = wrk(url("regate"), server, seconds, cpu=None, threads=2)
            finally:
                server.stop()
            results["runs"].append(run)
    finally:
        upstream.stop()
        for server_log in tmp.glob("regate-*.log"):
            lines = server_log.read_text().splitlines()
            if lines:
                log(f"{server_log.name}: {len(lines)} lines, last: {lines[-1][:300]}")
        shutil.rmtree(tmp, ignore_errors=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    print_tables(results)


def print_tables(results):
    runs = results["runs"]

    def each(key, field, fmt="{:,.0f}"):
        vals = [r[key][field] for r in runs if key in r and field in r[key]]
        return "–".join(fmt.format(v) for v in vals) if vals else "n/a"

    def ratio(key, base):
        vals = [r[key]["rps"] / r[base]["rps"] for r in runs if key in r and base in r]
        return "–".join(f"{v:.2f}×" for v in vals)

    print(f"\nOne run of benches/compare/run.py, {results['date']}, {results['seconds']} s per "
          f"measurement, {results['repeat']} repetition(s) (each figure: rep 1–rep 2).\n")
    print("| proxy (1 core) | req/s | p50 | p99 | p99.9 | CPU/request | vs nginx | vs HAProxy |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [("nginx mTLS, no identity check", "nginx"), ("HAProxy mTLS, SPIFFE ID matched in the DER", "haproxy")]
    rows += [(f"regate, {label}", f"regate-{p}") for p, (_, label) in POLICIES.items()]
    rows += [("regate, 3-line policy, decision log off", "regate-three-line-nolog"),
             ("regate, 3-line policy, a new path per request", "regate-three-line-unique"),
             ("regate, realistic policy, a new path per request", "regate-realistic-unique"),
             ("nginx, a new path per request", "nginx-unique")]
    for label, key in rows:
        base = "nginx-unique" if key.endswith("-unique") else "nginx"
        print(f"| {label} | {each(key, 'rps')} | {each(key, 'p50', '{:,} µs')} | {each(key, 'p99', '{:,} µs')} "
              f"| {each(key, 'p999', '{:,} µs')} | {each(key, 'cpu_us_per_req', '{:.0f} µs')} "
              f"| {ratio(key, base)} | {ratio(key, 'haproxy') if not key.endswith('-unique') else ''} |")
    print("\n| measure | nginx | HAProxy | regate (3-line policy) |")
    print("|---|---|---|---|")
    print(f"| full mTLS handshakes/s (`Connection: close`) | {each('nginx-handshakes', 'rps')} "
          f"| {each('haproxy-handshakes', 'rps')} | {each('regate-handshakes', 'rps')} |")
    print(f"| HTTP/2, h2load -c50 -m10, req/s | {each('nginx-h2', 'rps')} | {each('haproxy-h2', 'rps')} "
          f"| {each('regate-h2', 'rps')} |")
    print(f"| 1,000 keep-alive connections, req/s | {each('nginx-1000', 'rps')} | {each('haproxy-1000', 'rps')} "
          f"| {each('regate-1000', 'rps')} |")
    print(f"| 1,000 connections, p99 | {each('nginx-1000', 'p99', '{:,} µs')} | {each('haproxy-1000', 'p99', '{:,} µs')} "
          f"| {each('regate-1000', 'p99', '{:,} µs')} |")
    print(f"| RSS with 1,000 active connections | {each('nginx-1000', 'rss_mid_mib', '{:.0f} MiB')} "
          f"| {each('haproxy-1000', 'rss_mid_mib', '{:.0f} MiB')} | {each('regate-1000', 'rss_mid_mib', '{:.0f} MiB')} |")
    print(f"| p99 at a fixed 1,000 req/s (direct: {each('direct-rate', 'p99', '{:,} µs')}) "
          f"| {each('nginx-rate', 'p99', '{:,} µs')} | {each('haproxy-rate', 'p99', '{:,} µs')} "
          f"| {each('regate-three-line-rate', 'p99', '{:,} µs')}; realistic {each('regate-realistic-rate', 'p99', '{:,} µs')} |")
    idle = [r["regate-idle-rss"] for r in runs if "regate-idle-rss" in r]
    after = [r["regate-after-peak-rss"] for r in runs if "regate-after-peak-rss" in r]
    print(f"\nregate RSS: idle {', '.join(f'{v:.1f}' for v in idle)} MiB; five seconds after the "
          f"1,000-connection peak {', '.join(f'{v:.1f}' for v in after)} MiB.")
    print(f"regate on two unpinned cores (load generator unpinned too): {each('regate-2cores', 'rps')} req/s, "
          f"{ratio('regate-2cores', 'regate-three-line')} of one pinned core.")
    for policy in POLICIES:
        status = [r.get(f"regate-{policy}-status") for r in runs]
        print(f"regate {policy}: /status policy = {status[-1]}")


if __name__ == "__main__":
    main()
