// Validates the chart's custom resources (cert-manager Certificate, Prometheus operator
// ServiceMonitor) against the JSON schemas of their CRDs, as the npm packages
// @kubernetes-models/cert-manager and @kubernetes-models/prometheus-operator ship them
// (compiled validators: types, enums, required fields and patterns; unlike the API server
// with strict field validation, they let unknown fields pass).
//
//   node crd-validate.mjs NODE_MODULES_DIR < crds.json     (from chart-checks.py crds)
//   node crd-validate.mjs NODE_MODULES_DIR --self-test     a broken Certificate must fail
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [modules, mode] = process.argv.slice(2);
const load = async (pkg, file) =>
  import(pathToFileURL(join(modules, "@kubernetes-models", pkg, file)).href);
const { Certificate } = await load("cert-manager", "cert-manager.io/v1/Certificate.js");
const { ServiceMonitor } = await load("prometheus-operator", "monitoring.coreos.com/v1/ServiceMonitor.js");
const models = {
  "cert-manager.io/v1/Certificate": Certificate,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

function validate(doc) {
  const model = models[`${doc.apiVersion}/${doc.kind}`];
  if (!model) return `no schema for ${doc.apiVersion} ${doc.kind}`;
  try {
    new model(doc).validate();
    return null;
  } catch (e) {
    return e.message;
  }
}

let failed = 0;
if (mode === "--self-test") {
  const cert = {
    apiVersion: "cert-manager.io/v1", kind: "Certificate", metadata: { name: "t" },
    spec: { secretName: "t", uris: ["spiffe://example.org/ns/demo/sa/t"],
            issuerRef: { name: "ca" }, usages: ["server auth", "client auth"] },
  };
  const broken = [
    ["a usage cert-manager does not know", { ...cert.spec, usages: ["server-auth"] }],
    ["uris as a string", { ...cert.spec, uris: "spiffe://example.org/x" }],
    ["no issuerRef", { ...cert.spec, issuerRef: undefined }],
  ];
  if (validate(cert)) { console.log(`FAIL self-test: a good Certificate fails: ${validate(cert)}`); failed++; }
  for (const [what, spec] of broken) {
    const err = validate({ ...cert, spec: JSON.parse(JSON.stringify(spec)) });
    console.log(err ? `ok   self-test: ${what}: caught (${err})` : `FAIL self-test: ${what}: passed`);
    if (!err) failed++;
  }
} else {
  for (const { file, doc } of JSON.parse(readFileSync(0, "utf8"))) {
    const err = validate(doc);
    const name = `${file}: ${doc.kind}/${doc.metadata.name}`;
    console.log(err ? `FAIL ${name}: ${err}` : `ok   ${name}: CRD schema (${doc.apiVersion})`);
    if (err) failed++;
  }
}
process.exit(failed ? 1 : 0);
