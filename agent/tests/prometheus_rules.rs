//! `deploy/prometheus/`: the recording rules and alerts pass `promtool check rules`, their unit
//! tests pass `promtool test rules` (Prometheus' own rule engine over synthetic series: the
//! growth alert, the per-container allocation rate, the agent's read errors), and every metric and
//! grouping label they use is one a real agent exports for a real Go process.

mod agent_common;

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agent_common::*;

const PROMTOOL: &str = "/usr/bin/promtool";

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("deploy/prometheus")
}

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} missing: run fixtures/install-toolchains.sh (Debian prometheus ships promtool)"
    );
    let out = Command::new(PROMTOOL)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn rules_pass_promtool_check() {
    let (ok, text) = promtool(&["check", "rules", "goheap-rules.yaml"], &rules_dir());
    assert!(ok, "promtool check rules:\n{text}");
    // The check can fail: the same file with one expression broken is rejected.
    let s = Scratch::new("rules-broken");
    let broken = std::fs::read_to_string(rules_dir().join("goheap-rules.yaml"))
        .unwrap()
        .replacen(
            "rate(container_go_alloc_bytes_total[5m])",
            "rate(container_go_alloc_bytes_total[5m]",
            1,
        );
    std::fs::write(s.path("broken.yaml"), broken).unwrap();
    let (ok, text) = promtool(&["check", "rules", "broken.yaml"], &s.0);
    assert!(!ok, "promtool accepted a broken expression:\n{text}");
}

#[test]
fn rule_unit_tests_pass_promtool_test() {
    let (ok, text) = promtool(&["test", "rules", "goheap-rules.test.yaml"], &rules_dir());
    assert!(ok, "promtool test rules:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

/// Metric names (`container_go_*`, `goheap_agent_*`; not recording-rule names, which hold `:`)
/// and the labels of `by (...)` clauses in the rule file.
fn used_names(rules: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut metrics = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for line in rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim_start().starts_with("- record:"))
    {
        for word in line.split(|c: char| !ident(c)) {
            if (word.starts_with("container_go_") || word.starts_with("goheap_agent_"))
                && !word.contains(':')
            {
                metrics.insert(word.to_string());
            }
        }
        let mut rest = line;
        while let Some(i) = rest.find("by (") {
            let after = &rest[i + 4..];
            let end = after.find(')').expect("closing parenthesis");
            for l in after[..end].split(',') {
                labels.insert(l.trim().to_string());
            }
            rest = &after[end..];
        }
    }
    (metrics, labels)
}

#[test]
fn rules_use_what_a_real_agent_exports() {
    let rules = std::fs::read_to_string(rules_dir().join("goheap-rules.yaml")).unwrap();
    let (metrics, labels) = used_names(&rules);
    assert!(
        metrics.contains("container_go_heap_inuse_bytes"),
        "{metrics:?}"
    );
    assert!(labels.contains("container"), "{labels:?}");
    let s = Scratch::new("rules-agent");
    let running = start_small_heapfixture(&s, "rules", 0.02);
    let root = s.path("proc");
    std::fs::create_dir_all(&root).unwrap();
    symlink(
        format!("/proc/{}", running.pid),
        root.join(running.pid.to_string()),
    )
    .unwrap();
    // An --output-dir on sysfs, where not even root can create a file: the agent counts a real
    // error (goheap_agent_errors_total{reason="output_not_writable"}), so that family is exported.
    let agent = Agent::start_with_interval(
        &s,
        "500ms",
        &[
            "--proc-root",
            root.to_str().unwrap(),
            "--node-name",
            "n1",
            "--output-dir",
            "/sys/kernel",
        ],
    );
    let text = wait_for(Duration::from_secs(60), "per-process series", || {
        let t = agent.metrics();
        metric_for_pid(&t, "container_go_alloc_bytes_total", running.pid)
            .is_some()
            .then_some(t)
    });
    let exported: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for m in &metrics {
        assert!(
            exported.contains(m.as_str()),
            "rules use {m}, not exported: {exported:?}"
        );
    }
    // Grouping labels: the per-process label set, or the agent's own (reason) and the scrape's.
    let series_line = text
        .lines()
        .find(|l| l.starts_with("container_go_heap_inuse_bytes{"))
        .expect("in-use series");
    for l in &labels {
        let own = series_line.contains(&format!("{l}=\""))
            || text.contains(&format!("goheap_agent_errors_total{{{l}=\""));
        assert!(
            own || l == "instance",
            "rules group by {l}, which no agent series carries: {series_line}"
        );
    }
}
