//! Container and pod identity of a process, parsed from `/proc/PID/cgroup` (cgroup v1 and v2).
//!
//! Recognised path shapes (the container id is 64 hex digits, the pod uid a UUID):
//! - containerd (systemd driver): `…/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`
//! - CRI-O: `…/crio-<id>.scope`
//! - Docker: `/system.slice/docker-<id>.scope`, `/docker/<id>`
//! - cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>`
//!
//! Host processes get empty strings.

use std::path::Path;

/// What `/proc/PID/cgroup` says about a process's container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// 64-hex container id, or empty for host processes.
    pub container_id: String,
    /// Kubernetes pod UID (with dashes), or empty.
    pub pod_uid: String,
}

/// Reads and parses `/proc/PID/cgroup` (at most 64 KiB); empty info if unreadable.
pub fn read(proc_root: &Path, pid: i32) -> ContainerInfo {
    use std::io::Read;
    let mut text = String::new();
    let path = proc_root.join(pid.to_string()).join("cgroup");
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(64 * 1024).read_to_string(&mut text);
    }
    parse(&text)
}

/// Parses the text of `/proc/PID/cgroup`. The cgroup v2 line (`0::path`) wins; for v1 the first line
/// whose path names a container (or pod) is used.
pub fn parse(text: &str) -> ContainerInfo {
    let mut paths: Vec<(bool, &str)> = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(_controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        paths.push((id == "0", path));
    }
    // v2 first, then v1 lines in order.
    paths.sort_by_key(|(v2, _)| !*v2);
    let mut best = ContainerInfo::default();
    for (_, path) in paths {
        let info = parse_path(path);
        if !info.container_id.is_empty() {
            return info;
        }
        if best.pod_uid.is_empty() && !info.pod_uid.is_empty() {
            best = info;
        }
    }
    best
}

/// Parses one cgroup path.
pub fn parse_path(path: &str) -> ContainerInfo {
    let mut info = ContainerInfo::default();
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(id) = container_id_of(comp) {
            info.container_id = id.to_string();
        } else if let Some(uid) = pod_uid_of(comp) {
            info.pod_uid = uid;
        }
    }
    info
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container id in one path component, if it is one.
fn container_id_of(comp: &str) -> Option<&str> {
    let base = comp.strip_suffix(".scope").unwrap_or(comp);
    if is_container_id(base) {
        return Some(base);
    }
    // `crio-conmon-<id>` is the monitor, not the container; it never matches because the prefix
    // leaves "conmon-<id>", which is not 64 hex digits.
    for prefix in [
        "cri-containerd-",
        "crio-",
        "docker-",
        "libpod-",
        "containerd-",
    ] {
        if let Some(id) = base.strip_prefix(prefix) {
            if is_container_id(id) {
                return Some(id);
            }
        }
    }
    None
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8usize, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The pod UID in one path component (`pod<uid>` or systemd `kubepods-…-pod<uid_with_underscores>.slice`).
fn pod_uid_of(comp: &str) -> Option<String> {
    let base = comp.strip_suffix(".slice").unwrap_or(comp);
    let idx = if base.starts_with("pod") {
        0
    } else {
        base.find("-pod")? + 1
    };
    let uid = base.get(idx + 3..)?.replace('_', "-");
    is_uuid(&uid).then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f9a1d3c2b7e8f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";

    #[test]
    fn containerd_systemd_v2() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d9f3b8e_1c2a_4b5d_9e8f_0a1b2c3d4e5f.slice/cri-containerd-{ID}.scope\n"
        );
        let i = parse(&text);
        assert_eq!(i.container_id, ID);
        assert_eq!(i.pod_uid, "6d9f3b8e-1c2a-4b5d-9e8f-0a1b2c3d4e5f");
    }

    #[test]
    fn crio_and_besteffort() {
        let text = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/crio-{ID}.scope"
        );
        let i = parse(&text);
        assert_eq!(i.container_id, ID);
        assert_eq!(i.pod_uid, "0a1b2c3d-4e5f-6789-abcd-ef0123456789");
        // The conmon scope is not the container.
        let conmon = format!("0::/kubepods.slice/crio-conmon-{ID}.scope");
        assert_eq!(parse(&conmon).container_id, "");
    }

    #[test]
    fn docker_both_drivers() {
        assert_eq!(
            parse(&format!("0::/system.slice/docker-{ID}.scope\n")).container_id,
            ID
        );
        let v1 =
            format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n");
        let i = parse(&v1);
        assert_eq!(i.container_id, ID);
        assert_eq!(i.pod_uid, "");
    }

    #[test]
    fn cgroupfs_v1_kubepods() {
        let text = format!(
            "12:hugetlb:/kubepods/burstable/pod3f2e1d0c-b9a8-4765-8432-10fedcba9876/{ID}\n\
             11:cpu,cpuacct:/kubepods/burstable/pod3f2e1d0c-b9a8-4765-8432-10fedcba9876/{ID}\n\
             0::/\n"
        );
        let i = parse(&text);
        assert_eq!(i.container_id, ID);
        assert_eq!(i.pod_uid, "3f2e1d0c-b9a8-4765-8432-10fedcba9876");
    }

    #[test]
    fn host_processes_are_empty() {
        for text in [
            "0::/init.scope\n",
            "0::/user.slice/user-0.slice/session-3.scope\n",
            "0::/system.slice/containerd.service\n",
            "12:memory:/\n0::/\n",
            "",
            "garbage without colons\n",
            "0::/kubepods.slice/kubepods-podnot-a-uid.slice\n",
        ] {
            assert_eq!(parse(text), ContainerInfo::default(), "{text:?}");
        }
    }

    /// This process's own cgroup: `read` must agree with an independent reading of the same file.
    /// A container id is a 64-hex-digit token somewhere in it; with none (a host process, or a
    /// container whose cgroup namespace hides the path) both ids must be empty.
    #[test]
    fn own_cgroup() {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let ids: Vec<&str> = text
            .split(|c: char| !c.is_ascii_hexdigit())
            .filter(|t| t.len() == 64)
            .collect();
        let own = read(Path::new("/proc"), std::process::id() as i32);
        if ids.is_empty() {
            assert_eq!(own.container_id, "", "{text}");
        } else {
            assert!(ids.contains(&own.container_id.as_str()), "{own:?}: {text}");
        }
        if !text.contains("pod") {
            assert_eq!(own.pod_uid, "", "{text}");
        }
    }

    /// `read` on a fabricated proc root: the file of the given pid is what is parsed, a missing file
    /// gives empty ids, and nothing past the first 64 KiB is read.
    #[test]
    fn reads_the_pid_file_under_the_proc_root() {
        let root = std::env::temp_dir().join(format!("goheap-cgroup-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let write = |pid: i32, text: &str| {
            let dir = root.join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup"), text).unwrap();
        };
        let uid = "6d9f3b8e-1c2a-4b5d-9e8f-0a1b2c3d4e5f";
        write(
            41,
            &format!(
                "0::/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID}.scope\n",
                uid.replace('-', "_")
            ),
        );
        write(
            42,
            &format!("12:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n"),
        );
        write(43, "0::/init.scope\n");
        let filler = "1:name=filler:/\n".repeat(64 * 1024 / 16 + 1);
        write(44, &format!("{filler}0::/system.slice/docker-{ID}.scope\n"));

        assert_eq!(
            read(&root, 41),
            ContainerInfo {
                container_id: ID.into(),
                pod_uid: uid.into()
            }
        );
        assert_eq!(
            read(&root, 42),
            ContainerInfo {
                container_id: ID.into(),
                pod_uid: String::new()
            }
        );
        assert_eq!(read(&root, 43), ContainerInfo::default());
        assert_eq!(
            read(&root, 44),
            ContainerInfo::default(),
            "read past 64 KiB"
        );
        assert_eq!(read(&root, 45), ContainerInfo::default(), "no such pid");
        let _ = std::fs::remove_dir_all(&root);
    }
}
