//! A real Kubernetes control plane for a test: `scripts/cluster.sh up` (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler built from upstream by `scripts/build-kubernetes.sh`)
//! in a state directory of the test's own and on ports of its own, torn down on drop
//! (`scripts/cluster.sh down`). [`Kubectl`] runs the built `kubectl` against it, as the cluster
//! admin or as a ServiceAccount (a TokenRequest token).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `scripts/cluster.sh` of this checkout.
pub const CLUSTER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster.sh");
/// The repository root.
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// kube-apiserver's port on 127.0.0.1 (not 6443, so a developer's own cluster can keep running).
pub const API_PORT: u16 = 16443;
/// etcd's client port (peer +1, metrics +2).
pub const ETCD_PORT: u16 = 12379;

/// A running control plane; `scripts/cluster.sh down` on drop (kept with `P2P_E2E_KEEP_CLUSTER`).
pub struct Cluster {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub admin: Kubectl,
}

impl Cluster {
    /// `scripts/cluster.sh up --clean --control-plane-only` into `dir` (the operator e2e runs the
    /// pods as processes: no node). Errors: the script's exit status and output.
    pub fn up(dir: &Path) -> Result<Cluster, String> {
        let started = Instant::now();
        let out = up_or_down(dir, &["up", "--clean", "--control-plane-only"])?;
        eprintln!(
            "[cluster] up in {:.1}s: {}",
            started.elapsed().as_secs_f64(),
            out.trim().lines().last().unwrap_or("")
        );
        Self::attach(dir)
    }

    /// `scripts/cluster.sh load-images` (our images from the Dockerfile, saved in the cache), then
    /// `up --clean` into `dir`: the control plane and the node (containerd, kubelet, kube-proxy,
    /// CoreDNS), which imports those images. One node per machine: tests that use it run one at a
    /// time (`--test-threads=1`). Errors: the script's exit status and output.
    pub fn up_with_node(dir: &Path) -> Result<Cluster, String> {
        let started = Instant::now();
        let out = script(dir, &["load-images"])?;
        eprintln!(
            "[cluster] load-images in {:.1}s: {}",
            started.elapsed().as_secs_f64(),
            out.trim().lines().filter(|l| l.contains("built in")).collect::<Vec<_>>().join("; ")
        );
        let started = Instant::now();
        up_or_down(dir, &["up", "--clean"])?;
        eprintln!("[cluster] up (with the node) in {:.1}s", started.elapsed().as_secs_f64());
        Self::attach(dir)
    }

    fn attach(dir: &Path) -> Result<Cluster, String> {
        let bin = PathBuf::from(
            Command::new("bash")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/build-kubernetes.sh"))
                .arg("--print-bin-dir")
                .output()
                .map_err(|e| format!("build-kubernetes.sh --print-bin-dir: {e}"))
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())?,
        );
        let admin = Kubectl { bin: bin.join("kubectl"), kubeconfig: dir.join("admin.kubeconfig") };
        Ok(Cluster { dir: dir.to_path_buf(), bin, admin })
    }

    /// The API server's audit log (one JSON event per line, metadata level).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("logs/audit.log")
    }

    /// Parsed audit events (the current file only; it rotates at 200 MB).
    pub fn audit_events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit_log())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// A kubeconfig for `user` with a bearer `token`, against this cluster; returns its kubectl.
    pub fn kubectl_with_token(&self, user: &str, token: &str) -> Result<Kubectl, String> {
        let path = self.dir.join(format!("{user}.kubeconfig"));
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: p2p-sensor\n    cluster:\n      server: https://127.0.0.1:{API_PORT}\n      certificate-authority: {ca}\nusers:\n  - name: {user}\n    user:\n      token: {token}\ncontexts:\n  - name: p2p-sensor\n    context: {{cluster: p2p-sensor, user: {user}}}\ncurrent-context: p2p-sensor\n",
            ca = self.dir.join("pki/ca.crt").display()
        );
        std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Kubectl { bin: self.admin.bin.clone(), kubeconfig: path })
    }

    /// Tails of the control plane's logs, for a failure report.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for name in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kubelet", "containerd"] {
            let log = self.dir.join(format!("logs/{name}.log"));
            if !log.exists() {
                continue;
            }
            out.push_str(&format!("----- {} -----\n{}\n", log.display(), super::process::tail_file(&log, 15)));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var_os("P2P_E2E_KEEP_CLUSTER").is_some() {
            eprintln!(
                "[cluster] P2P_E2E_KEEP_CLUSTER set: kept; KUBECONFIG={} (remove with P2P_CLUSTER_DIR={} scripts/cluster.sh down)",
                self.admin.kubeconfig.display(),
                self.dir.display()
            );
            return;
        }
        match script(&self.dir, &["down"]) {
            Ok(_) => eprintln!("[cluster] down"),
            Err(e) => eprintln!("[cluster] down failed: {e}"),
        }
    }
}

/// `scripts/cluster.sh up ...`; when it fails, `down`, so that no process of a half-started
/// cluster outlives the test (no [`Cluster`] exists to take it down on drop).
fn up_or_down(dir: &Path, args: &[&str]) -> Result<String, String> {
    script(dir, args).inspect_err(|_| {
        if let Err(e) = script(dir, &["down"]) {
            eprintln!("[cluster] down after a failed up failed too: {e}");
        }
    })
}

/// Runs `scripts/cluster.sh ARGS` for the cluster in `dir`; Ok(stdout + stderr) on exit 0.
fn script(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(CLUSTER_SCRIPT)
        .args(args)
        .env("P2P_CLUSTER_DIR", dir)
        .env("P2P_CLUSTER_API_PORT", API_PORT.to_string())
        .env("P2P_CLUSTER_ETCD_PORT", ETCD_PORT.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("scripts/cluster.sh {args:?}: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(format!("scripts/cluster.sh {args:?}: {}\n{text}", out.status)) }
}

/// The built `kubectl` with one kubeconfig. Every call is bounded by `--request-timeout`.
#[derive(Clone, Debug)]
pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    /// `kubectl ARGS`; Ok(stdout) on exit 0, Err(the command and stderr) otherwise.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        self.run_stdin(args, None)
    }

    /// `kubectl ARGS` with `stdin` piped in.
    pub fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut child = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=30s")
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("kubectl: {e}"))?;
        if let Some(text) = stdin {
            child.stdin.take().expect("piped").write_all(text.as_bytes()).map_err(|e| format!("kubectl stdin: {e}"))?;
        }
        let out = child.wait_with_output().map_err(|e| format!("kubectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("kubectl {}: {}\n{}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// `kubectl ARGS -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Result<Value, String> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.run(&all)?;
        serde_json::from_str(&text).map_err(|e| format!("kubectl {}: not JSON: {e}", args.join(" ")))
    }

    /// Server-side apply of `manifest` (YAML or JSON) with field manager `kubectl`.
    pub fn apply(&self, manifest: &str) -> Result<String, String> {
        self.run_stdin(&["apply", "--server-side", "--field-manager=kubectl", "-f", "-"], Some(manifest))
    }

    /// The object, or `None` when the API server answers NotFound.
    pub fn get(&self, args: &[&str]) -> Result<Option<Value>, String> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.push("--ignore-not-found");
        let mut with_output = all.clone();
        with_output.extend(["-o", "json"]);
        let text = self.run(&with_output)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text).map(Some).map_err(|e| format!("kubectl {}: not JSON: {e}", all.join(" ")))
    }
}

/// Polls `check` every 250 ms until it returns `Ok(Some(_))` or `timeout` passes; an `Err` from
/// `check` is kept as the last reason and polling goes on. Errors: "`what`: not after Ns: reason".
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let started = Instant::now();
    loop {
        let last = match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not met".to_owned(),
            Err(e) => e,
        };
        if started.elapsed() >= timeout {
            return Err(format!("{what}: not after {}s: {last}", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `scripts/build-kubernetes.sh`'s `helm`.
pub fn helm(bin: &Path, args: &[&str]) -> Result<String, String> {
    let out =
        Command::new(bin.join("helm")).args(args).stdin(Stdio::null()).output().map_err(|e| format!("helm: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("helm {}: {}\n{}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// What a pod of a workload's template would run, as local processes: each container's args
/// and environment with `$(VAR)` expanded, the downward API (`POD_NAME`, `POD_NAMESPACE`,
/// `HOST_IP`), and every volume mount path rewritten to a local directory that holds the mounted
/// ConfigMap or Secret keys as files, as the kubelet would (no node runs pods in this cluster).
pub struct PodEmulation {
    pub name: String,
    pub root: PathBuf,
    /// (mount path in the container, local directory).
    pub mounts: Vec<(String, PathBuf)>,
    pub containers: Vec<EmulatedContainer>,
}

/// One container of a [`PodEmulation`].
#[derive(Clone, Debug)]
pub struct EmulatedContainer {
    pub name: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl PodEmulation {
    /// Reads `template` (a pod template spec: `{metadata, spec}`) for pod `pod` in `namespace`;
    /// every volume becomes `root/<volume>`, filled from its ConfigMap or Secret through `kubectl`.
    /// Errors: a volume kind other than configMap, secret, projected, emptyDir, hostPath or PVC;
    /// an unreadable ConfigMap or Secret.
    pub fn new(kubectl: &Kubectl, namespace: &str, pod: &str, template: &Value, root: &Path) -> Result<Self, String> {
        let spec = &template["spec"];
        let mut emulation =
            PodEmulation { name: pod.to_owned(), root: root.to_path_buf(), mounts: Vec::new(), containers: Vec::new() };
        let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        for c in spec["containers"].as_array().ok_or("pod template without containers")? {
            for m in c["volumeMounts"].as_array().cloned().unwrap_or_default() {
                let (volume, path) = (m["name"].as_str().unwrap_or(""), m["mountPath"].as_str().unwrap_or(""));
                if !emulation.mounts.iter().any(|(p, _)| p == path) {
                    emulation.mounts.push((path.to_owned(), root.join(volume)));
                }
            }
        }
        for v in &volumes {
            let name = v["name"].as_str().ok_or("volume without a name")?;
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            if !(v.get("emptyDir").is_some()
                || v.get("hostPath").is_some()
                || v.get("persistentVolumeClaim").is_some()
                || v.get("configMap").is_some()
                || v.get("secret").is_some()
                || v.get("projected").is_some())
            {
                return Err(format!("volume {name}: kind not emulated: {v}"));
            }
        }
        emulation.refresh_volumes(kubectl, namespace, &volumes)?;
        let host_ip = "127.0.0.1";
        for c in spec["containers"].as_array().ok_or("pod template without containers")? {
            let mut env: Vec<(String, String)> = Vec::new();
            for e in c["env"].as_array().cloned().unwrap_or_default() {
                let name = e["name"].as_str().unwrap_or_default().to_owned();
                let value = if let Some(v) = e["value"].as_str() {
                    expand(v, &env)
                } else {
                    match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                        Some("metadata.name") => pod.to_owned(),
                        Some("metadata.namespace") => namespace.to_owned(),
                        Some("status.hostIP") | Some("status.podIP") => host_ip.to_owned(),
                        other => return Err(format!("env {name}: source not emulated: {other:?}")),
                    }
                };
                env.push((name, emulation.local_path(&value)));
            }
            let args = c["args"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|a| emulation.local_path(&expand(a.as_str().unwrap_or_default(), &env)))
                .collect();
            emulation.containers.push(EmulatedContainer {
                name: c["name"].as_str().unwrap_or_default().to_owned(),
                args,
                env,
            });
        }
        Ok(emulation)
    }

    /// Writes every ConfigMap, Secret and projected volume's keys as files again (the kubelet
    /// refreshes mounted ConfigMaps in running pods the same way).
    pub fn refresh_volumes(&self, kubectl: &Kubectl, namespace: &str, volumes: &[Value]) -> Result<(), String> {
        for v in volumes {
            let dir = self.root.join(v["name"].as_str().unwrap_or_default());
            let mut sources = Vec::new();
            if v.get("configMap").is_some() {
                sources.push(("configmap", v["configMap"].clone()));
            }
            if v.get("secret").is_some() {
                sources.push(("secret", v["secret"].clone()));
            }
            for s in v["projected"]["sources"].as_array().cloned().unwrap_or_default() {
                if s.get("configMap").is_some() {
                    sources.push(("configmap", s["configMap"].clone()));
                }
                if s.get("secret").is_some() {
                    sources.push(("secret", s["secret"].clone()));
                }
            }
            for (kind, source) in sources {
                let name = source["name"].as_str().or(source["secretName"].as_str()).unwrap_or_default();
                let object = kubectl.json(&["-n", namespace, "get", kind, name])?;
                let data = object["data"].as_object().cloned().unwrap_or_default();
                let items: Vec<(String, String)> = match source["items"].as_array() {
                    Some(items) => items
                        .iter()
                        .map(|i| {
                            (
                                i["key"].as_str().unwrap_or_default().to_owned(),
                                i["path"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect(),
                    None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
                };
                for (key, path) in items {
                    let value =
                        data.get(&key).and_then(Value::as_str).ok_or_else(|| format!("{kind} {name}: no key {key}"))?;
                    let bytes = if kind == "secret" {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD
                            .decode(value)
                            .map_err(|e| format!("{kind} {name}/{key}: {e}"))?
                    } else {
                        // A config file names paths as the container sees them: point the
                        // quoted mount paths inside it at the local directories.
                        let mut text = value.to_owned();
                        for (mount, local) in &self.mounts {
                            text = text.replace(&format!("\"{mount}/"), &format!("\"{}/", local.display()));
                            text = text.replace(&format!("\"{mount}\""), &format!("\"{}\"", local.display()));
                        }
                        text.into_bytes()
                    };
                    let file = dir.join(&path);
                    std::fs::write(&file, bytes).map_err(|e| format!("{}: {e}", file.display()))?;
                }
            }
        }
        Ok(())
    }

    /// `value` with a container mount path prefix replaced by its local directory.
    pub fn local_path(&self, value: &str) -> String {
        for (mount, local) in &self.mounts {
            if value == mount {
                return local.display().to_string();
            }
            if let Some(rest) = value.strip_prefix(&format!("{mount}/")) {
                return local.join(rest).display().to_string();
            }
            // `KEY=/mount/...` inside one value (e.g. a listen list) is left as it is.
        }
        value.to_owned()
    }

    /// The container named `name`.
    pub fn container(&self, name: &str) -> Result<&EmulatedContainer, String> {
        self.containers.iter().find(|c| c.name == name).ok_or_else(|| format!("pod {}: no container {name}", self.name))
    }
}

/// `$(VAR)` references to earlier variables expanded, as the kubelet does.
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = value.to_owned();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}
