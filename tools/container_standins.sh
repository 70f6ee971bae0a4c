#!/usr/bin/env bash
# Containers on machines that cannot pull from image registries or reach PyTorch's index, and
# image builds that use this machine's pip setup. Used by tests/containers/; usable by hand.
#
#   tools/container_standins.sh env       # the engine and its settings, as NAME=VALUE lines
#   tools/container_standins.sh images [python] [redis] [label-studio]
#                                         # each base image: present, pulled, or a stand-in
#   tools/container_standins.sh build [BUILD ARGS...]
#                                         # `$ENGINE build`, from a local mirror where needed
#
# images: for each base image that docker/ uses (python:3.11-slim in both Dockerfiles,
# redis:7.4-alpine and heartexlabs/label-studio:1.23.2 in docker-compose.yml), use it if the
# engine has it, else pull it, else build a stand-in under the very same name, so that the
# Dockerfiles and compose files run unchanged. A stand-in is Debian bookworm (debootstrap
# --variant=minbase from apt's own mirror, trimmed like Debian's slim images) with Debian's
# python3 or redis-server, or `pip install label-studio==1.23.2`; it carries the label
# org.dextr-backend.stand-in=1. One line per image: `<name> real` or `<name> stand-in`.
#   DEXTR_STANDINS=auto (default) | always (never pull) | never (pull or fail)
# The Label Studio stand-in's pip gets this machine's pip setup (index, CA bundle, find-links,
# constraints) through Podman `-v` mounts of its RUN step, never stored in an image.
#
# build: `$ENGINE build "$@"`. Where the Dockerfile's torch index cannot be reached, or this
# machine's pip needs a CA bundle of its own (a TLS-inspecting proxy), it builds through the
# Dockerfile's own build arguments instead, as from any mirror: this machine's pip resolves and
# fetches every wheel the image needs (`pip wheel`, with its own indexes, CA bundle and
# constraints; torch pinned) into a wheelhouse, which a local HTTP server serves as the only
# index (--network host, --build-arg INDEX_URL / TORCH_INDEX_URL / TORCH_VERSION,
# EXTRA_INDEX_URL empty). Nothing of this machine goes into the image.
#   DEXTR_BUILD_MIRROR=auto (default) | always | never
#   DEXTR_TORCH_VERSION   torch for the mirror (default: the Dockerfile's TORCH_VERSION, or for a
#                         CPU-index Dockerfile, the newest CPU wheel in pip's find-links)
#   DEXTR_MIRROR_PORT     the local index's port (default 39717; fixed, so layers stay cached)
#
# Engine: DEXTR_CONTAINER_ENGINE=docker|podman, else the first of podman, docker that answers.
# With Podman, where this machine cannot give containers the default resource limits (or crun
# meets hybrid cgroups), `env` writes a private containers.conf (runc, this machine's limits)
# and prints CONTAINERS_CONF=...; export it for every podman / podman-compose call.
# /etc/containers is never touched.
set -euo pipefail

CACHE=${DEXTR_CONTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dextr-backend/containers}
PYTHON_IMAGE=docker.io/library/python:3.11-slim
REDIS_IMAGE=docker.io/library/redis:7.4-alpine
LS_VERSION=1.23.2
LS_IMAGE=docker.io/heartexlabs/label-studio:$LS_VERSION
DEBIAN_IMAGE=localhost/dextr-standin/debian:bookworm
LABEL=org.dextr-backend.stand-in
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

log() { echo "container_standins: $*" >&2; }
die() { log "$*"; exit 1; }

# ------------------------------------------------------------------------------------ engine
detect_engine() {
    if [ -n "${DEXTR_CONTAINER_ENGINE:-}" ]; then
        ENGINE=$DEXTR_CONTAINER_ENGINE
        command -v "$ENGINE" >/dev/null || die "DEXTR_CONTAINER_ENGINE=$ENGINE: not installed"
        return
    fi
    for candidate in podman docker; do
        if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then
            ENGINE=$candidate
            return
        fi
    done
    die "neither podman nor docker can run containers here"
}

# Podman on a host that forbids raising RLIMIT_NOFILE (containers get podman's default of
# 1048576) or where crun meets hybrid cgroups: a private containers.conf with runc and this
# host's own limits.
podman_conf() {
    [ "$ENGINE" = podman ] || return 0
    [ -z "${CONTAINERS_CONF:-}" ] || return 0
    local need=0 runtime cgroups hard procs
    if ! (ulimit -Hn 1048576) 2>/dev/null; then need=1; fi
    runtime=$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null || echo unknown)
    cgroups=$(podman info --format '{{.Host.CgroupsVersion}}' 2>/dev/null || echo unknown)
    if [ "$runtime" != runc ] && [ "$cgroups" = v1 ]; then need=1; fi
    [ "$need" = 1 ] || return 0
    command -v runc >/dev/null || die "podman needs runc here (apt-get install runc)"
    hard=$(ulimit -Hn)
    procs=$(ulimit -Hu)
    if [ "$procs" = unlimited ] || [ "$procs" -gt 32768 ]; then procs=32768; fi
    printf '%s\n' "# Written by tools/container_standins.sh for this machine's limits; used through CONTAINERS_CONF." \
        '[containers]' "default_ulimits = [\"nofile=$hard:$hard\", \"nproc=$procs:$procs\"]" \
        '[engine]' 'runtime = "runc"' > "$CACHE/containers.conf"
    export CONTAINERS_CONF=$CACHE/containers.conf
}

has_image() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }
label_of() { "$ENGINE" image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null; }
is_standin() { case "$(label_of "$1")" in [0-9]*) return 0 ;; *) return 1 ;; esac; }
# The revision of each stand-in: an older stand-in found on the machine is built again.
# label-studio 2: Sentry off (SENTRY_DSN empty, as tests/labelstudio_server.py runs it): with
# sentry-sdk 3.0 from PyPI, label-studio 1.23.2's Sentry set-up stops it at start.
standin_rev() { case $1 in label-studio) echo 2 ;; *) echo 1 ;; esac; }

# ------------------------------------------------------------------------- this machine's pip
# HOST_PIP_* from `pip config list` (files and PIP_* variables; later lines win, as in pip).
host_pip_config() {
    HOST_PIP_INDEX="" HOST_PIP_EXTRA="" HOST_PIP_LINKS="" HOST_PIP_CERT="" HOST_PIP_CONSTRAINT="" HOST_PIP_TRUSTED=""
    command -v python3 >/dev/null || return 0
    local key value
    while IFS=$'\t' read -r key value; do
        case $key in
            index-url) HOST_PIP_INDEX=$value ;;
            extra-index-url) HOST_PIP_EXTRA=$value ;;
            find-links) HOST_PIP_LINKS=$value ;;
            cert) HOST_PIP_CERT=$value ;;
            constraint) HOST_PIP_CONSTRAINT=$value ;;
            trusted-host) HOST_PIP_TRUSTED=$value ;;
        esac
    done < <(python3 -m pip config list 2>/dev/null \
             | sed -n "s/^[^.]*\.\([a-z-]*\)='\(.*\)'\$/\1\t\2/p" || true)
}

# This machine's pip setup for a container's pip: PIP_MOUNTS (Podman or Docker `-v` options: a
# pip.conf and the CA bundle, constraints file and local folders it names, read-only) and
# BUILD_OPTS (those mounts plus --build-arg INDEX_URL / EXTRA_INDEX_URL, for the Label Studio
# stand-in's RUN step; Podman only: `docker build` has no -v).
PIP_MOUNTS=()
BUILD_OPTS=()
pip_mounts() {
    host_pip_config
    PIP_MOUNTS=()
    BUILD_OPTS=()
    local dir=$CACHE/build conf url path
    mkdir -p "$dir"
    conf=$dir/pip.conf
    printf '%s\n' "# Build-time only: mounted by tools/container_standins.sh, never stored in an image." '[global]' > "$conf"
    [ -z "$HOST_PIP_INDEX" ] || echo "index-url = $HOST_PIP_INDEX" >> "$conf"
    [ -z "$HOST_PIP_EXTRA" ] || echo "extra-index-url = $HOST_PIP_EXTRA" >> "$conf"
    if [ -n "$HOST_PIP_CERT" ] && [ -f "$HOST_PIP_CERT" ]; then
        PIP_MOUNTS+=(-v "$HOST_PIP_CERT:/run/dextr-build/ca.pem:ro")
        echo "cert = /run/dextr-build/ca.pem" >> "$conf"
    fi
    if [ -n "$HOST_PIP_CONSTRAINT" ] && [ -f "$HOST_PIP_CONSTRAINT" ]; then
        PIP_MOUNTS+=(-v "$HOST_PIP_CONSTRAINT:/run/dextr-build/constraints.txt:ro")
        echo "constraint = /run/dextr-build/constraints.txt" >> "$conf"
    fi
    [ -z "$HOST_PIP_LINKS" ] || echo "find-links = $HOST_PIP_LINKS" >> "$conf"
    [ -z "$HOST_PIP_TRUSTED" ] || echo "trusted-host = $HOST_PIP_TRUSTED" >> "$conf"
    for url in $HOST_PIP_INDEX $HOST_PIP_EXTRA $HOST_PIP_LINKS; do
        case $url in
            file://*) path=${url#file://} ;;
            /*) path=$url ;;
            *) continue ;;
        esac
        case $path in */simple|*/simple/) path=$(dirname "${path%/}") ;; esac   # files lie beside the index
        [ -d "$path" ] && PIP_MOUNTS+=(-v "$path:$path:ro")
    done
    PIP_MOUNTS+=(-v "$conf:/etc/pip.conf:ro")
    [ -z "$HOST_PIP_INDEX" ] || BUILD_OPTS+=(--build-arg "INDEX_URL=$HOST_PIP_INDEX")
    [ -z "$HOST_PIP_EXTRA" ] || BUILD_OPTS+=(--build-arg "EXTRA_INDEX_URL=$HOST_PIP_EXTRA")
    [ "$ENGINE" != podman ] || BUILD_OPTS+=("${PIP_MOUNTS[@]}")
}

# ------------------------------------------------------------------------------------ build
# build_via_mirror DOCKERFILE CONTEXT: MIRROR_OPTS (build arguments) and a running local index.
MIRROR_OPTS=()
MIRROR_PID=""
build_via_mirror() {
    local dockerfile=$1 context=$2 torch_index torch_version
    host_pip_config
    torch_index=$(sed -n 's/^ARG TORCH_INDEX_URL=//p' "$dockerfile" | head -1)
    torch_version=${DEXTR_TORCH_VERSION:-$(sed -n 's/^ARG TORCH_VERSION=//p' "$dockerfile" | head -1)}
    local mode=${DEXTR_BUILD_MIRROR:-auto}
    if [ "$mode" = never ]; then return 0; fi
    if [ "$mode" = auto ]; then
        local reachable=1
        if [ -n "$torch_index" ] && ! curl -fsS -m 15 -o /dev/null "${torch_index%/}/torch/" 2>/dev/null; then
            reachable=0
        fi
        if [ "$reachable" = 1 ] && [ -z "$HOST_PIP_CERT" ]; then return 0; fi
    fi
    command -v python3 >/dev/null || die "a build through the local mirror needs python3 (for its HTTP server)"
    # CPU image and no PyTorch CPU index: the newest CPU torch wheel in pip's find-links.
    if [ "$torch_index" = "$TORCH_CPU_INDEX" ] && [ -z "${DEXTR_TORCH_VERSION:-}" ] \
            && ! curl -fsS -m 15 -o /dev/null "$TORCH_CPU_INDEX/torch/" 2>/dev/null; then
        local folder wheel
        for folder in $HOST_PIP_LINKS; do
            folder=${folder#file://}
            wheel=$(ls "$folder"/torch-*+cpu-cp311-cp311-*linux*x86_64.whl 2>/dev/null | sort -V | tail -1 || true)
            if [ -n "$wheel" ]; then
                torch_version=$(basename "$wheel" | cut -d- -f2)
                log "PyTorch's CPU index is unreachable: torch $torch_version from $wheel"
                break
            fi
        done
        case $torch_version in
            *+cpu) ;;
            *) die "PyTorch's CPU index is unreachable and pip's find-links hold no CPU torch wheel (set DEXTR_TORCH_VERSION)" ;;
        esac
    fi

    # The wheelhouse: every wheel of the image, resolved by pip in a throwaway container of the
    # image's own Python (so that environment markers match) with this machine's pip setup
    # mounted, torch pinned. The context's files that the Dockerfile's .dockerignore lets in.
    local name wheelhouse key files ignore
    name=$(basename "$dockerfile")
    wheelhouse=$CACHE/wheelhouse-${name#Dockerfile.}
    ignore=$dockerfile.dockerignore
    files=$(sed -n 's/^!\([^*]*\)$/\1/p' "$ignore" 2>/dev/null | sed 's:/$::' | tr '\n' ' ')
    [ -n "$files" ] || die "the local mirror needs $ignore to list the build context's files (!path lines)"
    key=$( { echo "$torch_version $files"; cat "$context/setup.py"; python3 -m pip config list 2>/dev/null;
             "$ENGINE" image inspect --format '{{.Id}}' "$PYTHON_IMAGE" 2>/dev/null; } | sha256sum | cut -c1-16)
    if [ "$(cat "$wheelhouse/.key" 2>/dev/null)" != "$key" ]; then
        log "wheelhouse for $name: pip in $PYTHON_IMAGE resolves the image's wheels (torch==$torch_version)"
        rm -rf "${wheelhouse:?}"
        mkdir -p "$wheelhouse"
        echo "torch==$torch_version" > "$wheelhouse/.pins"
        pip_mounts
        "$ENGINE" run --rm --network host "${PIP_MOUNTS[@]}" -v "$wheelhouse:/wheelhouse" \
            -v "$(cd "$context" && pwd):/context:ro" --entrypoint sh "$PYTHON_IMAGE" -c "
                set -e; mkdir /tmp/src; cd /context; cp -r $files /tmp/src/
                python3 -m venv /tmp/venv
                /tmp/venv/bin/pip wheel -q --disable-pip-version-check --use-pep517 -w /wheelhouse -c /wheelhouse/.pins /tmp/src setuptools wheel
                rm -f /wheelhouse/dextr_backend-*.whl" >"$CACHE/wheelhouse.log" 2>&1 \
            || die "pip wheel for the local mirror failed; see $CACHE/wheelhouse.log"
        python3 - "$wheelhouse" <<'PYEOF'
import hashlib, html, pathlib, re, sys
root = pathlib.Path(sys.argv[1])
projects = {}
for wheel in sorted(root.glob("*.whl")):
    name = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
    projects.setdefault(name, []).append(wheel)
(root / "simple").mkdir(exist_ok=True)
for name, wheels in projects.items():
    page = root / "simple" / name
    page.mkdir(exist_ok=True)
    links = "".join(f'<a href="../../{html.escape(w.name)}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">'
                    f"{html.escape(w.name)}</a>\n" for w in wheels)
    (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
(root / "simple" / "index.html").write_text(
    "<!DOCTYPE html><html><body>\n" + "".join(f'<a href="{n}/">{n}</a>\n' for n in sorted(projects)) + "</body></html>\n")
PYEOF
        echo "$key" > "$wheelhouse/.key"
    fi

    # The local index, for this build only.
    local port=${DEXTR_MIRROR_PORT:-39717}
    if python3 -c "import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)) != 0)"; then
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        log "port ${DEXTR_MIRROR_PORT:-39717} is taken: the local index uses $port (layers built with another port are not reused)"
    fi
    python3 -m http.server --bind 127.0.0.1 --directory "$wheelhouse" "$port" >"$CACHE/mirror.log" 2>&1 &
    MIRROR_PID=$!
    local url=http://127.0.0.1:$port/simple/ i
    for i in $(seq 50); do
        curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null && break
        sleep 0.2
    done
    MIRROR_OPTS=(--network host --build-arg "INDEX_URL=$url" --build-arg "TORCH_INDEX_URL=$url"
                 --build-arg "EXTRA_INDEX_URL=" --build-arg "TORCH_VERSION=$torch_version")
}

stop_mirror() { if [ -n "$MIRROR_PID" ]; then kill "$MIRROR_PID" 2>/dev/null || true; wait "$MIRROR_PID" 2>/dev/null || true; fi; }

# ------------------------------------------------------------------------------------ stand-ins
debian_base() {
    has_image "$DEBIAN_IMAGE" && return 0
    command -v debootstrap >/dev/null || die "stand-ins need debootstrap (apt-get install debootstrap)"
    # apt's own mirrors (deb822 .sources files, else sources.list)
    local uris mirror security rootfs
    uris=$( (sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
             awk '$1 == "deb" {print $2}' /etc/apt/sources.list 2>/dev/null || true) | tr ' ' '\n' | grep . || true)
    mirror=$(echo "$uris" | grep -v security | head -1 || true)
    security=$(echo "$uris" | grep security | head -1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/dextr-debootstrap.XXXXXX")
    [ -d "$rootfs" ] && [ "$rootfs" != / ] || die "mktemp failed"
    # shellcheck disable=SC2064
    trap "rm -rf '$rootfs'" EXIT
    log "debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
        || die "debootstrap failed; see $CACHE/debootstrap.log"
    # As Debian's own slim images: updates and security sources; no package caches, docs or
    # translations (the files below are written inside the new root file system only).
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" > "${rootfs:?}/etc/apt/sources.list"
    [ -z "$security" ] || printf 'deb %s bookworm-security main\n' "$security" >> "${rootfs:?}/etc/apt/sources.list"
    printf '%s\n' \
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
        'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' 'Acquire::Languages "none";' \
        > "${rootfs:?}/etc/apt/apt.conf.d/docker-clean"
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
        > "${rootfs:?}/etc/dpkg/dpkg.cfg.d/docker-slim"
    find "${rootfs:?}/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    rm -rf "${rootfs:?}"/usr/share/man/* "${rootfs:?}"/usr/share/info/* "${rootfs:?}"/usr/share/locale/* \
           "${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/var/cache/apt/*.bin "${rootfs:?}"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$ENGINE" import -q --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
    rm -rf "${rootfs:?}"
    trap - EXIT
}

standin_python() {
    debian_base
    local dir=$CACHE/standin-python
    mkdir -p "$dir"
    cat > "$dir/Containerfile" <<EOF
# Stand-in for $PYTHON_IMAGE (tools/container_standins.sh): Debian's Python 3.11.
FROM $DEBIAN_IMAGE
RUN apt-get update \\
    && apt-get install -y --no-install-recommends python3 python3-pip python3-venv python-is-python3 ca-certificates \\
    && rm -rf /var/lib/apt/lists/* /usr/lib/python3*/EXTERNALLY-MANAGED
ENV LANG=C.UTF-8
LABEL $LABEL=1
CMD ["python3"]
EOF
    "$ENGINE" build -q -t "$PYTHON_IMAGE" -f "$dir/Containerfile" "$dir" >/dev/null
}

standin_redis() {
    debian_base
    local dir=$CACHE/standin-redis
    mkdir -p "$dir"
    # As the official image: `redis-server ...` runs as user redis, in /data, without protected mode.
    cat > "$dir/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
if [ "${1#-}" != "$1" ]; then set -- redis-server "$@"; fi
if [ "$1" = redis-server ]; then
    shift
    set -- redis-server "$@" --protected-mode no
    if [ "$(id -u)" = 0 ]; then
        chown -R redis:redis /data
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
exec "$@"
EOF
    cat > "$dir/Containerfile" <<EOF
# Stand-in for $REDIS_IMAGE (tools/container_standins.sh): Debian's redis-server.
FROM $DEBIAN_IMAGE
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \\
    && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown redis:redis /data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 755 /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
VOLUME /data
EXPOSE 6379
LABEL $LABEL=1
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
EOF
    "$ENGINE" build -q -t "$REDIS_IMAGE" -f "$dir/Containerfile" "$dir" >/dev/null
}

standin_label_studio() {
    ensure python >/dev/null
    local dir=$CACHE/standin-label-studio
    mkdir -p "$dir"
    # As the official image: data in /label-studio/data (a volume), port 8080, user 1001; the
    # first user and its legacy token come from LABEL_STUDIO_USERNAME / _PASSWORD / _USER_TOKEN.
    cat > "$dir/Containerfile" <<EOF
# Stand-in for $LS_IMAGE (tools/container_standins.sh): label-studio==$LS_VERSION from PyPI.
FROM $PYTHON_IMAGE
ARG INDEX_URL=https://pypi.org/simple
ARG EXTRA_INDEX_URL=
RUN python3 -m venv /opt/label-studio \\
    && PIP_INDEX_URL="\$INDEX_URL" PIP_EXTRA_INDEX_URL="\$EXTRA_INDEX_URL" \\
       /opt/label-studio/bin/pip install --no-cache-dir --disable-pip-version-check "label-studio==$LS_VERSION" \\
    && useradd --uid 1001 --create-home labelstudio \\
    && mkdir -p /label-studio/data && chown -R 1001 /label-studio
ENV PATH=/opt/label-studio/bin:\$PATH PYTHONUNBUFFERED=1 LABEL_STUDIO_BASE_DATA_DIR=/label-studio/data \\
    LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false SENTRY_DSN="" FRONTEND_SENTRY_DSN=""
WORKDIR /label-studio
USER 1001
VOLUME /label-studio/data
EXPOSE 8080
LABEL $LABEL=$(standin_rev label-studio)
CMD ["label-studio", "start", "--no-browser", "--internal-host", "0.0.0.0", "-p", "8080"]
EOF
    BUILD_OPTS=()
    pip_mounts
    "$ENGINE" build -q "${BUILD_OPTS[@]}" -t "$LS_IMAGE" -f "$dir/Containerfile" "$dir" >/dev/null
}

# ensure NAME: the image for python | redis | label-studio; prints "<image> real|stand-in".
ensure() {
    local what=$1 image
    case $what in
        python) image=$PYTHON_IMAGE ;;
        redis) image=$REDIS_IMAGE ;;
        label-studio) image=$LS_IMAGE ;;
        *) die "unknown image $what (python, redis, label-studio)" ;;
    esac
    if has_image "$image" && is_standin "$image" && [ "$(label_of "$image")" != "$(standin_rev "$what")" ]; then
        log "stand-in $image is out of date: building it again"
        "standin_${what//-/_}"
    fi
    if ! has_image "$image"; then
        local mode=${DEXTR_STANDINS:-auto}
        if [ "$mode" != always ] && timeout 600 "$ENGINE" pull -q "$image" >/dev/null 2>"$CACHE/pull.log"; then
            :
        elif [ "$mode" = never ]; then
            die "cannot pull $image (DEXTR_STANDINS=never): $(tail -1 "$CACHE/pull.log")"
        else
            log "cannot pull $image: building a stand-in"
            "standin_${what//-/_}"
        fi
    fi
    if is_standin "$image"; then echo "$image stand-in"; else echo "$image real"; fi
}

# ------------------------------------------------------------------------------------ main
command=${1:-}
[ -n "$command" ] || { sed -n '2,9p' "$0"; exit 2; }
shift
mkdir -p "$CACHE"
detect_engine
podman_conf
case $command in
    env)
        echo "DEXTR_CONTAINER_ENGINE=$ENGINE"
        [ -z "${CONTAINERS_CONF:-}" ] || echo "CONTAINERS_CONF=$CONTAINERS_CONF"
        ;;
    images)
        [ $# -gt 0 ] || set -- python redis label-studio
        for what in "$@"; do ensure "$what"; done
        ;;
    build)
        dockerfile=Dockerfile context=. prev=
        for arg in "$@"; do
            case $prev in -f|--file) dockerfile=$arg ;; esac
            case $arg in --file=*) dockerfile=${arg#--file=} ;; esac
            prev=$arg
        done
        context=${!#}                                   # the last argument, as for `docker build`
        trap stop_mirror EXIT
        build_via_mirror "$dockerfile" "$context"
        log "$ENGINE build ${MIRROR_OPTS[*]} $*"
        "$ENGINE" build "${MIRROR_OPTS[@]}" "$@"
        ;;
    *)
        die "unknown command $command (env, images, build)"
        ;;
esac
