//! The Kubernetes manifests under `deploy/kubernetes` are (a) valid against the Kubernetes API
//! schema, (b) consistent with the `goheap agent` command line they run, (c) least-privilege, and
//! (d) their privileges really are sufficient and necessary to profile another user's Go process.
//!
//! Schema validation uses PyPI `kubernetes-validate` (pinned, installed on first use into
//! `$GOHEAP_CACHE/venv-kubernetes-validate`, default `~/.cache/goheap`); `python3-venv` comes from
//! `fixtures/install-toolchains.sh`. The privilege test (d) runs the real `goheap agent` as uid 0
//! holding only the manifest's capabilities (via `setpriv`), so it must run as root, like CI.

mod agent_common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use agent_common::metric_series;
use agent_common::support::{
    cache_dir, free_port, gocache, goheap_bin, goroot, http_get, wait_for, without_agent_env,
    Running, Scratch, GO_1_24,
};
use serde_json::Value;

/// The `kubernetes-validate` release the test installs; it bundles schemas for Kubernetes
/// 1.25 ... 1.37.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
/// Oldest Kubernetes the manifests target (container `appArmorProfile` field, sidecar-era APIs).
const MIN_KUBERNETES_VERSION: &str = "1.30.0";
/// API groups without a schema in `kubernetes-validate`; the tests check them structurally.
const KUSTOMIZE_API_VERSION: &str = "kustomize.config.k8s.io/v1beta1";
const SERVICE_MONITOR_API_VERSION: &str = "monitoring.coreos.com/v1";
/// Go toolchain used to build the profiled fixture in the privilege test.
const GO_VERSION: &str = GO_1_24;
/// Uid/gid the profiled Go process runs as: some user other than the agent's.
const TARGET_UID: u32 = 65534;

// ---------------------------------------------------------------------------------------------
// Manifest loading

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent directory")
        .to_path_buf()
}

fn manifests_dir() -> PathBuf {
    repo_root().join("deploy").join("kubernetes")
}

/// Every `*.yaml`/`*.yml` file under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The non-empty YAML documents of one file, as JSON values.
fn load_documents(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc: Value = serde::Deserialize::deserialize(de)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
        if !doc.is_null() {
            docs.push(doc);
        }
    }
    docs
}

/// One manifest document with the file it came from.
struct Manifest {
    path: PathBuf,
    doc: Value,
}

impl Manifest {
    fn api_version(&self) -> &str {
        self.doc["apiVersion"].as_str().unwrap_or("")
    }
    fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or("")
    }
}

fn all_manifests() -> Vec<Manifest> {
    let files = yaml_files(&manifests_dir());
    assert!(
        !files.is_empty(),
        "no manifests under {}",
        manifests_dir().display()
    );
    files
        .into_iter()
        .flat_map(|path| {
            load_documents(&path).into_iter().map(move |doc| Manifest {
                path: path.clone(),
                doc,
            })
        })
        .collect()
}

/// The single manifest of `kind`; panics if there is none or more than one.
fn the_manifest(kind: &str) -> Manifest {
    let mut found: Vec<Manifest> = all_manifests()
        .into_iter()
        .filter(|m| m.kind() == kind)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} under deploy/kubernetes"
    );
    found.remove(0)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("expected a string at {pointer}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, x)| x.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn pod_spec(daemonset: &Value) -> &Value {
    daemonset
        .pointer("/spec/template/spec")
        .expect("DaemonSet has spec.template.spec")
}

/// The DaemonSet's agent container (the one whose args start with the `agent` subcommand).
fn agent_container(daemonset: &Value) -> &Value {
    let containers = pod_spec(daemonset)["containers"]
        .as_array()
        .expect("pod spec has containers");
    let agents: Vec<&Value> = containers
        .iter()
        .filter(|c| strings(&c["args"]).first().map(String::as_str) == Some("agent"))
        .collect();
    assert_eq!(
        agents.len(),
        1,
        "exactly one container must run `goheap agent`"
    );
    agents[0]
}

/// Every container of the pod, init containers included.
fn every_container(daemonset: &Value) -> Vec<&Value> {
    let spec = pod_spec(daemonset);
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// (a) schema validation

/// Python interpreter of the cached venv holding `kubernetes-validate`, created on first use.
fn kubernetes_validate_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = cache_dir().join("venv-kubernetes-validate");
        let python = venv.join("bin").join("python");
        if installed_kubernetes_validate(&python).as_deref() == Some(KUBERNETES_VALIDATE_VERSION) {
            return python;
        }
        std::fs::create_dir_all(cache_dir()).expect("create GOHEAP_CACHE");
        if !python.exists() {
            let status = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .unwrap_or_else(|e| {
                    panic!("python3 not runnable ({e}); run fixtures/install-toolchains.sh")
                });
            assert!(
                status.success(),
                "python3 -m venv {} failed; install python3-venv (fixtures/install-toolchains.sh)",
                venv.display()
            );
        }
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .arg(format!(
                "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
            ))
            .status()
            .expect("run pip");
        assert!(
            status.success(),
            "pip install kubernetes-validate=={KUBERNETES_VALIDATE_VERSION} failed"
        );
        assert_eq!(
            installed_kubernetes_validate(&python).as_deref(),
            Some(KUBERNETES_VALIDATE_VERSION),
            "kubernetes-validate not importable after install"
        );
        python
    })
}

fn installed_kubernetes_validate(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import kubernetes_validate.version as v; print(v.__version__)",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn latest_bundled_kubernetes_version() -> String {
    let out = Command::new(kubernetes_validate_python())
        .args([
            "-c",
            "import kubernetes_validate.utils as u; print(u.latest_version())",
        ])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `kubernetes-validate --strict -k VERSION FILES`; returns (exit code, stdout+stderr).
fn run_kubernetes_validate(version: &str, files: &[PathBuf]) -> (i32, String) {
    let out = Command::new(kubernetes_validate_python())
        .args(["-m", "kubernetes_validate", "--strict", "-k", version])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Files whose documents are all core Kubernetes kinds (everything but Kustomization and
/// ServiceMonitor), with their document count. A file mixing both classes is rejected.
fn core_manifest_files() -> Vec<(PathBuf, usize)> {
    let mut per_file: BTreeMap<PathBuf, (usize, usize)> = BTreeMap::new();
    for m in all_manifests() {
        let entry = per_file.entry(m.path.clone()).or_default();
        if m.api_version() == KUSTOMIZE_API_VERSION
            || m.api_version() == SERVICE_MONITOR_API_VERSION
        {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }
    per_file
        .into_iter()
        .filter_map(|(path, (core, other))| {
            assert!(
                core == 0 || other == 0,
                "{} mixes core and non-core kinds",
                path.display()
            );
            (core > 0).then_some((path, core))
        })
        .collect()
}

#[test]
fn every_document_is_a_known_kind() {
    for m in all_manifests() {
        let known_non_core = matches!(
            (m.api_version(), m.kind()),
            (KUSTOMIZE_API_VERSION, "Kustomization")
                | (SERVICE_MONITOR_API_VERSION, "ServiceMonitor")
        );
        let core = !m.api_version().contains('.') || m.api_version().contains(".k8s.io/");
        assert!(
            known_non_core || core,
            "{}: {} {} has no schema here and no structural check in this test",
            m.path.display(),
            m.api_version(),
            m.kind()
        );
        assert!(
            !m.api_version().is_empty() && !m.kind().is_empty(),
            "{}: document without apiVersion/kind",
            m.path.display()
        );
    }
}

#[test]
fn core_manifests_validate_against_the_kubernetes_schema() {
    let files = core_manifest_files();
    let expected_resources: usize = files.iter().map(|(_, n)| n).sum();
    assert!(
        expected_resources >= 4,
        "namespace, service account, service, daemonset expected"
    );
    let paths: Vec<PathBuf> = files.into_iter().map(|(p, _)| p).collect();
    for version in [
        MIN_KUBERNETES_VERSION.to_owned(),
        latest_bundled_kubernetes_version(),
    ] {
        let (code, output) = run_kubernetes_validate(&version, &paths);
        assert_eq!(code, 0, "kubernetes-validate {version} failed:\n{output}");
        // kubernetes-validate exits 0 with a WARN when it has no schema for a kind: only a
        // "passed" line per resource counts as validated.
        let passed = output
            .lines()
            .filter(|l| l.starts_with("INFO") && l.contains(" passed "))
            .count();
        assert_eq!(
            passed, expected_resources,
            "not every resource was validated against {version}:\n{output}"
        );
        assert!(
            !output
                .lines()
                .any(|l| l.starts_with("WARN") || l.starts_with("ERROR")),
            "{output}"
        );
    }
}

/// Negative control: the validator (strict mode) rejects a DaemonSet with a misspelt field, so
/// the passing run above is not vacuous.
#[test]
fn schema_validation_rejects_a_broken_daemonset() {
    let mut daemonset = the_manifest("DaemonSet").doc;
    daemonset["spec"]["template"]["spec"]["hostPIDs"] = Value::Bool(true);
    let dir = scratch_dir("broken-daemonset");
    let file = dir.0.join("daemonset.yaml");
    std::fs::write(
        &file,
        serde_json::to_vec_pretty(&daemonset).expect("serialize"),
    )
    .expect("write");
    let (code, output) = run_kubernetes_validate(MIN_KUBERNETES_VERSION, &[file]);
    assert_ne!(
        code, 0,
        "a misspelt field must fail strict validation:\n{output}"
    );
    assert!(output.contains("hostPIDs"), "{output}");
}

#[test]
fn kustomization_lists_every_core_manifest_but_not_the_servicemonitor() {
    let kustomization = the_manifest("Kustomization");
    let dir = kustomization
        .path
        .parent()
        .expect("kustomization has a directory")
        .to_path_buf();
    let resources: BTreeSet<String> = strings(&kustomization.doc["resources"])
        .into_iter()
        .collect();
    for r in &resources {
        assert!(
            dir.join(r).is_file(),
            "kustomization resource {r} does not exist"
        );
    }
    let core: BTreeSet<String> = core_manifest_files()
        .into_iter()
        .filter(|(p, _)| p.parent() == Some(dir.as_path()))
        .map(|(p, _)| {
            p.file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        resources, core,
        "kustomization.yaml must list exactly the core manifests"
    );
    let servicemonitor = the_manifest("ServiceMonitor");
    let sm_name = servicemonitor
        .path
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    assert!(
        !resources.contains(&sm_name),
        "the ServiceMonitor needs a CRD: keep it optional"
    );
    for key in kustomization.doc.as_object().expect("mapping").keys() {
        assert!(
            [
                "apiVersion",
                "kind",
                "resources",
                "namespace",
                "labels",
                "images"
            ]
            .contains(&key.as_str()),
            "unexpected kustomization key {key}"
        );
    }
}

/// Structural check of the ServiceMonitor (its CRD schema is not in kubernetes-validate): it
/// selects the agent's Service by labels, in the Service's namespace, on the Service's port name.
#[test]
fn servicemonitor_selects_the_agent_service_port() {
    let sm = the_manifest("ServiceMonitor").doc;
    let service = all_manifests()
        .into_iter()
        .find(|m| m.kind() == "Service" && m.doc["metadata"]["name"] == "goheap")
        .expect("the headless Service goheap")
        .doc;
    assert_eq!(str_at(&sm, "/apiVersion"), SERVICE_MONITOR_API_VERSION);
    assert!(!str_at(&sm, "/metadata/name").is_empty());
    let namespace = str_at(&service, "/metadata/namespace");
    assert_eq!(str_at(&sm, "/metadata/namespace"), namespace);

    let spec = sm["spec"].as_object().expect("ServiceMonitor spec");
    for key in spec.keys() {
        assert!(
            [
                "selector",
                "namespaceSelector",
                "endpoints",
                "jobLabel",
                "targetLabels",
                "podTargetLabels"
            ]
            .contains(&key.as_str()),
            "unknown ServiceMonitor spec field {key}"
        );
    }
    let wanted = string_map(&sm["spec"]["selector"]["matchLabels"]);
    assert!(
        !wanted.is_empty(),
        "ServiceMonitor selector.matchLabels must be set"
    );
    let service_labels = string_map(&service["metadata"]["labels"]);
    for (k, v) in &wanted {
        assert_eq!(
            service_labels.get(k),
            Some(v),
            "ServiceMonitor label {k}={v} not on the Service"
        );
    }
    let names = strings(&sm["spec"]["namespaceSelector"]["matchNames"]);
    assert!(
        names.is_empty() || names.iter().any(|n| n == namespace),
        "namespaceSelector must include {namespace}"
    );

    let service_ports: Vec<&str> = service["spec"]["ports"]
        .as_array()
        .expect("Service ports")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let endpoints = sm["spec"]["endpoints"]
        .as_array()
        .expect("ServiceMonitor endpoints");
    assert!(!endpoints.is_empty());
    for ep in endpoints {
        let ep = ep.as_object().expect("endpoint mapping");
        for key in ep.keys() {
            assert!(
                [
                    "port",
                    "path",
                    "interval",
                    "scrapeTimeout",
                    "scheme",
                    "honorLabels",
                    "relabelings",
                    "metricRelabelings"
                ]
                .contains(&key.as_str()),
                "unknown ServiceMonitor endpoint field {key}"
            );
        }
        let port = ep
            .get("port")
            .and_then(Value::as_str)
            .expect("endpoint port (by name)");
        assert!(
            service_ports.contains(&port),
            "endpoint port {port} is not a Service port name"
        );
        assert_eq!(
            ep.get("path").and_then(Value::as_str).unwrap_or("/metrics"),
            "/metrics"
        );
        for relabel in ep
            .get("relabelings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for key in relabel.as_object().expect("relabeling mapping").keys() {
                assert!(
                    [
                        "action",
                        "sourceLabels",
                        "separator",
                        "targetLabel",
                        "regex",
                        "modulus",
                        "replacement"
                    ]
                    .contains(&key.as_str()),
                    "unknown relabeling field {key}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) drift between the DaemonSet and the `goheap agent` command line

fn goheap_command() -> Command {
    let mut cmd = Command::new(goheap_bin());
    without_agent_env(&mut cmd);
    cmd
}

fn agent_help() -> String {
    let out = goheap_command()
        .args(["agent", "--help"])
        .output()
        .expect("run goheap");
    assert!(
        out.status.success(),
        "`goheap agent --help` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// True if `line` declares an option (`--flag ...` or `-x, --flag ...`), not a possible-value
/// bullet (`- value: ...`).
fn declares_an_option(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("--")
        || (t.starts_with('-') && t.chars().nth(1).is_some_and(|c| c.is_ascii_alphanumeric()))
}

/// The block of clap help text describing `flag` (e.g. `--interval`): its declaration line up to
/// the next option's declaration.
fn help_section(help: &str, flag: &str) -> Option<String> {
    let lines: Vec<&str> = help.lines().collect();
    let start = lines.iter().position(|l| {
        declares_an_option(l) && l.split([' ', ',', '=', '[']).any(|token| token == flag)
    })?;
    let end = lines
        .iter()
        .skip(start + 1)
        .position(|l| declares_an_option(l))
        .map_or(lines.len(), |i| start + 1 + i);
    Some(lines[start..end].join("\n"))
}

/// `[name: value]` annotation of a help section (`default`, `env`, `possible values`).
fn bracket_annotation(section: &str, name: &str) -> Option<String> {
    let open = format!("[{name}: ");
    let start = section.find(&open)? + open.len();
    let end = section[start..].find(']')? + start;
    Some(section[start..end].to_owned())
}

/// Possible values listed in a help section, in either of clap's formats:
/// `[possible values: a, b]` or a `Possible values:` list of `- a: help` bullets.
fn possible_values(section: &str) -> Option<Vec<String>> {
    if let Some(list) = bracket_annotation(section, "possible values") {
        return Some(list.split(',').map(|v| v.trim().to_owned()).collect());
    }
    let mut lines = section
        .lines()
        .skip_while(|l| l.trim() != "Possible values:");
    lines.next()?;
    let values: Vec<String> = lines
        .map(str::trim)
        .take_while(|l| l.starts_with("- "))
        .filter_map(|l| l[2..].split(':').next().map(|v| v.trim().to_owned()))
        .collect();
    (!values.is_empty()).then_some(values)
}

/// True if `value` has the same syntactic shape as the flag's documented default.
fn shaped_like_default(value: &str, default: &str) -> bool {
    let is_duration = |s: &str| {
        let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &s[digits.len()..];
        !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit())
            && ["ns", "us", "ms", "s", "m", "h"].contains(&unit)
    };
    if default.parse::<SocketAddr>().is_ok() {
        value.parse::<SocketAddr>().is_ok()
    } else if default.chars().all(|c| c.is_ascii_digit()) {
        value.chars().all(|c| c.is_ascii_digit()) && !value.is_empty()
    } else if is_duration(default) {
        is_duration(value)
    } else {
        !value.is_empty()
    }
}

/// `(flag, value)` for each `--flag[=value]` after the `agent` subcommand.
fn agent_flags(container: &Value) -> Vec<(String, Option<String>)> {
    let args = strings(&container["args"]);
    assert!(
        container.get("command").is_none(),
        "use the image ENTRYPOINT; set only args"
    );
    assert_eq!(args.first().map(String::as_str), Some("agent"));
    args[1..]
        .iter()
        .map(|arg| {
            assert!(
                arg.starts_with("--"),
                "write agent args as --flag=value, got {arg:?}"
            );
            match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            }
        })
        .collect()
}

/// The args as the kubelet passes them: `$(POD_IP)` (the downward API's `status.podIP`)
/// substituted with an example pod IP; any other `$(...)` fails the test.
fn kubelet_expanded(args: Vec<String>) -> Vec<String> {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.replace("$(POD_IP)", "10.244.1.17"))
        .collect();
    assert!(
        args.iter().all(|a| !a.contains("$(")),
        "an arg refers to a variable this test does not substitute: {args:?}"
    );
    args
}

#[test]
fn daemonset_args_are_accepted_by_goheap_agent() {
    let daemonset = the_manifest("DaemonSet").doc;
    let container = agent_container(&daemonset);
    let help = agent_help();
    for (flag, value) in agent_flags(container) {
        let section = help_section(&help, &flag)
            .unwrap_or_else(|| panic!("`goheap agent --help` does not list {flag}:\n{help}"));
        let Some(value) = value else { continue };
        if let Some(allowed) = possible_values(&section) {
            assert!(
                allowed.contains(&value),
                "{flag}={value}: not one of {allowed:?}"
            );
        }
        if let Some(default) = bracket_annotation(&section, "default") {
            assert!(
                shaped_like_default(&value, &default),
                "{flag}={value} does not look like its default {default:?}"
            );
        }
    }
    // clap parses (and value-checks) every argument before it acts on --help, so this run
    // fails if any manifest argument or value is rejected by the real parser. `$(POD_IP)` is
    // what the kubelet substitutes from the downward API (an example pod IP here).
    let args = kubelet_expanded(strings(&container["args"]));
    let out = goheap_command()
        .args(&args)
        .arg("--help")
        .output()
        .expect("run goheap");
    assert!(
        out.status.success(),
        "goheap rejects the DaemonSet args {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Negative control for the parse check above: a bad enumerated value is rejected before --help.
#[test]
fn goheap_agent_rejects_a_bad_value_before_help() {
    let out = goheap_command()
        .args(["agent", "--go-heap-profiler=not-a-mode", "--help"])
        .output()
        .expect("run goheap");
    assert!(
        !out.status.success(),
        "clap accepted --go-heap-profiler=not-a-mode"
    );
}

#[test]
fn daemonset_env_vars_are_read_by_goheap_agent() {
    let daemonset = the_manifest("DaemonSet").doc;
    let container = agent_container(&daemonset);
    let help = agent_help();
    let env = container["env"].as_array().expect("container env");
    let names: Vec<&str> = env.iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(
        names.contains(&"NODE_NAME"),
        "NODE_NAME must be set from the downward API"
    );
    let args = strings(&container["args"]);
    for name in &names {
        // Read by the agent, or substituted by the kubelet into an arg (`$(NAME)`).
        let in_arg = args.iter().any(|a| a.contains(&format!("$({name})")));
        assert!(
            in_arg || help.contains(&format!("[env: {name}=")),
            "goheap agent does not read env {name}, and no arg uses it"
        );
    }
    let node_name = env
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        str_at(node_name, "/valueFrom/fieldRef/fieldPath"),
        "spec.nodeName"
    );
}

/// Port the agent listens on: from `--listen` in the manifest, else the CLI's default.
fn agent_listen_port(container: &Value) -> u16 {
    let listen = agent_flags(container)
        .into_iter()
        .find(|(flag, _)| flag == "--listen")
        .and_then(|(_, v)| v)
        .unwrap_or_else(|| {
            let help = agent_help();
            let section = help_section(&help, "--listen").expect("--listen in help");
            bracket_annotation(&section, "default").expect("--listen has a default")
        });
    listen
        .parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("--listen {listen:?} is not host:port: {e}"))
        .port()
}

/// Resolves a probe/Service port (number or container port name) to a number.
fn resolve_port(port: &Value, container: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).expect("port fits u16");
    }
    let name = port.as_str().expect("port is a number or a name");
    let found = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no container port named {name}"));
    u16::try_from(found["containerPort"].as_u64().expect("containerPort")).expect("port fits u16")
}

#[test]
fn probes_ports_and_scrape_annotations_match_the_listen_address() {
    let daemonset = the_manifest("DaemonSet").doc;
    let container = agent_container(&daemonset);
    let listen_port = agent_listen_port(container);

    let ports = container["ports"].as_array().expect("container ports");
    let http = ports
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a port named http");
    assert_eq!(http["containerPort"].as_u64(), Some(u64::from(listen_port)));
    assert_eq!(listen_port, 9465, "documented agent port");

    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], "/healthz", "{probe} path");
        assert_eq!(
            resolve_port(&get["port"], container),
            listen_port,
            "{probe} port"
        );
    }

    let annotations = string_map(&daemonset["spec"]["template"]["metadata"]["annotations"]);
    assert_eq!(
        annotations.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        annotations.get("prometheus.io/port"),
        Some(&listen_port.to_string())
    );
    assert_eq!(
        annotations.get("prometheus.io/path").map(String::as_str),
        Some("/metrics")
    );

    // Every Service (the headless one for Prometheus, the node-local one for /targets) selects
    // the agent pods on the agent's port.
    for service in all_manifests()
        .into_iter()
        .filter(|m| m.kind() == "Service")
    {
        let service = service.doc;
        let pod_labels = string_map(&daemonset["spec"]["template"]["metadata"]["labels"]);
        for (k, v) in string_map(&service["spec"]["selector"]) {
            assert_eq!(
                pod_labels.get(&k),
                Some(&v),
                "Service selector {k}={v} does not match the pods"
            );
        }
        let service_port = service["spec"]["ports"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "http"))
            .expect("Service port named http");
        assert_eq!(
            resolve_port(&service_port["targetPort"], container),
            listen_port
        );
    }

    let pod_labels = string_map(&daemonset["spec"]["template"]["metadata"]["labels"]);
    let selector = string_map(&daemonset["spec"]["selector"]["matchLabels"]);
    for (k, v) in &selector {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "DaemonSet selector must match its template"
        );
    }
    assert_eq!(
        str_at(&daemonset, "/spec/template/spec/serviceAccountName"),
        str_at(&the_manifest("ServiceAccount").doc, "/metadata/name")
    );
}

// ---------------------------------------------------------------------------------------------
// (c) least privilege

#[test]
fn daemonset_is_least_privilege() {
    let daemonset = the_manifest("DaemonSet").doc;
    let spec = pod_spec(&daemonset);
    assert_eq!(
        spec["hostPID"], true,
        "hostPID is what lets the agent see the node's processes"
    );
    for field in ["hostNetwork", "hostIPC", "shareProcessNamespace"] {
        assert!(
            spec.get(field).is_none() || spec[field] == false,
            "{field} must not be set"
        );
    }
    assert_eq!(
        spec["automountServiceAccountToken"], false,
        "the agent needs no API token"
    );
    // Volumes: emptyDir, or the kubelet's two log directories as read-only hostPaths (their
    // entry names give Kubernetes names); nothing else of the host.
    let mounts: Vec<Value> = every_container(&daemonset)
        .iter()
        .flat_map(|c| c["volumeMounts"].as_array().cloned().unwrap_or_default())
        .collect();
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or("?");
        let keys: Vec<&String> = volume.as_object().expect("volume mapping").keys().collect();
        if volume.get("hostPath").is_some() {
            let path = str_at(volume, "/hostPath/path");
            assert!(
                ["/var/log/pods", "/var/log/containers"].contains(&path),
                "volume {name}: hostPath {path} (only the kubelet's log directories)"
            );
            assert_eq!(
                str_at(volume, "/hostPath/type"),
                "Directory",
                "volume {name}"
            );
            let used: Vec<&Value> = mounts.iter().filter(|m| m["name"] == name).collect();
            assert!(!used.is_empty(), "volume {name} is not mounted");
            for m in used {
                assert_eq!(
                    m["readOnly"], true,
                    "volume {name} must be mounted read-only"
                );
            }
        } else {
            assert!(
                keys.iter().all(|k| *k == "name" || *k == "emptyDir"),
                "volume {name}: only emptyDir or the kubelet's log directories are allowed"
            );
        }
    }
    let pod_seccomp = spec
        .pointer("/securityContext/seccompProfile/type")
        .and_then(Value::as_str);
    let tolerations = spec["tolerations"].as_array().expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "tolerate every taint so the agent runs on every node"
    );

    let containers = every_container(&daemonset);
    assert_eq!(containers.len(), 1, "one container: the agent");
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        assert_eq!(sc["privileged"], false, "{name}: privileged must be false");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(
            strings(&sc["capabilities"]["drop"]),
            ["ALL"],
            "{name}: drop ALL"
        );
        assert_eq!(
            strings(&sc["capabilities"]["add"]),
            ["SYS_PTRACE"],
            "{name}: only SYS_PTRACE"
        );
        let seccomp = sc
            .pointer("/seccompProfile/type")
            .and_then(Value::as_str)
            .or(pod_seccomp);
        assert!(
            matches!(seccomp, Some("RuntimeDefault" | "Localhost")),
            "{name}: seccomp must be RuntimeDefault or Localhost, got {seccomp:?}"
        );
        for port in c["ports"].as_array().into_iter().flatten() {
            assert!(port.get("hostPort").is_none(), "{name}: no host ports");
        }
        let requests = &c["resources"]["requests"];
        let limits = &c["resources"]["limits"];
        for key in ["cpu", "memory"] {
            assert!(
                requests[key].is_string(),
                "{name}: resources.requests.{key}"
            );
            assert!(limits[key].is_string(), "{name}: resources.limits.{key}");
        }
    }

    let sa = the_manifest("ServiceAccount").doc;
    assert_eq!(sa["automountServiceAccountToken"], false);
    let rbac = all_manifests()
        .into_iter()
        .filter(|m| m.api_version().starts_with("rbac.authorization.k8s.io/"))
        .count();
    assert_eq!(rbac, 0, "the agent needs no RBAC");
}

/// `--kubelet-log-dir` names a directory whose `pods/` and `containers/` are the read-only
/// hostPath mounts of the same host directories (else the agent would find no names).
#[test]
fn kubelet_log_dir_is_mounted_from_the_host_read_only() {
    let daemonset = the_manifest("DaemonSet").doc;
    let container = agent_container(&daemonset);
    let dir = agent_flags(container)
        .into_iter()
        .find(|(f, _)| f == "--kubelet-log-dir")
        .and_then(|(_, v)| v)
        .expect("--kubelet-log-dir=DIR in the DaemonSet args");
    let volumes = pod_spec(&daemonset)["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for sub in ["pods", "containers"] {
        let path = format!("{dir}/{sub}");
        let mount = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"] == path.as_str())
            .unwrap_or_else(|| panic!("no volumeMount at {path}"));
        assert_eq!(mount["readOnly"], true, "{path}");
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("no volume for the mount at {path}"));
        assert_eq!(
            str_at(volume, "/hostPath/path"),
            format!("/var/log/{sub}"),
            "{path} must be the node's /var/log/{sub}"
        );
    }
}

#[test]
fn namespace_enforces_privileged_and_audits_baseline() {
    let namespace = the_manifest("Namespace").doc;
    let labels = string_map(&namespace["metadata"]["labels"]);
    let label = |k: &str| {
        labels
            .get(&format!("pod-security.kubernetes.io/{k}"))
            .map(String::as_str)
    };
    assert_eq!(
        label("enforce"),
        Some("privileged"),
        "hostPID + SYS_PTRACE exceed Baseline"
    );
    assert_eq!(label("warn"), Some("baseline"));
    assert_eq!(label("audit"), Some("baseline"));
    let name = str_at(&namespace, "/metadata/name");
    for m in all_manifests() {
        if let Some(ns) = m.doc.pointer("/metadata/namespace").and_then(Value::as_str) {
            assert_eq!(
                ns,
                name,
                "{}: every object lives in {name}",
                m.path.display()
            );
        } else {
            assert!(
                matches!(m.kind(), "Namespace" | "Kustomization"),
                "{}: {} without metadata.namespace",
                m.path.display(),
                m.kind()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (d) the manifest's privileges are sufficient, and SYS_PTRACE is necessary

/// A scratch directory (removed when dropped), world-readable: the profiled process runs as
/// another user.
fn scratch_dir(tag: &str) -> Scratch {
    let dir = Scratch::new(&format!("deploy-{tag}"));
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    dir
}

const FIXTURE_SOURCE: &str = r#"package main

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

var retained [][]byte

//go:noinline
func deployTestRetain(n int) {
	for i := 0; i < n; i++ {
		retained = append(retained, make([]byte, 256<<10))
	}
}

func main() {
	runtime.MemProfileRate = 4096
	deployTestRetain(64)
	runtime.GC()
	runtime.GC()
	fmt.Println("ready")
	os.Stdout.Sync()
	time.Sleep(time.Hour)
}
"#;

/// Builds the fixture with the cached Go toolchain; returns the binary's path.
fn build_go_fixture(dir: &Path) -> PathBuf {
    let goroot = goroot(GO_VERSION);
    let go = goroot.join("bin").join("go");
    assert!(
        go.is_file(),
        "Go {GO_VERSION} missing at {}: run fixtures/install-toolchains.sh",
        go.display()
    );
    std::fs::write(dir.join("main.go"), FIXTURE_SOURCE).expect("write main.go");
    let out = Command::new(&go)
        .current_dir(dir)
        .args(["build", "-o", "retain", "main.go"])
        .env("GOROOT", &goroot)
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GO111MODULE", "off")
        .env("GOCACHE", gocache(GO_VERSION))
        .output()
        .expect("run go build");
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = dir.join("retain");
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    bin
}

/// Starts the fixture as `TARGET_UID` and waits until its profile is published.
fn start_fixture_as_other_user(bin: &Path) -> Running {
    let mut child = Command::new(bin)
        .uid(TARGET_UID)
        .gid(TARGET_UID)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start fixture (the test must run as root)");
    let stdout = child.stdout.take().expect("fixture stdout");
    let guard = Running {
        pid: child.id() as i32,
        child,
    };
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read fixture stdout");
    assert_eq!(line.trim(), "ready", "fixture did not start");
    guard
}

/// Runs `goheap` with the DaemonSet's args (listening on a loopback port instead, and looking at
/// `proc_root`) under the DaemonSet's credentials: its uid/gid, no-new-privs, and exactly
/// `capabilities` as the permitted/effective/bounding set. Returns the agent and its port once
/// /healthz answers 200.
fn start_agent_with_credentials(
    container: &Value,
    capabilities: &[String],
    proc_root: &Path,
) -> (Running, u16) {
    let sc = &container["securityContext"];
    let uid = sc["runAsUser"]
        .as_u64()
        .expect("runAsUser is set explicitly");
    let gid = sc["runAsGroup"].as_u64().unwrap_or(uid);
    let port = free_port();
    let mut args: Vec<String> = kubelet_expanded(strings(&container["args"]))
        .into_iter()
        .filter(|a| !a.starts_with("--listen"))
        .collect();
    args.push(format!("--listen=127.0.0.1:{port}"));
    args.push(format!("--proc-root={}", proc_root.display()));
    let caps: String = std::iter::once("-all".to_owned())
        .chain(
            capabilities
                .iter()
                .map(|c| format!("+{}", c.to_ascii_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--inh-caps=-all")
        .arg(format!("--bounding-set={caps}"));
    if sc["allowPrivilegeEscalation"] == false {
        cmd.arg("--no-new-privs");
    }
    cmd.arg("--").arg(goheap_bin()).args(&args);
    without_agent_env(&mut cmd);
    let child = cmd
        .env("NODE_NAME", "deploy-test-node")
        .stdout(Stdio::null())
        .spawn()
        .expect("run setpriv (util-linux; installed by fixtures/install-toolchains.sh)");
    let mut guard = Running {
        pid: child.id() as i32,
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = guard.child.try_wait().expect("poll agent") {
            panic!("agent exited early ({status}); args {args:?}, caps {caps}");
        }
        if http_get(port, "/healthz").is_ok_and(|r| r.status == 200) {
            return (guard, port);
        }
        assert!(
            Instant::now() < deadline,
            "agent /healthz not 200 within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the agent on `port` has completed a cycle (so `pid` is classified); returns its
/// /metrics text then. Fails after 60 s.
fn metrics_after_first_cycle(port: u16) -> String {
    wait_for(Duration::from_secs(60), "the agent's first cycle", || {
        let r = http_get(port, "/metrics").ok()?;
        let text = r.text();
        (metric_series(&text, "goheap_agent_cycles_total")? >= 1.0).then_some(text)
    })
}

/// Fetches the heap profile of `pid`; returns (status, decompressed body).
fn fetch_heap_profile(port: u16, pid: u32) -> (u16, Vec<u8>) {
    let r = http_get(port, &format!("/debug/pprof/heap?pid={pid}"))
        .unwrap_or_else(|e| panic!("GET /debug/pprof/heap?pid={pid}: {e} (did the agent crash?)"));
    let (status, body) = (r.status, r.body);
    if body.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(body.as_slice())
            .read_to_end(&mut plain)
            .expect("heap profile is valid gzip");
        (status, plain)
    } else {
        (status, body)
    }
}

/// The `goheap_agent_processes` gauge of `state`.
fn processes_in_state(metrics: &str, state: &str) -> Option<f64> {
    metric_series(
        metrics,
        &format!("goheap_agent_processes{{state=\"{state}\"}}"),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn manifest_privileges_suffice_and_sys_ptrace_is_necessary() {
    let daemonset = the_manifest("DaemonSet").doc;
    let container = agent_container(&daemonset).clone();
    let added = strings(&container["securityContext"]["capabilities"]["add"]);

    let dir = scratch_dir("privileges");
    let fixture = start_fixture_as_other_user(&build_go_fixture(&dir.0));
    let pid = fixture.child.id();
    assert_ne!(
        std::fs::metadata(format!("/proc/{pid}"))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .ok(),
        Some(0),
        "the fixture must run as another user than the agent"
    );
    // The agents see only the fixture (a proc root with just its /proc entry), so their
    // per-state process counts are about it alone.
    let proc_root = dir.path("proc");
    std::fs::create_dir(&proc_root).expect("create proc root");
    symlink(format!("/proc/{pid}"), proc_root.join(pid.to_string())).expect("symlink");

    // With exactly the manifest's credentials the agent profiles the other user's process.
    {
        let (_agent, port) = start_agent_with_credentials(&container, &added, &proc_root);
        let metrics = metrics_after_first_cycle(port);
        let (status, profile) = fetch_heap_profile(port, pid);
        let processes = http_get(port, "/processes").map(|r| r.text());
        assert_eq!(
            status,
            200,
            "heap profile of uid {TARGET_UID} pid {pid} with caps {added:?}: {}\n/processes: {processes:?}",
            String::from_utf8_lossy(&profile)
        );
        assert!(
            contains(&profile, b"main.deployTestRetain"),
            "the profile does not name the fixture's allocating function"
        );
        assert_eq!(
            processes_in_state(&metrics, "readable"),
            Some(1.0),
            "{metrics}"
        );
        assert_eq!(
            processes_in_state(&metrics, "permission-denied"),
            Some(0.0),
            "{metrics}"
        );
    }

    // Without SYS_PTRACE the kernel refuses: the agent counts the fixture as permission-denied,
    // does not track it as readable, and serves no profile of it. The capability is not decoration.
    {
        let (_agent, port) = start_agent_with_credentials(&container, &[], &proc_root);
        let metrics = metrics_after_first_cycle(port);
        assert_eq!(
            processes_in_state(&metrics, "permission-denied"),
            Some(1.0),
            "without CAP_SYS_PTRACE the fixture must be refused with permission denied:\n{metrics}"
        );
        assert_eq!(
            processes_in_state(&metrics, "readable"),
            Some(0.0),
            "{metrics}"
        );
        let processes: Value = serde_json::from_slice(&http_get(port, "/processes").unwrap().body)
            .expect("/processes is JSON");
        let listed = processes["processes"]
            .as_array()
            .expect("processes array")
            .iter()
            .find(|p| p["pid"].as_u64() == Some(u64::from(pid)));
        if let Some(p) = listed {
            assert_eq!(p["state"], "permission-denied", "{p}");
        }
        let (status, profile) = fetch_heap_profile(port, pid);
        assert_ne!(
            status,
            200,
            "the agent read another user's heap without CAP_SYS_PTRACE: {}",
            String::from_utf8_lossy(&profile)
        );
    }
    drop(fixture);
}
