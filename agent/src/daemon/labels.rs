//! The one label set of a process, shared by every output of the agent: the per-process series of
//! `/metrics`, the `labels` object of each `/processes` entry, and the target groups of `/targets`.
//!
//! `service_name` (what profile stores group by) is `<namespace>/<container>` when the kubelet's
//! names are known (as Grafana's Kubernetes profiling configurations name services), else the
//! executable's file name. Every value is empty when unknown (host processes have no container id,
//! pod uid or Kubernetes names; `node` is empty without `--node-name`).

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::target::cgroup::ContainerInfo;
use crate::target::k8s::KubeNames;

/// Label names, in the order of [`ProcessLabels::values`].
pub const NAMES: [&str; 10] = [
    "pid",
    "binary",
    "go_version",
    "container_id",
    "pod_uid",
    "namespace",
    "pod",
    "container",
    "service_name",
    "node",
];

/// Labels of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessLabels {
    pub pid: String,
    /// File name of the executable (`/proc/PID/exe` without its directory).
    pub binary: String,
    /// As the binary's build info says, e.g. `go1.23.9`.
    pub go_version: String,
    /// 64 hex digits, from `/proc/PID/cgroup`.
    pub container_id: String,
    pub pod_uid: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub service_name: String,
    pub node: String,
}

impl ProcessLabels {
    pub fn new(
        pid: i32,
        binary: &str,
        go_version: &str,
        container: &ContainerInfo,
        names: &KubeNames,
        node: &str,
    ) -> ProcessLabels {
        let service_name = if names.container.is_empty() {
            binary.to_string()
        } else {
            format!("{}/{}", names.namespace, names.container)
        };
        ProcessLabels {
            pid: pid.to_string(),
            binary: binary.to_string(),
            go_version: go_version.to_string(),
            container_id: container.container_id.clone(),
            pod_uid: container.pod_uid.clone(),
            namespace: names.namespace.to_string(),
            pod: names.pod.to_string(),
            container: names.container.to_string(),
            service_name,
            node: node.to_string(),
        }
    }

    /// Values in the order of [`NAMES`].
    pub fn values(&self) -> [&str; 10] {
        [
            &self.pid,
            &self.binary,
            &self.go_version,
            &self.container_id,
            &self.pod_uid,
            &self.namespace,
            &self.pod,
            &self.container,
            &self.service_name,
            &self.node,
        ]
    }

    /// (name, value) pairs in the order of [`NAMES`].
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        NAMES.into_iter().zip(self.values())
    }
}

impl Serialize for ProcessLabels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(NAMES.len()))?;
        for (k, v) in self.pairs() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_name_rule() {
        let c = ContainerInfo::default();
        let host = ProcessLabels::new(7, "api", "go1.23.9", &c, &KubeNames::default(), "n1");
        assert_eq!(host.service_name, "api");
        let pod_only = KubeNames {
            namespace: "shop".into(),
            pod: "web-1".into(),
            container: "".into(),
        };
        assert_eq!(
            ProcessLabels::new(7, "api", "", &c, &pod_only, "").service_name,
            "api"
        );
        let full = KubeNames {
            container: "server".into(),
            ..pod_only
        };
        let l = ProcessLabels::new(7, "api", "", &c, &full, "");
        assert_eq!(l.service_name, "shop/server");
        assert_eq!(l.pairs().count(), NAMES.len());
        assert_eq!(
            serde_json::to_value(&l).unwrap()["container"],
            serde_json::json!("server")
        );
    }
}
