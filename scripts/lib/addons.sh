# shellcheck shell=bash
# Cluster add-ons of scripts/cluster.sh's node (sourced by it; uses its here, state, BIN, log, die,
# kubectl_admin, wait_for, scratch_image, image_import): the cluster DNS and the image `helm test`
# runs. Both images are made on this machine (no registry is reachable) FROM scratch around one
# static binary, and cached by version in ~/.cache/p2p-sensor-operator/addons:
#   localhost/p2p-sensor/coredns:<version>   github.com/coredns/coredns, built by
#                                            scripts/build-kubernetes.sh (scripts/kube/coredns)
#   localhost/p2p-sensor/busybox:<version>   Debian's busybox-static (apt-get download): /bin/sh
#                                            and /bin/wget for the chart's test Pod
#                                            (helm test --set test.image.repository=..., see docs/kubernetes.md)

# shellcheck disable=SC2154 # here, state, BIN, dns_service_ip: set by cluster.sh

addons_dir="${XDG_CACHE_HOME:-$HOME/.cache}/p2p-sensor-operator/addons"

# CoreDNS: its image, then coredns.yaml (Deployment, Service kube-dns at $dns_service_ip, which is
# kubelet's clusterDNS) applied, and its rollout awaited.
dns_up() {
    local version image archive
    version=$(sed -n 's/^COREDNS_VERSION="v\([0-9.]*\)"$/\1/p' "$here/build-kubernetes.sh")
    [[ -n "$version" && -x "$BIN/coredns" ]] || die 1 "coredns is not in $BIN (scripts/build-kubernetes.sh builds it)"
    image="localhost/p2p-sensor/coredns:$version"
    archive="$addons_dir/coredns-$version.tar"
    if [[ ! -s "$archive" ]]; then
        log "CoreDNS image: building $image from $BIN/coredns"
        scratch_image "$image" "$archive" 65532:65532 '["/coredns"]' "$(readlink -f "$BIN/coredns")=/coredns"
    fi
    image_import "$image" "$archive"
    sed -e "s|@IMAGE@|$image|" -e "s|@DNS_IP@|$dns_service_ip|" "$here/kube/coredns/coredns.yaml" |
        kubectl_admin apply --server-side --field-manager p2p-sensor-cluster -f - >/dev/null ||
        die 1 "applying scripts/kube/coredns/coredns.yaml failed"
    kubectl_admin -n kube-system rollout status deployment/coredns --timeout "${timeout_s}s" >/dev/null ||
        die 1 "CoreDNS did not become ready; kubectl -n kube-system logs deploy/coredns"
    log "CoreDNS $version: ready, Service kube-dns at $dns_service_ip (kubelet clusterDNS)"
}

# The helm-test image: Debian's busybox-static as /bin/busybox, /bin/sh and /bin/wget (busybox
# picks the applet from argv[0]). Its tag is busybox's upstream version.
test_image_up() {
    local work deb version archive
    work=$(mktemp -d /tmp/p2p-busybox.XXXXXX)
    # apt's lists may be missing when scripts/install-prereqs.sh had nothing to install: update once.
    (cd "$work" && apt-get download busybox-static >/dev/null 2>&1) ||
        { apt-get update -q >/dev/null 2>&1 && (cd "$work" && apt-get download busybox-static >/dev/null 2>&1); } || {
        rm -rf "$work"
        die 1 "apt-get download busybox-static failed (after apt-get update)"
    }
    deb=$(echo "$work"/busybox-static_*.deb)
    # 1:1.35.0-4+deb12u1 -> 1.35.0
    version=$(dpkg-deb --field "$deb" Version | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//')
    test_image="localhost/p2p-sensor/busybox:$version"
    archive="$addons_dir/busybox-$(dpkg-deb --field "$deb" Version | tr ':+~' '___').tar"
    if [[ ! -s "$archive" ]]; then
        dpkg-deb -x "$deb" "$work/root" || die 1 "dpkg-deb -x $deb failed"
        scratch_image "$test_image" "$archive" 65532:65532 '["/bin/sh"]' \
            "$work/root/bin/busybox=/bin/busybox" "$work/root/bin/busybox=/bin/sh" "$work/root/bin/busybox=/bin/wget"
    fi
    rm -rf "$work"
    image_import "$test_image" "$archive"
}
