#!/usr/bin/env python3
"""Re-record the OPA oracle answers for the regate differential corpus.

Run from the repository root:

    python3 tests/opa_corpus/record.py

It writes
  * tests/opa_corpus/cases/<name>/expected.json  (non-strict, like opa-envoy-plugin)
  * tests/opa_corpus/probes.expected.json        (strict and non-strict)

The oracle is OPA itself, embedded in the `opa-golib-python-bindings`
package (version 0.4.4, OPA v1.20.x), which must already be installed:

    pip install --ignore-requires-python opa-golib-python-bindings==0.4.4

Strict versus non-strict
------------------------
The bridge library hard-codes `rego.StrictBuiltinErrors(true)`, but
opa-envoy-plugin evaluates with strict builtin errors OFF: a builtin error
just makes the expression that raised it undefined.  To record what the
plugin would decide we copy the installed package to a temporary directory
and patch one instruction in the copy of `libopabridge.so`: the body of the
closure `main.evalCommon.func1.StrictBuiltinErrors.3` starts with
`movzbl 0x8(%rdx),%ecx` (`0f b6 4a 08`, loading the strict flag), which we
replace with `xor %ecx,%ecx; nop; nop` (`31 c9 90 90`) so the flag is always
false.  The symbol is located with `nm` and its virtual address mapped to a
file offset through the ELF section headers; the original bytes and the
package version are verified before patching, and the script refuses to
run otherwise.

The two libraries cannot be loaded under the same module name in one
process, so each mode runs in its own worker subprocess
(`record.py --worker ...`), which also self-checks that it got the
strictness it asked for.

Policy loading mirrors regate: every `*.rego` file below the case's
`policy/` directory (recursively, skipping names that start with '.'),
added under its path relative to the case directory (`policy/authz.rego`),
and every `*.json` / `*.yaml` / `*.yml` file deep-merged into `data` at its
directory path relative to the policy root (a root `data.json` merges into
`data` itself, `policy/roles/data.json` lands under `data.roles`).
"""

import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CASES_DIR = os.path.join(HERE, "cases")
PROBES_FILE = os.path.join(HERE, "probes.json")
PROBES_EXPECTED = os.path.join(HERE, "probes.expected.json")

PACKAGE = "opa-golib-python-bindings"
PACKAGE_VERSION = "0.4.4"
PATCH_SYMBOL = "main.evalCommon.func1.StrictBuiltinErrors.3"
ORIGINAL_BYTES = bytes.fromhex("0fb64a08")  # movzbl 0x8(%rdx),%ecx
PATCHED_BYTES = bytes.fromhex("31c99090")  # xor %ecx,%ecx; nop; nop


def die(msg):
    sys.stderr.write("record.py: " + msg + "\n")
    sys.exit(2)


def dump_json(value):
    """The one serialisation used for every written file (stable diffs)."""
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------
# Locating and patching the bridge library
# ---------------------------------------------------------------------------


def installed_bridge_dir():
    """Directory of the installed `opa_bindings` package (without importing it)."""
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        die(f"{PACKAGE} is not installed; run: pip install --ignore-requires-python "
            f"{PACKAGE}=={PACKAGE_VERSION}")
    if version != PACKAGE_VERSION:
        die(f"{PACKAGE} {version} is installed, but the strictness patch is only "
            f"known to be right for {PACKAGE_VERSION}; refusing to record")
    spec = importlib.util.find_spec("opa_bindings")
    if spec is None or not spec.submodule_search_locations:
        die("cannot find the opa_bindings package")
    return list(spec.submodule_search_locations)[0]


def opa_version(lib_path):
    """OPA's module version from the Go build info embedded in the library."""
    with open(lib_path, "rb") as f:
        blob = f.read()
    marker = b"github.com/open-policy-agent/opa\t"
    at = blob.find(marker)
    if at < 0:
        return None
    end = blob.find(b"\t", at + len(marker))
    return blob[at + len(marker):end].decode("ascii", "replace")


def symbol_address(lib_path, symbol):
    """Virtual address of `symbol`, read from `nm`."""
    try:
        out = subprocess.run(["nm", lib_path], check=True, capture_output=True,
                             text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        die(f"cannot run nm on {lib_path}: {e}")
    hits = [line.split()[0] for line in out.splitlines()
            if line.endswith(" " + symbol)]
    if len(hits) != 1:
        die(f"expected exactly one symbol {symbol} in {lib_path}, found {len(hits)}")
    return int(hits[0], 16)


def vaddr_to_offset(lib_path, vaddr):
    """Map a virtual address to a file offset using the ELF64 section headers."""
    with open(lib_path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        die(f"{lib_path} is not a little-endian ELF64 file")
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)
    for i in range(e_shnum):
        base = e_shoff + i * e_shentsize
        sh_type, = struct.unpack_from("<I", data, base + 4)
        sh_addr, sh_offset, sh_size = struct.unpack_from("<QQQ", data, base + 0x10)
        if sh_type == 8:  # SHT_NOBITS has no file bytes
            continue
        if sh_addr <= vaddr < sh_addr + sh_size:
            return vaddr - sh_addr + sh_offset
    die(f"address {vaddr:#x} is in no section of {lib_path}")


def make_patched_copy(src_dir, tmp_root):
    """Copy the package to tmp_root/opa_bindings and patch strictness off."""
    dst_dir = os.path.join(tmp_root, "opa_bindings")
    shutil.copytree(src_dir, dst_dir,
                    ignore=shutil.ignore_patterns("__pycache__"))
    lib = os.path.join(dst_dir, "libopabridge.so")
    offset = vaddr_to_offset(lib, symbol_address(lib, PATCH_SYMBOL))
    with open(lib, "r+b") as f:
        f.seek(offset)
        found = f.read(len(ORIGINAL_BYTES))
        if found != ORIGINAL_BYTES:
            die(f"unexpected bytes {found.hex()} at {offset:#x} ({PATCH_SYMBOL}); "
                f"expected {ORIGINAL_BYTES.hex()}: refusing to patch")
        f.seek(offset)
        f.write(PATCHED_BYTES)
    return tmp_root


# ---------------------------------------------------------------------------
# Worker: runs inside a subprocess with one flavour of the bridge
# ---------------------------------------------------------------------------


def load_policy_dir(engine, case_dir):
    """Load case_dir/policy into an OpaEngine exactly as regate loads it."""
    import yaml  # PyYAML; only needed for .yaml/.yml data files

    root = os.path.join(case_dir, "policy")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            rel_case = os.path.relpath(full, case_dir).replace(os.sep, "/")
            if name.endswith(".rego"):
                with open(full, encoding="utf-8") as f:
                    engine.add_policy(rel_case, f.read())
            elif name.endswith((".json", ".yaml", ".yml")):
                with open(full, encoding="utf-8") as f:
                    value = json.load(f) if name.endswith(".json") else yaml.safe_load(f)
                rel_dir = os.path.relpath(dirpath, root)
                path = "" if rel_dir == "." else ".".join(rel_dir.split(os.sep))
                engine.add_data(value, path)


def evaluate(engine, query, input_doc, errors):
    """{defined, value, error} for one query; `errors` is the OpaError class."""
    try:
        rows = engine.eval_query(f"__regate_result__ := {query}", input_doc)
    except errors as e:
        return {"defined": False, "value": None, "error": e.message}
    if not rows:
        return {"defined": False, "value": None, "error": None}
    return {"defined": True, "value": rows[0]["__regate_result__"], "error": None}


def envoy_allowed(result):
    """opa-envoy-plugin's reading of a decision (envoyauth.EvalResult.IsAllowed)."""
    if not result["defined"] or result["error"] is not None:
        return False
    value = result["value"]
    if value is True:
        return True
    if isinstance(value, dict):
        return value.get("allowed") is True
    return False


def worker(mode, bridge_dir, job_file, out_file):
    if bridge_dir:
        sys.path.insert(0, bridge_dir)
    import opa_bindings
    from opa_bindings import OpaEngine, OpaError

    where = os.path.dirname(os.path.abspath(opa_bindings.__file__))
    if bridge_dir and not where.startswith(os.path.abspath(bridge_dir)):
        die(f"worker {mode}: imported {where}, not the patched copy")

    # Self-check: a builtin error is an error when strict, undefined otherwise.
    check = OpaEngine()
    check.add_policy("check.rego", "package check\nimport rego.v1\nx := 1 / input.n\n")
    got = evaluate(check, "data.check.x", {"n": 0}, OpaError)
    check.close()
    if mode == "strict" and got["error"] is None:
        die("strict worker: division by zero did not raise an error")
    if mode == "nonstrict" and (got["error"] is not None or got["defined"]):
        die(f"non-strict worker: patch did not take effect ({got})")

    with open(job_file, encoding="utf-8") as f:
        job = json.load(f)
    out = {"cases": {}, "probes": {}}

    for case in job.get("cases", []):
        engine = OpaEngine()
        try:
            load_policy_dir(engine, case["dir"])
            # Modules are compiled lazily, on the first evaluation: force it.
            engine.eval_query("__regate_compiled__ := true", None)
        except OpaError as e:
            die(f"OPA refused the policy of case {case['name']}: {e}")
        results = {}
        for name, doc in case["inputs"].items():
            r = evaluate(engine, case["query"], doc, OpaError)
            r["allowed"] = envoy_allowed(r)
            results[name] = r
        engine.close()
        out["cases"][case["name"]] = results

    for probe in job.get("probes", []):
        engine = OpaEngine()
        module = "package probe\nimport rego.v1\nx := " + probe["expr"] + "\n"
        try:
            engine.add_policy("probe.rego", module)
        except OpaError as e:
            out["probes"][probe["name"]] = {"defined": False, "value": None,
                                            "error": e.message}
        else:
            out["probes"][probe["name"]] = evaluate(engine, "data.probe.x", None, OpaError)
        engine.close()

    with open(out_file, "w", encoding="utf-8") as f:
        json.dump(out, f)


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def run_worker(mode, bridge_dir, job, tmp):
    job_file = os.path.join(tmp, f"job-{mode}.json")
    out_file = os.path.join(tmp, f"out-{mode}.json")
    with open(job_file, "w", encoding="utf-8") as f:
        json.dump(job, f)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode,
           bridge_dir or "", job_file, out_file]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        die(f"{mode} worker failed (exit {proc.returncode})")
    with open(out_file, encoding="utf-8") as f:
        return json.load(f)


def main():
    installed = installed_bridge_dir()
    version = opa_version(os.path.join(installed, "libopabridge.so"))
    recorded_with = (f"OPA {version} ({PACKAGE} {PACKAGE_VERSION})" if version
                     else f"{PACKAGE} {PACKAGE_VERSION} (OPA 1.20)")

    cases = []
    for name in sorted(os.listdir(CASES_DIR)):
        case_dir = os.path.join(CASES_DIR, name)
        spec_file = os.path.join(case_dir, "cases.json")
        if name.startswith(".") or not os.path.isfile(spec_file):
            continue
        with open(spec_file, encoding="utf-8") as f:
            spec = json.load(f)
        cases.append({"name": name, "dir": case_dir, "query": spec["query"],
                      "inputs": spec["inputs"]})
    with open(PROBES_FILE, encoding="utf-8") as f:
        probes = json.load(f)
    names = [p["name"] for p in probes]
    if len(names) != len(set(names)):
        die("probes.json has duplicate names")

    with tempfile.TemporaryDirectory(prefix="opa-corpus-") as tmp:
        patched = make_patched_copy(installed, os.path.join(tmp, "patched"))
        nonstrict = run_worker("nonstrict", patched,
                               {"cases": cases, "probes": probes}, tmp)
        # The strict worker imports the installed, unpatched package.
        strict = run_worker("strict", "", {"probes": probes}, tmp)

    n_allow = n_deny = 0
    for case in cases:
        results = nonstrict["cases"][case["name"]]
        n_allow += sum(1 for r in results.values() if r["allowed"])
        n_deny += sum(1 for r in results.values() if not r["allowed"])
        expected = {"recorded_with": recorded_with, "mode": "non-strict",
                    "query": case["query"], "results": results}
        with open(os.path.join(case["dir"], "expected.json"), "w",
                  encoding="utf-8") as f:
            f.write(dump_json(expected))

    probe_out = {p["name"]: {"strict": strict["probes"][p["name"]],
                             "nonstrict": nonstrict["probes"][p["name"]]}
                 for p in probes}
    with open(PROBES_EXPECTED, "w", encoding="utf-8") as f:
        f.write(dump_json(probe_out))

    print(f"recorded with {recorded_with}: {len(cases)} cases, "
          f"{n_allow + n_deny} inputs ({n_allow} allowed, {n_deny} denied), "
          f"{len(probes)} probes")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        main()
