#!/usr/bin/env python3
"""Checks on the manifests `helm template` renders from helm/regate, one file per values variant.

  chart-checks.py schema FILE...     built-in kinds against the schemas of the Kubernetes
                                     version each file was rendered for and of the newest
                                     one kubernetes-validate ships (strict: unknown fields
                                     fail); other kinds are listed for the CRD check
  chart-checks.py rules FILE...      what the chart promises (issue 12's "Done when")
  chart-checks.py crds FILE...       the custom resources, as JSON for crd-validate.mjs
  chart-checks.py self-test FILE...  breaks good renderings one promise at a time and shows
                                     that the matching rule then fails

FILE is a `helm template` output, written PATH@KUBE_VERSION (1.30.0) when it was rendered
with --kube-version: the schema check then uses that version, and the rules check what
needs a newer cluster. Without the version, the schema check uses 1.29.0 and the
version-dependent rules are left out.

Every check prints what it found; the exit code is 1 if any failed.
"""

import copy
import posixpath
import re
import sys

import yaml

# The schema for a file rendered without --kube-version (the native sidecar's first release).
DEFAULT_SCHEMA_VERSION = "1.29.0"
# The git-sync image's own user, the only one in its /etc/passwd: ssh refuses any other uid.
GIT_SYNC_UID = 65533
CRD_KINDS = {("cert-manager.io/v1", "Certificate"), ("monitoring.coreos.com/v1", "ServiceMonitor")}


def split_arg(arg):
    """PATH@KUBE_VERSION as (PATH, "1.30.0"), or (PATH, None)."""
    path, at, kube = arg.rpartition("@")
    return (path, kube) if at and re.fullmatch(r"\d+\.\d+\.\d+", kube) else (arg, None)


def version_tuple(kube):
    return tuple(int(p) for p in kube.split(".")[:2]) if kube else None


def load(arg):
    with open(split_arg(arg)[0]) as f:
        return [d for d in yaml.safe_load_all(f) if d]


# ---------------------------------------------------------------- schema


def schema(paths):
    import kubernetes_validate
    from kubernetes_validate import utils

    failed = 0
    for arg in paths:
        path, kube = split_arg(arg)
        versions = list(dict.fromkeys([kube or DEFAULT_SCHEMA_VERSION, utils.latest_version()]))
        for doc in load(arg):
            key = (doc["apiVersion"], doc["kind"])
            name = f"{path}: {doc['kind']}/{doc['metadata']['name']}"
            if key in CRD_KINDS:
                print(f"crd  {name}: left to crd-validate.mjs")
                continue
            before = failed
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except utils.SchemaNotFoundError:
                    print(f"FAIL {name}: no schema for {key} in Kubernetes {version}")
                    failed += 1
                except kubernetes_validate.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    print(f"FAIL {name}: Kubernetes {version} schema: {where}: {e.message}")
                    failed += 1
            if failed == before:
                print(f"ok   {name}: Kubernetes {' and '.join(versions)} (strict)")
    return failed


# ---------------------------------------------------------------- rules


def duration_seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n / 1000 if unit == "ms" else n * {"s": 1, "m": 60, "h": 3600}[unit]


class Rendering:
    def __init__(self, docs, kube=None):
        self.docs = docs
        # The Kubernetes version it was rendered for, as (1, 30), or None when unknown.
        self.kube = version_tuple(kube)
        deployments = self.of_kind("Deployment")
        if len(deployments) != 1:
            raise ValueError(f"expected one Deployment, found {len(deployments)}")
        self.deployment = deployments[0]
        self.pod = self.deployment["spec"]["template"]["spec"]
        self.init = self.pod.get("initContainers", [])
        self.main = self.pod["containers"]
        self.containers = self.init + self.main
        config_maps = [d for d in self.of_kind("ConfigMap") if "regate.yaml" in d.get("data", {})]
        if len(config_maps) != 1:
            raise ValueError("expected one ConfigMap holding regate.yaml")
        self.config = yaml.safe_load(config_maps[0]["data"]["regate.yaml"])

    def of_kind(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def container(self, name):
        found = [c for c in self.containers if c["name"] == name]
        return found[0] if found else None

    def volume(self, name):
        found = [v for v in self.pod.get("volumes", []) if v["name"] == name]
        return found[0] if found else None


def mount_for(container, path):
    """The volume mount of `container` that holds `path`, the deepest one."""
    best = None
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"]):
                best = m
    return best


def args_of(container):
    out = {}
    for a in container.get("args", []):
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            out[k] = v
        elif a.startswith("--"):
            out[a[2:]] = True
    return out


def check_security_context(r):
    bad = []
    for c in r.containers:
        sc = c.get("securityContext") or {}
        problems = []
        if sc.get("runAsNonRoot") is not True:
            problems.append("runAsNonRoot")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append("readOnlyRootFilesystem")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append("capabilities.drop ALL")
        if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append("seccompProfile RuntimeDefault")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append("allowPrivilegeEscalation false")
        if problems:
            bad.append(f"{c['name']} lacks {', '.join(problems)}")
    return bad, f"{len(r.containers)} containers locked down"


def check_no_subpath(r):
    bad = [f"{c['name']} mounts {m['name']} with subPath {m.get('subPath') or m.get('subPathExpr')}"
           for c in r.containers for m in c.get("volumeMounts", [])
           if m.get("subPath") or m.get("subPathExpr")]
    return bad, "every volume is mounted as a directory"


def pre_stop_sleep(container):
    """Seconds of the container's preStop sleep handler, 0 without one."""
    if container is None:
        return 0
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    return int((pre_stop.get("sleep") or {}).get("seconds", 0))


def check_grace(r):
    grace = duration_seconds(r.config.get("shutdown_grace", "15s"))
    # The app sleeps, then stops, then (native) regate drains; a classic regate sleeps alongside.
    sleep = max(pre_stop_sleep(r.container("app")), pre_stop_sleep(r.container("regate")))
    period = r.pod.get("terminationGracePeriodSeconds", 30)
    if not period > sleep + grace:
        return [f"terminationGracePeriodSeconds {period} is not more than the preStop sleep "
                f"{sleep}s plus shutdown_grace {grace:g}s"], ""
    return [], f"terminationGracePeriodSeconds {period} > preStop sleep {sleep}s + shutdown_grace {grace:g}s"


def check_kube_version(r):
    """What the pod asks of the cluster it was rendered for."""
    if r.kube is None:
        return None
    bad = []
    regate = r.container("regate")
    if regate in r.init and r.kube < (1, 29):
        bad.append(f"regate is a native sidecar, which Kubernetes {r.kube[0]}.{r.kube[1]} lacks (1.29+)")
    for c in r.containers:
        for hook, handler in (c.get("lifecycle") or {}).items():
            if "sleep" in (handler or {}) and r.kube < (1, 30):
                bad.append(f"{c['name']}'s {hook} uses the sleep handler, which needs Kubernetes 1.30")
    return bad, f"nothing the cluster ({r.kube[0]}.{r.kube[1]}) lacks"


def check_shutdown(r):
    """On pod deletion nothing stops while regate may still send it requests."""
    if r.kube is None:
        return None
    regate, app = r.container("regate"), r.container("app")
    if r.kube < (1, 30):
        return [], f"Kubernetes {r.kube[0]}.{r.kube[1]} has no sleep handler: no preStop sleep from the chart"
    bad = []
    app_sleep = pre_stop_sleep(app)
    if not (app.get("lifecycle") or {}).get("preStop"):
        bad.append("the app has no preStop: it stops while the endpoints still send through regate")
    if regate in r.main:
        regate_sleep = pre_stop_sleep(regate)
        if not regate_sleep:
            bad.append("the classic regate has no preStop sleep: it stops accepting while the endpoints still send")
        elif app_sleep and regate_sleep != app_sleep:
            bad.append(f"the classic regate sleeps {regate_sleep}s before SIGTERM, the app "
                       f"{app_sleep}s: they must stop together")
    how = "with the app" if regate in r.main else "after the app"
    return bad, f"the app serves {app_sleep}s into the pod's deletion; regate stops {how}"


def check_ports(r):
    """regate's listeners and the app share the pod's network namespace."""
    ports = {}
    bad = []
    defaults = {"listen": "0.0.0.0:8443", "health_listen": "", "admin": "127.0.0.1:9901", "upstream": ""}
    for key, default in defaults.items():
        value = str(r.config.get(key, default))
        if key == "admin" and value == "none" or key == "health_listen" and not value:
            continue
        m = re.search(r":(\d+)/?$", value)
        if not m:
            bad.append(f"{key} {value!r} names no port")
            continue
        if m.group(1) in ports:
            bad.append(f"{key} and {ports[m.group(1)]} are both on port {m.group(1)}")
        ports.setdefault(m.group(1), key)
    return bad, "listen, health_listen, admin and the app on ports " + ", ".join(sorted(ports, key=int))


def check_git_sync_user(r):
    syncs = [c for c in r.containers if c["name"].startswith("git-sync")]
    if not syncs:
        return None
    pod_sc = r.pod.get("securityContext") or {}
    bad = []
    for c in syncs:
        uid = (c.get("securityContext") or {}).get("runAsUser", pod_sc.get("runAsUser"))
        if uid != GIT_SYNC_UID:
            bad.append(f"{c['name']} runs as {uid}, not the image's git-sync user {GIT_SYNC_UID}: ssh refuses an unknown uid")
    if pod_sc.get("fsGroup") is None:
        bad.append("no pod fsGroup: git-sync could not read the key Secret (0440) nor regate the checkout through the group")
    return bad, f"git-sync as {GIT_SYNC_UID}, the pod's fsGroup {pod_sc.get('fsGroup')} on the volumes"


def check_federation(r):
    """spiffe-helper's one ca.crt is a plain client CA set: federated bundles must stay out."""
    confs = [d["data"]["helper.conf"] for d in r.of_kind("ConfigMap") if "helper.conf" in d.get("data", {})]
    if not confs:
        return None
    bad = []
    for conf in confs:
        m = re.search(r"^\s*include_federated_domains\s*=\s*(\S+)", conf, re.M)
        if m and m.group(1).strip('"').lower() != "false":
            bad.append("spiffe-helper writes the federated bundles into ca.crt: their CAs could sign this trust domain's IDs")
    return bad, "spiffe-helper writes only the own trust domain's bundle"


def check_sidecar(r):
    regate = r.container("regate")
    if regate is None:
        return ["no regate container"], ""
    app = r.container("app")
    bad = []
    if app is None or app not in r.main:
        bad.append("no app container among the pod's containers")
    native = regate in r.init
    if native and regate.get("restartPolicy") != "Always":
        bad.append("regate is an init container without restartPolicy Always")
    if not native and regate not in r.main:
        bad.append("regate is neither a native nor a classic sidecar")
    upstream = str(r.config.get("upstream", ""))
    if not upstream.startswith("http://127.0.0.1:"):
        bad.append(f"upstream {upstream!r} is not the app on localhost")
    if app is not None and app.get("ports"):
        bad.append("the app container declares ports; only regate's may be reached")
    for svc in r.of_kind("Service"):
        ports = {p["name"]: p for p in regate.get("ports", [])}
        targets = [p.get("targetPort") for p in svc["spec"]["ports"]]
        for t in targets:
            if t not in ports:
                bad.append(f"Service {svc['metadata']['name']} targets {t!r}, not a regate port")
        if "https" not in targets:
            bad.append(f"Service {svc['metadata']['name']} does not target regate's https port")
    return bad, f"regate as a {'native' if native else 'classic'} sidecar; the app on localhost"


def check_probes(r):
    regate = r.container("regate")
    bad = []
    health = str(r.config.get("health_listen", ""))
    admin = str(r.config.get("admin", "127.0.0.1:9901"))
    if not (admin.startswith("127.") or admin == "none"):
        bad.append(f"admin API on {admin}: it must stay on loopback")
    if "admin_allow_remote" in r.config:
        bad.append("admin_allow_remote is set")
    ports = {p["name"]: p["containerPort"] for p in regate.get("ports", [])}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = (regate.get(probe) or {}).get("httpGet")
        if not get:
            bad.append(f"regate has no {probe}")
            continue
        port = ports.get(get["port"], get["port"])
        if not health.endswith(f":{port}"):
            bad.append(f"{probe} on port {port}, not health_listen {health!r}")
        want = "/healthz" if probe == "livenessProbe" else "/readyz"
        if get["path"] != want:
            bad.append(f"{probe} asks {get['path']}, not {want}")
    ann = r.deployment["spec"]["template"]["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") == "true" and not health.endswith(":" + str(ann.get("prometheus.io/port"))):
        bad.append("prometheus.io/port is not the health listener")
    for sm in r.of_kind("ServiceMonitor"):
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") != "health" or ep.get("path") != "/metrics":
                bad.append(f"ServiceMonitor scrapes {ep}, not health /metrics")
    return bad, f"probes and scraping on health_listen {health}"


def check_git_sync(r):
    syncs = [c for c in r.containers if c["name"].startswith("git-sync")]
    if not syncs:
        return None
    regate = r.container("regate")
    policies = posixpath.normpath(str(r.config.get("policies", "")))
    bad = []
    one_time = [c for c in r.init if args_of(c).get("one-time") is True]
    if not one_time:
        bad.append("no git-sync --one-time init container: regate could start on an empty directory")
    elif regate in r.init and r.init.index(one_time[0]) > r.init.index(regate):
        bad.append("the one-time git-sync runs after regate starts")
    live = [c for c in syncs if c not in one_time]
    if not live:
        bad.append("no git-sync sidecar to follow the repository")
    for c in syncs:
        a = args_of(c)
        root, link = a.get("root"), a.get("link")
        if not root or not link:
            bad.append(f"{c['name']} lacks --root or --link")
            continue
        wm = mount_for(c, root)
        if wm is None:
            bad.append(f"{c['name']} writes {root}, which is on no volume")
            continue
        rm = [m for m in regate.get("volumeMounts", []) if m["name"] == wm["name"]]
        if not rm:
            bad.append(f"regate does not mount {wm['name']}, the volume {c['name']} writes")
            continue
        # The same place in regate's view: its mount of that volume, then root's path inside it.
        inside = posixpath.relpath(root, wm["mountPath"])
        published = posixpath.normpath(posixpath.join(rm[0]["mountPath"], inside, link))
        if not (policies == published or policies.startswith(published + "/")):
            bad.append(f"policies {policies} is not under {c['name']}'s link {published}")
        vol = r.volume(wm["name"])
        if vol is None or "emptyDir" not in vol:
            bad.append(f"{wm['name']} is not an emptyDir shared in the pod")
    return bad, f"regate reads {policies}, under git-sync's --root/--link on the shared volume"


def check_certificate(r):
    certs = r.of_kind("Certificate")
    if not certs:
        return None
    bad = []
    sa = r.pod.get("serviceAccountName", "default")
    for cert in certs:
        spec = cert["spec"]
        uris = spec.get("uris") or []
        spiffe = [u for u in uris if u.startswith("spiffe://")]
        if not spiffe:
            bad.append(f"Certificate {cert['metadata']['name']} has no spiffe:// URI SAN")
        elif not re.fullmatch(rf"spiffe://[a-z0-9._-]+/ns/[a-z0-9-]+/sa/{re.escape(sa)}", spiffe[0]):
            bad.append(f"URI SAN {spiffe[0]} is not the pod's service account {sa}")
        if (spec.get("privateKey") or {}).get("rotationPolicy") != "Always":
            bad.append("privateKey.rotationPolicy is not Always")
        for u in ("server auth", "client auth"):
            if u not in (spec.get("usages") or []):
                bad.append(f"usages lack {u}")
        if not spec.get("duration") or not spec.get("renewBefore"):
            bad.append("duration or renewBefore missing")
        tls = r.volume("tls") or {}
        if (tls.get("secret") or {}).get("secretName") != spec.get("secretName"):
            bad.append("regate's tls volume is not the Certificate's Secret")
    return bad, f"Certificate with URI SAN {', '.join(u for c in certs for u in c['spec'].get('uris', []))}"


def check_tls_source(r):
    regate = r.container("regate")
    bad = []
    if "spiffe_socket" in r.config:
        for k in ("cert", "key", "client_ca"):
            if k in r.config:
                bad.append(f"{k} is set beside spiffe_socket")
        sock = str(r.config["spiffe_socket"])
        if not sock.startswith("unix:///"):
            bad.append(f"spiffe_socket {sock!r} is not a unix:// path")
        elif mount_for(regate, sock[len("unix://"):]) is None:
            bad.append(f"regate mounts nothing at {sock}")
        return bad, f"SVIDs from the Workload API at {sock}"
    for k in ("cert", "key", "client_ca"):
        path = str(r.config.get(k, ""))
        if not path.startswith("/"):
            bad.append(f"{k} {path!r} is not an absolute path")
        elif mount_for(regate, path) is None:
            bad.append(f"{k} {path} is on no volume regate mounts")
    helper = r.container("spiffe-helper")
    if helper is not None:
        m = mount_for(regate, str(r.config.get("cert", "")))
        if m is None or not any(hm["name"] == m["name"] for hm in helper.get("volumeMounts", [])):
            bad.append("spiffe-helper does not write the volume regate reads its certificate from")
    return bad, "certificate, key and CA bundle read as files from directory mounts"


RULES = {
    "security context": check_security_context,
    "no subPath": check_no_subpath,
    "grace period": check_grace,
    "kubernetes version": check_kube_version,
    "shutdown": check_shutdown,
    "ports": check_ports,
    "sidecar": check_sidecar,
    "health listener": check_probes,
    "git-sync": check_git_sync,
    "git-sync user": check_git_sync_user,
    "federation": check_federation,
    "cert-manager": check_certificate,
    "certificates": check_tls_source,
}


def run_rules(docs, label, kube=None, quiet=False):
    failed = []
    try:
        r = Rendering(docs, kube)
    except (ValueError, KeyError) as e:
        print(f"FAIL {label}: {e}")
        return ["rendering"]
    for name, rule in RULES.items():
        try:
            result = rule(r)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
            # A rendering too broken for the rule to read fails it.
            result = [f"cannot check: {e!r}"], ""
        if result is None:
            continue
        bad, summary = result
        for b in bad:
            if not quiet:
                print(f"FAIL {label}: {name}: {b}")
        if bad:
            failed.append(name)
        elif not quiet:
            print(f"ok   {label}: {name}: {summary}")
    return failed


def rules(paths):
    return sum(len(run_rules(load(p), split_arg(p)[0], split_arg(p)[1])) for p in paths)


# ---------------------------------------------------------------- self-test


def pod_of(docs):
    return [d for d in docs if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]


def regate_of(docs):
    pod = pod_of(docs)
    return [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "regate"][0]


def set_config(docs, key, value):
    cm = [d for d in docs if d["kind"] == "ConfigMap" and "regate.yaml" in d.get("data", {})][0]
    cfg = yaml.safe_load(cm["data"]["regate.yaml"])
    cfg[key] = value
    cm["data"]["regate.yaml"] = yaml.safe_dump(cfg)


def break_mount(docs):
    for m in regate_of(docs)["volumeMounts"]:
        if m["name"] == "git":
            m["name"] = "policies-copy"


def container_of(docs, name):
    pod = pod_of(docs)
    return [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name][0]


def git_syncs_as_pod_user(docs):
    pod = pod_of(docs)
    for c in pod.get("initContainers", []) + pod["containers"]:
        if c["name"].startswith("git-sync"):
            c["securityContext"].pop("runAsUser")


def helper_includes_federation(docs):
    cm = [d for d in docs if d["kind"] == "ConfigMap" and "helper.conf" in d.get("data", {})][0]
    cm["data"]["helper.conf"] = cm["data"]["helper.conf"].replace(
        "include_federated_domains = false", "include_federated_domains = true")


# Which rendering each mutation breaks (helm/regate/ci/<variant>-values.yaml, or default).
SELF_TEST_VARIANT = "git-sync"

# One mutation per promise: (rule that must catch it, what is broken, the change). The change
# edits the documents; one that returns a version renders them as if for that Kubernetes.
# Those for another rendering than SELF_TEST_VARIANT's name it: (rule, what, change, variant).
MUTATIONS = [
    ("security context", "app may write its root filesystem",
     lambda d: pod_of(d)["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False)),
    ("security context", "regate keeps its capabilities",
     lambda d: regate_of(d)["securityContext"].pop("capabilities")),
    ("security context", "regate without seccomp",
     lambda d: regate_of(d)["securityContext"].pop("seccompProfile")),
    ("security context", "regate may run as root",
     lambda d: regate_of(d)["securityContext"].update(runAsNonRoot=False)),
    ("no subPath", "the certificate mounted by subPath",
     lambda d: regate_of(d)["volumeMounts"][-1].update(subPath="tls.crt")),
    ("grace period", "grace period equal to shutdown_grace",
     lambda d: pod_of(d).update(terminationGracePeriodSeconds=15)),
    ("grace period", "shutdown_grace longer than the grace period",
     lambda d: set_config(d, "shutdown_grace", "2m")),
    ("sidecar", "upstream on the pod IP",
     lambda d: set_config(d, "upstream", "http://0.0.0.0:8080")),
    ("health listener", "probes on the admin port",
     lambda d: regate_of(d)["readinessProbe"]["httpGet"].update(port=9901)),
    ("health listener", "admin API on all addresses",
     lambda d: set_config(d, "admin", "0.0.0.0:9901")),
    ("git-sync", "regate reads a volume git-sync does not write", break_mount),
    ("git-sync", "policies outside git-sync's link",
     lambda d: set_config(d, "policies", "/var/run/regate/git/current/../other")),
    ("git-sync", "no one-time sync before regate",
     lambda d: pod_of(d).update(initContainers=[c for c in pod_of(d)["initContainers"] if c["name"] != "git-sync-init"])),
    ("cert-manager", "no URI SAN",
     lambda d: [c["spec"].pop("uris") for c in d if c["kind"] == "Certificate"]),
    ("cert-manager", "the key is kept across renewals",
     lambda d: [c["spec"]["privateKey"].update(rotationPolicy="Never") for c in d if c["kind"] == "Certificate"]),
    ("certificates", "the CA bundle on no volume",
     lambda d: set_config(d, "client_ca", "/etc/ssl/ca.pem")),
    ("git-sync user", "git-sync as the pod's 65532, a uid ssh cannot look up", git_syncs_as_pod_user),
    ("git-sync user", "no pod fsGroup", lambda d: pod_of(d)["securityContext"].pop("fsGroup")),
    ("ports", "the app on the health listener's port",
     lambda d: set_config(d, "upstream", "http://127.0.0.1:9902")),
    ("ports", "the admin API on the mTLS port", lambda d: set_config(d, "admin", "127.0.0.1:8443")),
    ("kubernetes version", "a native sidecar for Kubernetes 1.28", lambda d: "1.28.0"),
    ("federation", "spiffe-helper writes federated bundles into the one ca.crt",
     helper_includes_federation, "csi"),
    ("kubernetes version", "the sleep handler for Kubernetes 1.29", lambda d: "1.29.0", "default"),
    ("shutdown", "the app stops at once on deletion",
     lambda d: container_of(d, "app").pop("lifecycle"), "default"),
    ("shutdown", "the classic regate stops accepting before the app",
     lambda d: container_of(d, "regate").pop("lifecycle"), "classic-sidecar"),
    ("grace period", "a grace period that covers the drain, not the preStop sleep too",
     lambda d: pod_of(d).update(terminationGracePeriodSeconds=18), "default"),
]


def self_test(args):
    """`args`: the renderings, named <variant>.yaml[@KUBE_VERSION]."""
    variants = {posixpath.basename(split_arg(a)[0]).removesuffix(".yaml"): a for a in args}
    failed = 0
    for arg in variants.values():
        path, kube = split_arg(arg)
        if run_rules(load(arg), path, kube, quiet=True):
            print(f"FAIL self-test: {path} does not pass the rules to begin with")
            return 1
    for rule, what, mutate, *variant in MUTATIONS:
        name = variant[0] if variant else SELF_TEST_VARIANT
        if name not in variants:
            print(f"FAIL self-test: {what}: no rendering of the {name} variant given")
            failed += 1
            continue
        path, kube = split_arg(variants[name])
        docs = load(variants[name])
        version = mutate(docs)
        kube = version if isinstance(version, str) else kube
        caught = run_rules(docs, path, kube, quiet=True)
        if rule in caught:
            print(f"ok   self-test: {what} ({name}): caught by {rule}")
        else:
            print(f"FAIL self-test: {what} ({name}): not caught by {rule} (caught: {caught})")
            failed += 1
    # The schema check too: a misspelt field must fail strict validation.
    import kubernetes_validate
    docs = load(variants[SELF_TEST_VARIANT])
    regate_of(docs)["readinesProbe"] = regate_of(docs).pop("readinessProbe")
    try:
        kubernetes_validate.validate(pod_deployment(docs), "1.29.0", strict=True)
        print("FAIL self-test: a misspelt field passed the 1.29 schema")
        failed += 1
    except kubernetes_validate.ValidationError:
        print("ok   self-test: a misspelt field (readinesProbe): caught by the 1.29 schema")
    return failed


def pod_deployment(docs):
    return [d for d in docs if d["kind"] == "Deployment"][0]


def crds(paths):
    import json

    out = [{"file": split_arg(p)[0], "doc": d} for p in paths for d in load(p)
           if (d["apiVersion"], d["kind"]) in CRD_KINDS]
    json.dump(out, sys.stdout)
    return 0


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("schema", "rules", "self-test", "crds"):
        print(__doc__, file=sys.stderr)
        return 2
    cmd, paths = sys.argv[1], sys.argv[2:]
    failed = {"schema": schema, "rules": rules, "crds": crds,
              "self-test": self_test}[cmd](paths)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
