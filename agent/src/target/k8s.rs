//! Kubernetes names of a container (namespace, pod, container), read from the kubelet's own
//! on-node log layout — no API access, no socket, only a read-only directory listing:
//!
//! - `<dir>/containers/<pod>_<namespace>_<container>-<container id>.log` (symlinks the kubelet
//!   makes for every container; only their *names* are read, the links are never followed);
//! - `<dir>/pods/<namespace>_<pod>_<pod uid>/` (one directory per pod; names a pod by its uid when
//!   the container id is not listed, e.g. before the kubelet made the symlink).
//!
//! Everything here comes from the node's file system and is validated as Kubernetes names
//! (lower-case DNS labels/subdomains, length-bounded); anything else is ignored. The cache holds at
//! most [`MAX_ENTRIES`] containers and [`MAX_ENTRIES`] pods, [`MAX_NAME_BYTES`] bytes of names in
//! all, and is rebuilt on a miss at most once per agent cycle, and only when a directory's
//! modification time changed since the last listing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Containers (and, separately, pods) kept at most.
pub const MAX_ENTRIES: usize = 8192;
/// Directory entries looked at per listing, at most (the rest are ignored).
pub const MAX_DIR_ENTRIES: usize = 65_536;
/// Bytes of names kept at most (containers and pods together).
pub const MAX_NAME_BYTES: usize = 2 << 20;

/// The Kubernetes names of one process's container; empty strings when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeNames {
    pub namespace: Arc<str>,
    pub pod: Arc<str>,
    /// Empty when only the pod is known (found by its uid).
    pub container: Arc<str>,
}

impl KubeNames {
    pub fn is_empty(&self) -> bool {
        self.namespace.is_empty() && self.pod.is_empty() && self.container.is_empty()
    }
}

/// Resolves container ids and pod uids to names through the kubelet's log directories.
#[derive(Debug)]
pub struct KubeletNames {
    /// The log root (`/var/log` on a node); `None` disables the lookup.
    dir: Option<PathBuf>,
    by_container: HashMap<String, KubeNames>,
    by_pod: HashMap<String, KubeNames>,
    /// The cycle of the last listing (one per cycle at most).
    listed_in: Option<u64>,
    /// Modification times of `containers/` and `pods/` at the last listing.
    mtimes: Option<(Option<SystemTime>, Option<SystemTime>)>,
    /// Wall-clock time of the last listing.
    listed_at: Option<SystemTime>,
    /// Listings done (for tests and logs).
    pub listings: u64,
}

impl KubeletNames {
    pub fn new(dir: Option<PathBuf>) -> KubeletNames {
        KubeletNames {
            dir,
            by_container: HashMap::new(),
            by_pod: HashMap::new(),
            listed_in: None,
            mtimes: None,
            listed_at: None,
            listings: 0,
        }
    }

    /// Names of the container `container_id` (64 hex digits) of pod `pod_uid`: by the container
    /// id if listed, else the pod by its uid (container name empty), else empty. On a miss the
    /// directories are listed again, at most once per `cycle` and only if they changed.
    pub fn lookup(&mut self, container_id: &str, pod_uid: &str, cycle: u64) -> KubeNames {
        if container_id.is_empty() && pod_uid.is_empty() {
            return KubeNames::default();
        }
        if let Some(n) = self.find(container_id, pod_uid) {
            if !n.container.is_empty() || container_id.is_empty() {
                return n;
            }
        }
        if self.listed_in != Some(cycle) {
            self.listed_in = Some(cycle);
            self.relist();
        }
        self.find(container_id, pod_uid).unwrap_or_default()
    }

    fn find(&self, container_id: &str, pod_uid: &str) -> Option<KubeNames> {
        if !container_id.is_empty() {
            if let Some(n) = self.by_container.get(container_id) {
                return Some(n.clone());
            }
        }
        if !pod_uid.is_empty() {
            return self.by_pod.get(pod_uid).cloned();
        }
        None
    }

    fn relist(&mut self) {
        let Some(dir) = self.dir.clone() else { return };
        let (containers, pods) = (dir.join("containers"), dir.join("pods"));
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let now = (mtime(&containers), mtime(&pods));
        // File times are coarse (a clock tick): an entry made in the tick of the last listing
        // leaves the time unchanged, so a listing only counts as current 2 s after the change.
        let settled = |t: Option<SystemTime>| match t {
            None => true,
            Some(t) => self
                .listed_at
                .and_then(|l| l.duration_since(t).ok())
                .is_some_and(|d| d >= std::time::Duration::from_secs(2)),
        };
        if self.mtimes == Some(now) && settled(now.0) && settled(now.1) {
            return;
        }
        self.mtimes = Some(now);
        self.listed_at = Some(SystemTime::now());
        self.listings += 1;
        let mut budget = MAX_NAME_BYTES;
        self.by_container = list(&containers, &mut budget, parse_container_log);
        self.by_pod = list(&pods, &mut budget, parse_pod_dir);
        tracing::debug!(
            dir = %dir.display(),
            containers = self.by_container.len(),
            pods = self.by_pod.len(),
            "kubelet names listed"
        );
    }
}

/// Lists `dir` (bounded) and keeps the entries `parse` accepts, within the byte budget.
fn list(
    dir: &Path,
    budget: &mut usize,
    parse: fn(&str) -> Option<(String, KubeNames)>,
) -> HashMap<String, KubeNames> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.take(MAX_DIR_ENTRIES).flatten() {
        if out.len() >= MAX_ENTRIES {
            break;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((key, names)) = parse(name) else {
            continue;
        };
        let cost = key.len() + names.namespace.len() + names.pod.len() + names.container.len();
        if cost > *budget {
            break;
        }
        *budget -= cost;
        out.insert(key, names);
    }
    out
}

/// A DNS-1123 label: 1 to 63 of `[a-z0-9-]`, alphanumeric at both ends.
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain (pod names): 1 to 253 of `[a-z0-9.-]`, dot-separated labels.
fn is_dns_subdomain(s: &str) -> bool {
    (1..=253).contains(&s.len()) && s.split('.').all(is_dns_label)
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8usize, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `<pod>_<namespace>_<container>-<64 hex>.log` → (container id, names).
pub fn parse_container_log(name: &str) -> Option<(String, KubeNames)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if !is_container_id(id) {
        return None;
    }
    let mut parts = rest.split('_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !is_dns_subdomain(pod)
        || !is_dns_label(namespace)
        || !is_dns_label(container)
    {
        return None;
    }
    Some((
        id.to_ascii_lowercase(),
        KubeNames {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
        },
    ))
}

/// `<namespace>_<pod>_<pod uid>` → (pod uid, names without a container).
pub fn parse_pod_dir(name: &str) -> Option<(String, KubeNames)> {
    let mut parts = name.split('_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_dns_label(namespace) || !is_dns_subdomain(pod) || !is_uuid(uid)
    {
        return None;
    }
    Some((
        uid.to_ascii_lowercase(),
        KubeNames {
            namespace: namespace.into(),
            pod: pod.into(),
            container: "".into(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_and_validates_names() {
        let (id, n) =
            parse_container_log(&format!("web-7d9f8b6c5d-x2x4z_shop_server-{ID}.log")).unwrap();
        assert_eq!(id, ID);
        assert_eq!(
            (&*n.pod, &*n.namespace, &*n.container),
            ("web-7d9f8b6c5d-x2x4z", "shop", "server")
        );
        for bad in [
            format!("a_b_c-{ID}"),                      // no .log
            format!("a_b-{ID}.log"),                    // two parts
            format!("a_b_c_d-{ID}.log"),                // four parts
            format!("A_b_c-{ID}.log"),                  // upper case
            format!("a_b_c-{}.log", &ID[1..]),          // short id
            format!("a_b_-c-{ID}.log"),                 // bad label
            format!("a_{}_c-{ID}.log", "n".repeat(64)), // long namespace
            format!("a_b_c\n-{ID}.log"),
        ] {
            assert!(parse_container_log(&bad).is_none(), "{bad:?}");
        }
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let (u, n) = parse_pod_dir(&format!("shop_web-1_{uid}")).unwrap();
        assert_eq!((u.as_str(), &*n.namespace, &*n.pod), (uid, "shop", "web-1"));
        assert!(parse_pod_dir(&format!("shop_web-1_{uid}x")).is_none());
        assert!(parse_pod_dir("shop_web-1").is_none());
    }

    #[test]
    fn lists_once_per_cycle_and_only_on_change() {
        let dir = std::env::temp_dir().join(format!("goheap-k8s-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("containers")).unwrap();
        std::fs::create_dir_all(dir.join("pods")).unwrap();
        let mut k = KubeletNames::new(Some(dir.clone()));
        assert!(k.lookup(ID, "", 1).is_empty());
        assert_eq!(k.listings, 1);
        // Same cycle: no second listing even though the entry now exists.
        std::fs::write(dir.join(format!("p_ns_c-{ID}.log")), "").unwrap();
        std::fs::rename(
            dir.join(format!("p_ns_c-{ID}.log")),
            dir.join(format!("containers/p_ns_c-{ID}.log")),
        )
        .unwrap();
        assert!(k.lookup(ID, "", 1).is_empty());
        assert_eq!(k.listings, 1);
        let n = k.lookup(ID, "", 2);
        assert_eq!((&*n.pod, &*n.namespace, &*n.container), ("p", "ns", "c"));
        assert_eq!(k.listings, 2);
        // A miss in a later cycle with nothing changed on disk (for over 2 s) lists nothing.
        let old = std::fs::FileTimes::new()
            .set_modified(SystemTime::now() - std::time::Duration::from_secs(60));
        for sub in ["containers", "pods"] {
            std::fs::File::open(dir.join(sub))
                .unwrap()
                .set_times(old)
                .unwrap();
        }
        let other = ID.replace('0', "1");
        assert!(k.lookup(&other, "", 3).is_empty());
        assert_eq!(k.listings, 3);
        assert!(k.lookup(&other, "", 4).is_empty());
        assert_eq!(k.listings, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
