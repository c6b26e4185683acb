#!/usr/bin/env bash
# The node of scripts/cluster.sh (sourced by it; uses its state, pki, logs, run, BIN, timeout_s,
# log, die, start, stop, pid_of, cert, kubeconfig, kubectl_admin, wait_for): Debian's containerd
# 1.6 as a plain process with everything of its own under $state/containerd, a pause image built
# on this machine (no registry is reachable), a bridge + host-local CNI network, kubelet and kube-proxy (iptables).
#
# One node per machine: kubelet's ports (10250, 10248), kube-proxy's iptables rules, the bridge
# and the pod network 10.244.0.0/24 are the machine's, so `up` refuses to start a second one.
# What a node changes outside $state, and `down` undoes:
#   - the bridge $node_bridge, iptables/ip6tables chains KUBE-* and CNI-* and the rules jumping to
#     them, the network namespaces /run/netns/cni-* of our pods, cgroups kubepods/ in every
#     hierarchy, /var/log/containers/* links into $state, /var/lib/cni/results/{$node_net,cni-loopback}-*
#     (libcni's cache), /etc/cni/net.d/cni.lock, stale shim sockets in /run/containerd/s
#     (containerd 1.6 keeps these three there whatever its configuration says), kubelet's
#     /var/lib/kubelet/device-plugins/kubelet.sock (a fixed path in 1.34), an empty /run/mount;
#   - sysctls kubelet, kube-proxy and the bridge plugin set (saved before, restored after).
# `/` keeps its private mount propagation: kubelet's root directory is a shared bind mount of its
# own instead ($state/kubelet), which is what volumes with mountPropagation need.

# shellcheck disable=SC2154 # state, here, pki, logs, run, BIN, cluster_cidr: set by cluster.sh
# shellcheck disable=SC2034 # node_components: used by cluster.sh

node_components=(containerd kubelet kube-proxy)
node_bridge="p2pbr0"
node_net="p2p-sensor-node"
node_pod_cidr="10.244.0.0/24"
node_cni_bin="/usr/lib/cni"
node_sysctls=(vm/overcommit_memory kernel/panic kernel/panic_on_oops net/ipv4/ip_forward
    net/ipv4/conf/all/route_localnet net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables)
ctd="$state/containerd"
ctd_sock="$ctd/containerd.sock"
node_name="${P2P_CLUSTER_NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}"

node_exe() {
    case "$1" in
        containerd) command -v containerd ;;
        *) echo "$BIN/$1" ;;
    esac
}

ctr_k8s() { timeout 120 ctr --address "$ctd_sock" --namespace k8s.io "$@"; }

node_prereqs() {
    local tool
    for tool in containerd containerd-shim-runc-v2 ctr runc buildah gcc iptables-save iptables-restore \
        ip6tables-save ip6tables-restore ip mount umount timeout sha256sum go; do
        command -v "$tool" >/dev/null 2>&1 ||
            die 3 "$tool not found on PATH (Debian: containerd runc buildah gcc libc6-dev iptables iproute2; scripts/install-prereqs.sh installs them; or: up --control-plane-only)"
    done
    [[ -x "$node_cni_bin/bridge" && -x "$node_cni_bin/host-local" && -x "$node_cni_bin/loopback" ]] ||
        die 3 "CNI plugins missing in $node_cni_bin (Debian: containernetworking-plugins)"
    [[ -e /dev/kmsg ]] || die 3 "/dev/kmsg missing: kubelet does not start without it"
    [[ -x "$BIN/kubelet" && -x "$BIN/kube-proxy" ]] || die 3 "kubelet/kube-proxy not in $BIN (scripts/build-kubernetes.sh)"
}

# A kubelet of another state directory owns this machine's node ports, bridge and pod network.
node_guard() {
    local pid cmd
    for pid in $(pgrep -x kubelet 2>/dev/null || true); do
        cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
        [[ -z "$cmd" || "$cmd" == *" --root-dir $state/kubelet "* ]] && continue
        die 1 "another kubelet runs on this machine (pid $pid: ${cmd:0:160}); one node per machine: take that cluster down, or: up --control-plane-only"
    done
}

node_ip() {
    if [[ -n "${P2P_CLUSTER_NODE_IP:-}" ]]; then
        echo "$P2P_CLUSTER_NODE_IP"
        return
    fi
    local ip
    ip=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n 1)
    echo "${ip:-127.0.0.1}"
}

# --- the pause (sandbox) image ------------------------------------------------------------------
# build/pause/linux/pause.c of the k8s.io/kubernetes module in Go's module cache, `gcc -static`,
# then an image FROM scratch (as upstream's build/pause/Dockerfile: /pause, user 65535), saved as a
# docker archive (an oci-archive imports nothing into containerd 1.6) and cached by version.
pause_prepare() {
    local kver src tag
    kver=$(bash "$here/build-kubernetes.sh" --print-kubernetes-version)
    src=$(cd "$here/kube/kubernetes" && timeout 600 go mod download -json "k8s.io/kubernetes" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p') ||
        die 1 "go mod download k8s.io/kubernetes failed (the pause source is in that module)"
    pause_src="$src/build/pause"
    [[ -f "$pause_src/linux/pause.c" && -f "$pause_src/Makefile" ]] || die 1 "no build/pause/linux/pause.c in '$src'"
    tag=$(sed -n 's/^TAG ?= *\([0-9][0-9.]*\)$/\1/p' "$pause_src/Makefile")
    [[ -n "$tag" ]] || die 1 "no 'TAG ?=' in $pause_src/Makefile"
    pause_image="localhost/p2p-sensor/pause:$tag"
    pause_archive="${XDG_CACHE_HOME:-$HOME/.cache}/p2p-sensor-operator/pause/pause-$tag-k8s-$kver.tar"
}

pause_build() {
    [[ -s "$pause_archive" ]] && return 0
    local work started=$SECONDS
    work=$(mktemp -d /tmp/p2p-pause.XXXXXX)
    log "pause image: building $pause_image from $pause_src/linux/pause.c"
    if ! gcc -Os -Wall -Werror -static -DVERSION="v${pause_image##*:}-p2p-sensor" -o "$work/pause" "$pause_src/linux/pause.c"; then
        rm -rf "$work"
        die 1 "gcc -static $pause_src/linux/pause.c failed (Debian: gcc, libc6-dev)"
    fi
    scratch_image "$pause_image" "$pause_archive" 65535:65535 '["/pause"]' "$work/pause=/pause"
    rm -rf "$work"
    log "pause image: built in $((SECONDS - started)) s ($pause_archive)"
}

# scratch_image IMAGE ARCHIVE USER ENTRYPOINT SRC=DEST...: an image FROM scratch holding each file
# SRC at DEST (mode 0755), PATH=/bin, the given USER (uid:gid) and ENTRYPOINT (JSON array), saved
# as the docker archive ARCHIVE (an oci-archive imports nothing into containerd 1.6). buildah keeps
# its storage in a temporary directory (vfs: no overlay mount), not /var/lib/containers.
scratch_image() {
    local image=$1 archive=$2 user=$3 entrypoint=$4 work ctr_id pair ok=1 had_containers=0
    shift 4
    [[ -e /var/lib/containers ]] && had_containers=1
    work=$(mktemp -d /tmp/p2p-image.XXXXXX)
    local bh=(timeout 300 buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
    if ctr_id=$("${bh[@]}" from scratch); then
        for pair in "$@"; do
            "${bh[@]}" copy --chmod 0755 "$ctr_id" "${pair%%=*}" "${pair#*=}" >/dev/null || ok=0
        done
        ((ok == 1)) &&
            "${bh[@]}" config --entrypoint "$entrypoint" --user "$user" --env PATH=/bin "$ctr_id" &&
            "${bh[@]}" commit --quiet "$ctr_id" "$image" >/dev/null &&
            mkdir -p "$(dirname "$archive")" &&
            "${bh[@]}" push --quiet "$image" "docker-archive:$archive.partial:$image" &&
            mv "$archive.partial" "$archive"
    fi
    "${bh[@]}" rm --all >/dev/null 2>&1 || true
    # vfs layers may hold read-only directories; the storage is ours alone.
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work" "$archive.partial"
    # buildah push keeps a blob-info cache in /var/lib/containers/cache whatever --root says.
    ((had_containers == 1)) || rm -rf /var/lib/containers
    [[ -s "$archive" ]] || die 1 "building the image $image failed (buildah: see above)"
}

# image_import IMAGE ARCHIVE: ARCHIVE into the node's containerd unless IMAGE is there already.
# Up to three tries: once, right after the kubelet started, an import returned 0 and the image
# was not listed; ctr's output is shown when the last try fails.
image_import() {
    local image=$1 archive=$2 try out=""
    ctr_k8s images ls -q 2>/dev/null | grep -qxF "$image" && return 0
    for try in 1 2 3; do
        out=$(ctr_k8s images import "$archive" 2>&1) || log "ctr images import $archive (try $try): $out"
        if ctr_k8s images ls -q 2>/dev/null | grep -qxF "$image"; then
            log "image $image imported into containerd$( ((try == 1)) || echo " (try $try)")"
            return 0
        fi
        sleep 2
    done
    die 1 "$image not in containerd after 3 imports of $archive; ctr said: ${out:-nothing}"
}

pause_import() { image_import "$pause_image" "$pause_archive"; }

# --- configuration ------------------------------------------------------------------------------
# write_if_changed FILE < content: a second `up` must not touch unchanged files (kube-proxy exits
# with "content of the proxy server's configuration file was updated" when its file is rewritten).
write_if_changed() {
    local file=$1
    cat >"$file.new"
    if cmp -s "$file.new" "$file"; then
        rm -f "$file.new"
    else
        mv "$file.new" "$file"
    fi
}

node_generate() {
    local ip=$1 oom_adj=-999 restrict_oom=false runc_bin
    runc_bin=$(command -v runc)
    mkdir -p "$ctd/root" "$ctd/state" "$ctd/runc" "$ctd/opt" "$state/cni/net.d" "$state/cni/ipam" \
        "$state/kubelet" "$state/pod-logs"
    # Without CAP_SYS_RESOURCE (this sandbox) no process may lower its oom_score_adj: runc fails
    # every pod sandbox (-998) with "failed to update /proc/self/oom_score_adj: Permission denied",
    # and containerd 1.6's restrict_oom_score_adj covers containers, not sandboxes. So runc is
    # called through a wrapper that raises negative values to 0 in the bundle's config.json.
    if ! (echo -1 >/proc/self/oom_score_adj) 2>/dev/null; then
        oom_adj=0
        restrict_oom=true
        runc_bin="$ctd/runc-oom-wrapper"
        write_if_changed "$runc_bin" <<EOF
#!/bin/sh
# Written by scripts/cluster.sh: no CAP_SYS_RESOURCE here, so no negative oom_score_adj.
prev=
for arg in "\$@"; do
    if [ "\$prev" = --bundle ] && [ -f "\$arg/config.json" ]; then
        sed -i 's/"oomScoreAdj":-[0-9]*/"oomScoreAdj":0/' "\$arg/config.json"
    fi
    prev=\$arg
done
exec $(command -v runc) "\$@"
EOF
        chmod 755 "$runc_bin"
        log "node: oom_score_adj cannot be lowered here (no CAP_SYS_RESOURCE): runc through $runc_bin"
    fi
    cert kubelet "system:node:$node_name" system:nodes
    cert kubelet-serving "$node_name" "" "DNS:$node_name,DNS:localhost,IP:$ip,IP:127.0.0.1"
    cert kube-proxy system:kube-proxy ""
    kubeconfig kubelet kubelet
    kubeconfig kube-proxy kube-proxy

    # containerd 1.6: root/state/socket/runc root here, so two state directories never share them.
    write_if_changed "$ctd/config.toml" <<EOF
version = 2
root = "$ctd/root"
state = "$ctd/state"
[grpc]
  address = "$ctd_sock"
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$ctd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$pause_image"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    restrict_oom_score_adj = $restrict_oom
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "$ctd/runc"
          BinaryName = "$runc_bin"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$node_cni_bin"
      conf_dir = "$state/cni/net.d"
EOF

    write_if_changed "$state/cni/net.d/10-$node_net.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$node_net",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$node_bridge",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$state/cni/ipam",
        "ranges": [[{"subnet": "$node_pod_cidr"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

    # Cgroups not writable (some sandboxes): no QoS hierarchy, so no node allocatable to enforce.
    local qos="cgroupsPerQOS: true"
    if ! mkdir "/sys/fs/cgroup/cpu/p2p-sensor-probe.$$" 2>/dev/null; then
        qos=$'cgroupsPerQOS: false\nenforceNodeAllocatable: []'
        log "kubelet: cgroups not writable here: cgroupsPerQOS false"
    else
        rmdir "/sys/fs/cgroup/cpu/p2p-sensor-probe.$$"
    fi
    write_if_changed "$state/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$ctd_sock
cgroupDriver: cgroupfs
$qos
failSwapOn: false
oomScoreAdj: $oom_adj
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
clusterDomain: cluster.local
clusterDNS: [$dns_service_ip]
podLogsDir: $state/pod-logs
rotateCertificates: false
serverTLSBootstrap: false
serializeImagePulls: false
# Images are imported, never pulled: never collect them, never evict for disk pressure (as kind).
imageGCHighThresholdPercent: 100
evictionHard:
  memory.available: "0%"
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
EOF

    # conntrack limits and timeouts 0: kube-proxy leaves the machine's sysctls alone;
    # localhostNodePorts false: no route_localnet.
    write_if_changed "$state/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/kube-proxy.kubeconfig}
mode: iptables
oomScoreAdj: $oom_adj
nodePortAddresses: [primary]
clusterCIDR: $cluster_cidr
hostnameOverride: $node_name
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
EOF
}

# Values of the sysctls the node changes, saved once (the first `up`), restored by `down`.
sysctls_save() {
    [[ -f "$state/sysctl.orig" ]] && return 0
    local key
    for key in "${node_sysctls[@]}"; do
        [[ -r "/proc/sys/$key" ]] && printf '%s %s\n' "$key" "$(cat "/proc/sys/$key")"
    done >"$state/sysctl.orig.partial"
    mv "$state/sysctl.orig.partial" "$state/sysctl.orig"
}

sysctls_restore() {
    [[ -f "$state/sysctl.orig" ]] || return 0
    local key value
    while read -r key value; do
        [[ "$(cat "/proc/sys/$key" 2>/dev/null)" == "$value" ]] || echo "$value" >"/proc/sys/$key" 2>/dev/null ||
            log "WARNING: could not restore sysctl $key=$value"
    done <"$state/sysctl.orig"
}

# --- up -----------------------------------------------------------------------------------------
containerd_ready() { timeout 5 ctr --address "$ctd_sock" version >/dev/null 2>&1; }

kube_proxy_ready() {
    pid_of kube-proxy >/dev/null || die 1 "kube-proxy exited; see $logs/kube-proxy.log"
    curl -fsS --max-time 2 http://127.0.0.1:10256/healthz >/dev/null 2>&1
}

node_ready() {
    curl -fsS --max-time 2 http://127.0.0.1:10248/healthz >/dev/null 2>&1 || return 1
    [[ "$(kubectl_admin get node "$node_name" \
        -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == "True" ]]
}

node_up() {
    local ip
    node_prereqs
    node_guard
    ip=$(node_ip)
    pause_prepare
    pause_build
    node_generate "$ip"
    sysctls_save
    # Pod traffic crosses the bridge: kube-proxy's Service rules must see it.
    echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null ||
        log "WARNING: br_netfilter not available: Service traffic between pods on one bridge is not NATed"
    # kubelet's root directory: a shared mount of its own (volume mount propagation), not `/`.
    if ! findmnt -n -o TARGET --target "$state/kubelet" | grep -qxF "$state/kubelet"; then
        mount --bind "$state/kubelet" "$state/kubelet" || die 1 "mount --bind $state/kubelet failed"
    fi
    mount --make-rshared "$state/kubelet" || die 1 "mount --make-rshared $state/kubelet failed"

    START_EXE=$(node_exe containerd) start containerd --config "$ctd/config.toml" --log-level warn
    wait_for containerd containerd_ready
    pause_import

    start kubelet --config "$state/kubelet-config.yaml" --kubeconfig "$state/kubelet.kubeconfig" \
        --root-dir "$state/kubelet" --cert-dir "$state/kubelet/pki" \
        --hostname-override "$node_name" --node-ip "$ip" --v=1
    start kube-proxy --config "$state/kube-proxy-config.yaml" --v=1
    wait_for "node $node_name Ready" node_ready
    wait_for kube-proxy kube_proxy_ready
    log "node $node_name ($ip): Ready; pods get addresses from $node_pod_cidr on $node_bridge; sandbox image $pause_image"
}

# --- down ---------------------------------------------------------------------------------------
# Mount points at or below $1, deepest first.
mounts_under() {
    awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r -u
}

node_down() {
    local i id netns=() m ns sock name t
    [[ -d "$state" ]] || return 0
    stop kube-proxy
    stop kubelet
    # Pods' network namespaces, named in their sandboxes' OCI specs (read before they go away).
    mapfile -t netns < <(find "$ctd/state" -name config.json -path '*io.containerd.runtime.v2.task*' \
        -exec grep -oh '"/var/run/netns/cni-[0-9a-f-]*"' {} + 2>/dev/null | tr -d '"' | sort -u)
    # Every container (pods' and pause processes) through runc itself: works with containerd gone.
    if [[ -d "$ctd/runc/k8s.io" ]]; then
        for id in $(timeout 30 runc --root "$ctd/runc/k8s.io" list -q 2>/dev/null); do
            timeout 30 runc --root "$ctd/runc/k8s.io" delete --force "$id" >/dev/null 2>&1 ||
                log "WARNING: runc delete --force $id failed"
        done
    fi
    stop containerd
    # Shims (their command line names our socket) and anything left in our runc root.
    pkill -KILL -f "containerd-shim-runc-v2 .*-address $ctd_sock" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pgrep -f "containerd-shim-runc-v2 .*-address $ctd_sock" >/dev/null 2>&1 || break
        sleep 0.1
    done
    # Stale shim sockets in /run/containerd/s: files no process has bound any more.
    if [[ -d /run/containerd/s ]]; then
        for sock in /run/containerd/s/*; do
            [[ -S "$sock" ]] || continue
            grep -qF " $sock" /proc/net/unix 2>/dev/null || rm -f "$sock"
        done
        rmdir /run/containerd/s /run/containerd 2>/dev/null || true
    fi
    for ns in "${netns[@]}"; do
        ns=${ns/#\/var\/run/\/run}
        umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
        rm -f "$ns"
    done
    # Mounts under the state directory (pod volumes, containerd's rootfs and shm, kubelet's bind).
    for ((i = 0; i < 5; i++)); do
        mapfile -t m < <(mounts_under "$state")
        ((${#m[@]} == 0)) && break
        umount "${m[@]}" 2>/dev/null || umount -l "${m[@]}" 2>/dev/null || true
    done
    mapfile -t m < <(mounts_under "$state")
    ((${#m[@]} == 0)) || log "WARNING: still mounted under $state: ${m[*]}"
    ip link show "$node_bridge" >/dev/null 2>&1 && ip link delete "$node_bridge"
    # kube-proxy's and kubelet's KUBE-* chains, the bridge plugin's CNI-* ones and every rule using
    # them: each table reloaded without them (iptables-restore replaces only the tables it reads).
    # (The rules are read into a variable first: `save | grep -q` fails under pipefail when grep
    # exits early and save gets SIGPIPE.)
    local rules
    for t in iptables ip6tables; do
        rules=$("$t-save" 2>/dev/null) || continue
        if grep -q -e 'KUBE-' -e 'CNI-' <<<"$rules"; then
            grep -v -e 'KUBE-' -e 'CNI-' <<<"$rules" | timeout 30 "$t-restore" ||
                log "WARNING: removing the KUBE-*/CNI-* rules with $t-restore failed"
        fi
    done
    # Pod cgroups (cgroupfs driver: /kubepods in each v1 hierarchy), deepest first.
    for m in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
        [[ -d "$m" ]] || continue
        for ((i = 0; i < 20; i++)); do
            find "$m" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [[ -d "$m" ]] || break
            sleep 0.1
        done
        [[ -d "$m" ]] && log "WARNING: $m not removed (processes left in it?)"
    done
    # kubelet's links to container logs (their directory is fixed) and the CNI result cache.
    for name in /var/log/containers/*; do
        [[ -L "$name" && "$(readlink "$name")" == "$state/"* ]] && rm -f "$name"
    done
    rmdir /var/log/containers 2>/dev/null || true
    # kubelet 1.34's device plugin socket is at a fixed path, whatever --root-dir says.
    [[ -S /var/lib/kubelet/device-plugins/kubelet.sock ]] && rm -f /var/lib/kubelet/device-plugins/kubelet.sock
    rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
    # libmount's /run/mount (utab), made by our bind mount when absent before.
    rmdir /run/mount 2>/dev/null || true
    rm -f /var/lib/cni/results/"$node_net"-* /var/lib/cni/results/cni-loopback-*
    rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
    # containerd's CNI library locks its default conf dir even when conf_dir is elsewhere.
    if [[ "$(ls -A /etc/cni/net.d 2>/dev/null)" == cni.lock ]]; then
        rm -f /etc/cni/net.d/cni.lock
        rmdir /etc/cni/net.d /etc/cni 2>/dev/null || true
    fi
    sysctls_restore
}
