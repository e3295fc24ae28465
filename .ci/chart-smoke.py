#!/usr/bin/env python3
"""The chart's git-sync pod played on this machine with a built regate, end to end.

  chart-smoke.py [--regate target/debug/regate] [--helm HELM] [--set KEY=VALUE]...

Renders helm/regate with ci/git-sync-values.yaml and runs regate with the rendered
regate.yaml, its absolute paths moved under a temporary directory, its listeners on free
loopback ports and the demo upstream in place of the app. The dev certificates stand in for
the TLS Secret. git-sync is played by git itself, the way git-sync v4 lays out its --root: a
repository there, each synced commit checked out as .worktrees/<commit>, and the --link
symlink swapped to it in one rename. Then:

  - the health listener serves /healthz, /readyz and /metrics, and not /status;
  - /status on the admin listener and the decision record name git:<commit>;
  - a new commit, synced, becomes the revision without a restart (seen by watching: the
    periodic re-read is turned off), and decides;
  - SIGTERM drains and exits 0.

Before that, every values variant's regate.yaml is given to regate as it is: regate must
refuse it only for the files and directories the pod would mount (no key or value error).

Each step waits on what regate shows, bounded in time; nothing leaves 127.0.0.1.
"""

import argparse
import http.client
import json
import os
import posixpath
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(REPO, "helm", "regate")
DEV = os.path.join(REPO, "certs-dev")
WAIT = 30.0

results = []
T0 = time.monotonic()


def check(what, ok, detail=""):
    results.append(ok)
    print(f"{time.monotonic() - T0:5.1f}s {'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}")
    return ok


def wait_for(what, probe, timeout=WAIT):
    """Polls `probe` until it returns something true, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except (OSError, http.client.HTTPException, ValueError) as e:
            last = e
        time.sleep(0.1)
    raise SystemExit(f"FAIL gave up waiting for {what} after {timeout:.0f}s (last: {last!r})")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def mtls_get(port, path, who):
    ctx = ssl.create_default_context(cafile=os.path.join(DEV, "ca.pem"))
    ctx.load_cert_chain(os.path.join(DEV, f"{who}.pem"), os.path.join(DEV, f"{who}.key"))
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        c.request("GET", path, headers={"host": "localhost"})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def render(helm, sets):
    out = subprocess.run([helm, "template", "demo", CHART, "--namespace", "demo",
                          "-f", os.path.join(CHART, "ci", "git-sync-values.yaml"),
                          *[a for s in sets for a in ("--set", s)]],
                         check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    pod = [d for d in docs if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]
    containers = pod.get("initContainers", []) + pod["containers"]
    config = [d for d in docs if d["kind"] == "ConfigMap" and "regate.yaml" in d["data"]][0]
    sync = [c for c in containers if c["name"] == "git-sync"][0]
    sync_args = dict(a[2:].split("=", 1) for a in sync["args"] if a.startswith("--") and "=" in a)
    regate = [c for c in containers if c["name"] == "regate"][0]
    return yaml.safe_load(config["data"]["regate.yaml"]), sync, sync_args, regate


def variants_accepted(helm, regate):
    import glob
    import re

    for values in sorted(glob.glob(os.path.join(CHART, "ci", "*-values.yaml"))):
        out = subprocess.run([helm, "template", "demo", CHART, "-f", values],
                             check=True, capture_output=True, text=True).stdout
        cm = [d for d in yaml.safe_load_all(out)
              if d and d["kind"] == "ConfigMap" and "regate.yaml" in d["data"]][0]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(cm["data"]["regate.yaml"])
            f.flush()
            env = {k: v for k, v in os.environ.items() if k != "SPIFFE_ENDPOINT_SOCKET"}
            r = subprocess.run([regate, "run", "--config", f.name], capture_output=True,
                               text=True, timeout=30, env=env)
        # Startup validation lists every problem, one line each, and exits 2.
        other = [line for line in r.stderr.splitlines()
                 if not re.search(r"does not exist$|is not a directory$", line)]
        check(f"{os.path.basename(values)}: regate.yaml accepted but for the pod's files",
              r.returncode == 2 and not other, "; ".join(other) or f"exit {r.returncode}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--regate", default=os.path.join(REPO, "target", "debug", "regate"))
    ap.add_argument("--helm", default=os.path.expanduser("~/.cache/regate-ci/helm"))
    ap.add_argument("--set", action="append", default=[], help="a helm --set, e.g. policies.git.path=")
    args = ap.parse_args()

    variants_accepted(args.helm, args.regate)

    # reload_interval 0: a new commit must be seen by watching, not by the periodic re-read.
    config, sync, sync_args, regate_c = render(args.helm, ["regate.reloadInterval=0", *args.set])
    root = tempfile.mkdtemp(prefix="regate-chart-smoke-")
    proc = None
    try:
        here = lambda p: root + p  # the pod's absolute paths, under the temporary directory

        # The git volume: git-sync writes it at --root; regate must read it at the same place.
        sync_mount = [m for m in sync["volumeMounts"] if sync_args["root"].startswith(m["mountPath"])][0]
        regate_mount = [m for m in regate_c["volumeMounts"] if m["name"] == sync_mount["name"]][0]
        if regate_mount["mountPath"] != sync_mount["mountPath"]:
            raise SystemExit("FAIL regate and git-sync mount the git volume at different paths")
        git_root = here(sync_args["root"])
        link = os.path.join(git_root, sync_args["link"])
        os.makedirs(git_root)
        git("init", "-q", cwd=git_root)

        # The policy repository an author pushes to.
        author = os.path.join(root, "author")
        sub = posixpath.relpath(config["policies"], posixpath.join(sync_args["root"], sync_args["link"]))
        pol = os.path.join(author, sub)
        os.makedirs(pol)
        git("init", "-q", "-b", "main", cwd=author)
        for f in ("authz.rego", "data.json"):
            shutil.copy(os.path.join(REPO, "policies", f), pol)
        git("add", ".", cwd=author)
        git("-c", "user.name=author", "-c", "user.email=a@example.org", "commit", "-q", "-m", "grants", cwd=author)

        def sync_once():
            # What git-sync v4 does each period: fetch the ref, check the commit out as a
            # worktree of its own, and swap the link to it in one rename.
            git("fetch", "-q", author, sync_args["ref"], cwd=git_root)
            commit = git("rev-parse", "FETCH_HEAD", cwd=git_root)
            git("worktree", "add", "-q", "--detach", f".worktrees/{commit}", commit, cwd=git_root)
            tmp = link + ".tmp"
            os.symlink(f".worktrees/{commit}", tmp)
            os.replace(tmp, link)
            return commit

        first = sync_once()

        # The Secret volume, from the dev certificates.
        for key, name in (("cert", "server.pem"), ("key", "server.key"), ("client_ca", "ca.pem")):
            os.makedirs(os.path.dirname(here(config[key])), exist_ok=True)
            shutil.copy(os.path.join(DEV, name), here(config[key]))
            config[key] = here(config[key])
        config["policies"] = here(config["policies"])
        listen, health, admin = free_port(), free_port(), free_port()
        config["listen"] = f"127.0.0.1:{listen}"
        config["health_listen"] = f"127.0.0.1:{health}"
        config["admin"] = f"127.0.0.1:{admin}"
        del config["upstream"]
        config["demo_upstream"] = True
        cfg_path = here("/etc/regate/regate.yaml")
        os.makedirs(os.path.dirname(cfg_path))
        with open(cfg_path, "w") as f:
            yaml.safe_dump(config, f)

        out_path, err_path = os.path.join(root, "stdout"), os.path.join(root, "stderr")
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen([args.regate, "run", "--config", cfg_path], stdout=out, stderr=err)

        def records():
            with open(out_path) as f:
                return [json.loads(line) for line in f if line.startswith("{")]

        def alive():
            if proc.poll() is not None:
                with open(err_path) as f:
                    raise SystemExit(f"FAIL regate exited {proc.returncode}:\n{f.read()}")
            return True

        wait_for("/readyz on the health listener", lambda: alive() and http_get(health, "/readyz")[0] == 200)
        check("health listener: /healthz", http_get(health, "/healthz")[0] == 200)
        status, metrics = http_get(health, "/metrics")
        check("health listener: /metrics", status == 200 and "regate_policy_info" in metrics)
        check("health listener: no /status", http_get(health, "/status")[0] != 200,
              f"answered {http_get(health, '/status')[0]}")

        want = f"git:{first}"
        status = json.loads(http_get(admin, "/status")[1])
        check("/status names the synced commit", status["policy"]["revision"] == want,
              status["policy"]["revision"])
        seen = len(records())
        code = mtls_get(listen, "/docs/readme", "summarizer")
        check("a granted request is forwarded", code == 200, str(code))
        rec = wait_for("the decision record", lambda: records()[seen:])[0]
        check("the decision record names the commit", rec.get("policy_revision") == want,
              rec.get("policy_revision"))

        # The author takes the summarizer's grant to /docs away; git-sync brings it over.
        with open(os.path.join(pol, "data.json")) as f:
            data = json.load(f)
        data["grants"]["spiffe://example.org/ns/agents/sa/summarizer"] = [
            g for g in data["grants"]["spiffe://example.org/ns/agents/sa/summarizer"] if g["prefix"] != ["docs"]]
        with open(os.path.join(pol, "data.json"), "w") as f:
            json.dump(data, f)
        git("-c", "user.name=author", "-c", "user.email=a@example.org", "commit", "-q", "-am", "no docs", cwd=author)
        second = sync_once()
        want = f"git:{second}"
        wait_for("the new commit in /status",
                 lambda: alive() and json.loads(http_get(admin, "/status")[1])["policy"]["revision"] == want,
                 timeout=10)
        check("/status follows the new commit without a restart", True, want)
        seen = len(records())
        code = mtls_get(listen, "/docs/readme", "summarizer")
        check("the new commit decides", code == 403, str(code))
        rec = wait_for("the decision record", lambda: records()[seen:])[0]
        check("its decision record names the new commit", rec.get("policy_revision") == want,
              rec.get("policy_revision"))
        metrics = http_get(health, "/metrics")[1]
        check("regate_policy_info names the new commit", f'revision="{want}"' in metrics)

        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        check("SIGTERM drains and exits 0", code == 0, str(code))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)

    failed = results.count(False)
    print(f"chart smoke: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
