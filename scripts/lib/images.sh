# shellcheck shell=bash
# Our images on a machine without a registry, from the repository's own Dockerfile (sourced by
# scripts/cluster.sh for `load-images`). The Dockerfile takes its base images as build arguments;
# here each is a local image made from Debian's packages with debootstrap:
#   localhost/p2p-sensor/builder:<codename>-rust<version>-r<recipe>
#       minbase + CA certificates, build-essential, pkg-config (what the rust: images bring for
#       our build; the Dockerfile installs protoc itself) and this machine's Rust toolchain
#       (`rustc --print sysroot`: bin/ and lib/) under /usr/local/rust, this machine's local CAs
#       (/usr/local/share/ca-certificates), with
#       CARGO_HOME=/usr/local/cargo as in the rust: images. Its Rust is this machine's, not the
#       Dockerfile's RUST_VERSION.
#   localhost/p2p-sensor/runtime:<codename>-r<recipe>
#       minbase + CA certificates: glibc and libgcc_s, what distroless/cc gives our binaries.
# (The kaspad and netem stages' DEBIAN_IMAGE is not built here: the cluster does not need them.)
# buildah keeps its storage in ~/.cache/p2p-sensor-operator/images (base images keyed by codename,
# toolchain and this file's recipe number, and our images; untagged ones are pruned after a build),
# and the Dockerfile's cargo cache mounts persist there too (images_cache_mounts), so a second
# build is incremental. The built images are saved there as
# docker-archive files, then imported.
# Needs root, debootstrap, buildah, ctr; uses the caller's log/die and ctr_k8s.

images_recipe=2
images_dir="${XDG_CACHE_HOME:-$HOME/.cache}/p2p-sensor-operator/images"
debian_mirror="${P2P_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# The Dockerfile's cache mounts (cargo registry, target/): buildah 1.28 keeps them in the fixed
# /var/tmp/buildah-cache, which does not outlive a reboot here; pointing it into the cache makes a
# later build on this machine incremental (a full release build of both binaries otherwise).
images_cache_mounts() {
    local cache_dir="$images_dir/cache-mounts" fixed=/var/tmp/buildah-cache
    if [[ -L "$fixed" ]]; then
        [[ "$(readlink "$fixed")" == "$cache_dir" && -d "$cache_dir" ]] && return 0
        rm -f "$fixed"
    elif [[ -d "$fixed" && ! -e "$cache_dir" ]]; then
        # A real directory from an earlier build: keep what it holds.
        mv "$fixed" "$cache_dir" || die 1 "moving $fixed to $cache_dir failed"
    elif [[ -d "$fixed" ]]; then
        rm -rf "$fixed"
    fi
    mkdir -p "$cache_dir"
    ln -s "$cache_dir" "$fixed" || die 1 "ln -s $cache_dir $fixed failed"
}

# buildah with its storage in the cache (vfs: no overlay mounts in this sandbox). Chroot
# isolation and the host's network for RUN steps: the builder fetches crates like the host does.
bh() {
    buildah --root "$images_dir/storage" --runroot "$images_dir/run" --storage-driver vfs "$@"
}

# The Dockerfile's DEBIAN_CODENAME default (one place for the release).
images_codename() {
    local repo="$1" codename
    codename=$(sed -n 's/^ARG DEBIAN_CODENAME=\([a-z]*\)$/\1/p' "$repo/Dockerfile")
    [[ -n "$codename" ]] || die 1 "no 'ARG DEBIAN_CODENAME=' in $repo/Dockerfile"
    echo "$codename"
}

# images_rootfs_image NAME CODENAME PACKAGES [SYSROOT]: debootstrap a minbase rootfs with PACKAGES
# (comma-separated), add SYSROOT's bin/ and lib/ as /usr/local/rust when given, and commit it as
# image NAME in buildah's storage. Skipped when NAME is already there.
images_rootfs_image() {
    local name="$1" codename="$2" packages="$3" sysroot="${4:-}" work ctr_id started=$SECONDS
    bh inspect --type image "$name" >/dev/null 2>&1 && return 0
    work=$(mktemp -d /var/tmp/p2p-rootfs.XXXXXX)
    log "base image $name: debootstrap $codename (+ $packages)"
    if ! debootstrap --variant=minbase --include="$packages" "$codename" "$work/rootfs" "$debian_mirror" \
        >"$work/debootstrap.log" 2>&1; then
        tail -n 20 "$work/debootstrap.log" >&2
        rm -rf "$work"
        die 1 "debootstrap $codename failed (mirror $debian_mirror; P2P_DEBIAN_MIRROR changes it)"
    fi
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    if [[ -n "$sysroot" ]]; then
        mkdir -p "$work/rootfs/usr/local/rust" "$work/rootfs/usr/local/cargo"
        cp -a "$sysroot/bin" "$sysroot/lib" "$work/rootfs/usr/local/rust/"
        # The builder fetches crates: it trusts the CAs this machine added locally (Debian's place
        # for them), so it works behind the same TLS-inspecting proxy as the host.
        if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
            cp /usr/local/share/ca-certificates/*.crt "$work/rootfs/usr/local/share/ca-certificates/"
            chroot "$work/rootfs" update-ca-certificates >/dev/null ||
                die 1 "update-ca-certificates in the builder's rootfs failed"
        fi
    fi
    tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
    ctr_id=$(bh from scratch)
    bh add "$ctr_id" "$work/rootfs.tar" / >/dev/null
    bh config --env PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env CARGO_HOME=/usr/local/cargo --env LANG=C.UTF-8 --cmd /bin/bash "$ctr_id"
    bh commit --quiet "$ctr_id" "$name" >/dev/null
    bh rm "$ctr_id" >/dev/null
    rm -rf "$work"
    log "base image $name: ready in $((SECONDS - started)) s"
}

# images_build REPO TAG: the builder and runtime base images, then the Dockerfile's `sensor` and
# `operator` targets as p2p-sensor:TAG and p2p-sensor-operator:TAG (the chart's default names),
# each saved as a docker-archive in $images_dir.
images_build() {
    local repo="$1" tag="$2" codename sysroot toolchain target name started
    codename=$(images_codename "$repo")
    sysroot=$(rustc --print sysroot) || die 3 "rustc not found (the builder image takes this machine's toolchain)"
    toolchain=$(rustc --version | awk '{print $2}')
    mkdir -p "$images_dir"
    local builder="localhost/p2p-sensor/builder:$codename-rust$toolchain-r$images_recipe"
    local runtime="localhost/p2p-sensor/runtime:$codename-r$images_recipe"
    images_rootfs_image "$builder" "$codename" \
        ca-certificates,build-essential,pkg-config "$sysroot"
    images_rootfs_image "$runtime" "$codename" ca-certificates
    images_cache_mounts
    for target in sensor operator; do
        name="p2p-$target:$tag"
        [[ $target == operator ]] && name="p2p-sensor-operator:$tag"
        started=$SECONDS
        log "image $name: buildah build --target $target (Dockerfile, BUILDER_IMAGE=$builder, RUNTIME_IMAGE=$runtime)"
        bh build --quiet --isolation chroot --network host \
            --build-arg BUILDER_IMAGE="$builder" --build-arg RUNTIME_IMAGE="$runtime" \
            --target "$target" --tag "localhost/$name" --file "$repo/Dockerfile" "$repo" >/dev/null ||
            die 1 "building $name from $repo/Dockerfile failed"
        rm -f "$images_dir/$target.tar"
        bh push --quiet "localhost/$name" "docker-archive:$images_dir/$target.tar:$name" ||
            die 1 "saving $name failed"
        log "image $name: built in $((SECONDS - started)) s"
    done
    # vfs stores every image as a full copy: keep only the tagged ones (the base images and ours).
    # No --layers above for the same reason; the cargo cache mounts keep rebuilds incremental.
    bh rm --all >/dev/null 2>&1 || true
    bh rmi --prune >/dev/null 2>&1 || true
}

# images_import [--if-saved]: the archives images_build saved, into the node's containerd
# (namespace k8s.io). --if-saved: skip quietly when there are none (`up` after `down`, which
# removes containerd's storage).
images_import() {
    local target archive
    for target in sensor operator; do
        archive="$images_dir/$target.tar"
        if [[ ! -s "$archive" ]]; then
            [[ "${1:-}" == --if-saved ]] && return 0
            die 1 "no $archive (images_build first)"
        fi
        ctr_k8s images import "$archive" >/dev/null || die 1 "ctr images import $archive failed"
    done
    log "images imported into the node's containerd from $images_dir: p2p-sensor, p2p-sensor-operator"
}
