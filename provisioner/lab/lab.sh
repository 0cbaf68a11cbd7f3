#!/usr/bin/env bash
# lab.sh - throw-away Debian bookworm hosts on this machine for rigctl's Ansible tests.
#
#   lab.sh up N [--docker]   start hosts h1..hN (systemd-nspawn, real systemd as PID 1)
#   lab.sh down              stop everything the lab started; safe to run any time
#   lab.sh status            hosts, addresses and whether ssh answers
#   lab.sh restart HOST      reboot one host (its disk is kept), wait for ssh and systemd
#   lab.sh base              only (re)build the cached base rootfs
#
# Hosts boot a cached mmdebstrap'd bookworm rootfs (LAB_CACHE/rootfs), each through its
# own overlayfs copy, on bridge labbr0 (10.213.0.1/24 on this machine; hN = 10.213.0.(10+N)).
# Nothing is routed beyond this machine: apt inside the hosts goes through an
# apt-cacher-ng on 10.213.0.1:3142 that uses this machine's own network.
# After `up`: LAB_DIR/inventory.ini (Ansible) and LAB_DIR/ssh_config (ssh -F, testinfra).
#
# --docker: hosts run a Docker engine inside (cgroup v1 controllers remounted rw,
# keyring syscalls allowed, /var/lib/docker bind-mounted from LAB_DIR, a real filesystem)
# with bookworm's docker.io and the compose v2 plugin from trixie's docker-compose
# (pinned low: everything else stays bookworm); docker-in-lab.md has the why.
#
# Environment: LAB_DIR (default /tmp/rigctl-lab), LAB_CACHE (default
# /var/tmp/rigctl-lab-cache), LAB_MIRROR / LAB_SECURITY_MIRROR (default: this machine's
# apt sources), LAB_EXTRA_PACKAGES (comma list added to the base), LAB_NSPAWN_ARGS,
# LAB_KEEP_ON_FAIL=1 (leave a failed `up` in place for debugging), LAB_NET (default
# 10.213.0; a second lab beside the default one needs its own LAB_NET and LAB_DIR).
# Exit codes: 0 ok, 1 failed, 2 usage, 3 this machine cannot run the lab.
set -euo pipefail
umask 022

LAB_DIR=${LAB_DIR:-/tmp/rigctl-lab}
LAB_CACHE=${LAB_CACHE:-/var/tmp/rigctl-lab-cache}
DEFAULT_NET=10.213.0
LAB_NET=${LAB_NET:-$DEFAULT_NET}  # /24: .1 = this machine, .11.. = hosts
# A second lab next to the default one (e.g. a parallel test session) needs its own
# LAB_NET and LAB_DIR; its bridge, machine names, cgroups and lock get a tag from LAB_NET.
[[ $LAB_NET =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || { echo "LAB_NET must look like 10.213.0" >&2; exit 2; }
_mid=${LAB_NET#*.}; _mid=${_mid//./-}     # 10.214.0 -> 214-0
if [ "$LAB_NET" = "$DEFAULT_NET" ]; then TAG=""; else TAG="n$_mid-"; fi
if [ -z "$TAG" ]; then LAB_BRIDGE=${LAB_BRIDGE:-labbr0}; else LAB_BRIDGE=${LAB_BRIDGE:-labbr-$_mid}; fi
LAB_SUITE=bookworm
LAB_MAX_HOSTS=40
PROXY_PORT=3142
BASE=$LAB_CACHE/rootfs
KEY=$LAB_DIR/id_ed25519
CG_PREFIX=rigctl-lab             # cgroup dir per host: <hierarchy>/rigctl-lab.<host>
LOCK=/run/lock/rigctl-lab${TAG:+-$_mid}.lock
BASE_PACKAGES=openssh-server,python3,python3-apt,sudo,systemd,systemd-sysv,dbus,iproute2,ca-certificates,procps,curl,nftables,libgomp1,libstdc++6
# python3-pynvml is not in bookworm main (checked with apt-cache): not included.
LAB_PACKAGES=$BASE_PACKAGES${LAB_EXTRA_PACKAGES:+,$LAB_EXTRA_PACKAGES}

log() { printf '[lab %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
unavailable() { echo "lab unavailable: $*" >&2; exit 3; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

ssh_opts() {
  SSH_OPTS=(-n -i "$KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
            -o LogLevel=ERROR -o BatchMode=yes -o ConnectTimeout=2)
}

apt_uri() {  # the mirror this machine's apt uses for suite $1 (deb822 or one-line sources)
  local u
  u=$(awk -v s="$1" '/^URIs:/{u=$2} /^Suites:/{for(i=2;i<=NF;i++) if($i==s){print u; exit}}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  [ -n "$u" ] || u=$(awk -v s="$1" '$1=="deb" && $3==s {print $2; exit}' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1)
  [ -n "$u" ] || case $1 in
    *-security) u=http://deb.debian.org/debian-security ;;
    *) u=http://deb.debian.org/debian ;;
  esac
  echo "${u%/}"
}

# ---------------------------------------------------------------- checks, prerequisites
check_machine() {
  [ "$(uname -s)" = Linux ] || unavailable "needs Linux"
  [ "$(id -u)" = 0 ] || unavailable "must run as root (systemd-nspawn, bridges and overlay mounts need it)"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || unavailable "kernel has no overlayfs"
  [ -d /sys/fs/cgroup ] || unavailable "no /sys/fs/cgroup"
  local capeff; capeff=$(awk '/^CapEff/{print $2}' /proc/self/status)
  # CAP_NET_ADMIN (12) and CAP_SYS_ADMIN (21)
  (( (16#$capeff >> 12) & 1 && (16#$capeff >> 21) & 1 )) || unavailable "needs CAP_SYS_ADMIN and CAP_NET_ADMIN"
  command -v systemd-nspawn >/dev/null || command -v apt-get >/dev/null \
    || unavailable "systemd-nspawn not installed and no apt-get to install it"
}

prereqs() {
  local pkgs=(systemd-container mmdebstrap apt-cacher-ng iproute2 openssh-client) missing=() p
  for p in "${pkgs[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || unavailable "missing ${missing[*]} and no apt-get"
  log "installing ${missing[*]}"
  mkdir -p "$LAB_CACHE"
  echo "apt-cacher-ng apt-cacher-ng/tunnelenable boolean false" | debconf-set-selections 2>/dev/null || true
  # policy-rc.d: the packaged apt-cacher-ng service must not start (we run our own)
  local prc=/usr/sbin/policy-rc.d had_prc=0
  [ -e $prc ] && had_prc=1
  if [ $had_prc = 0 ]; then printf '#!/bin/sh\nexit 101\n' > $prc; chmod 755 $prc; fi
  local rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${missing[@]}"; } > "$LAB_CACHE/apt-host.log" 2>&1 || rc=$?
  [ $had_prc = 1 ] || rm -f $prc
  if [ $rc != 0 ]; then tail -20 "$LAB_CACHE/apt-host.log" >&2; die "apt-get install failed"; fi
  # the packaged daemon would take port 3142 on every address; stop it if it runs anyway
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now apt-cacher-ng >/dev/null 2>&1 || true
  fi
}

# ---------------------------------------------------------------- base rootfs (cached)
build_base() {
  local mirror sec stamp
  mirror=${LAB_MIRROR:-$(apt_uri "$LAB_SUITE")}
  sec=${LAB_SECURITY_MIRROR:-$(apt_uri "$LAB_SUITE-security")}
  # (the base carries the default lab's proxy address; host_fs writes each host's own)
  stamp="v1 $LAB_SUITE $mirror $sec $LAB_PACKAGES $DEFAULT_NET.1:$PROXY_PORT"
  if [ -x "$BASE/usr/sbin/sshd" ] && [ "$(cat "$BASE/.lab-ready" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  # never pull the base away from a running lab (its overlays use it as lowerdir)
  if grep -q "lowerdir=$BASE," /proc/mounts; then
    die "the cached base rootfs must be rebuilt but a running lab uses it; run down first"
  fi
  mkdir -p "$LAB_CACHE"; rm -rf "$BASE.tmp" "$BASE"
  local t0 R=$BASE.tmp; t0=$(now)
  log "building the base rootfs ($LAB_SUITE, $mirror) with mmdebstrap"
  mmdebstrap --variant=minbase --include="$LAB_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$LAB_SUITE" "$R" "deb $mirror $LAB_SUITE main" "deb $mirror $LAB_SUITE-updates main" \
    ${sec:+"deb $sec $LAB_SUITE-security main"} > "$LAB_CACHE/mmdebstrap.log" 2>&1 \
    || { tail -20 "$LAB_CACHE/mmdebstrap.log" >&2; rm -rf "$R"; die "mmdebstrap failed (log: $LAB_CACHE/mmdebstrap.log)"; }
  [ -x "$R/usr/sbin/sshd" ] || die "base rootfs has no sshd (log: $LAB_CACHE/mmdebstrap.log)"
  { echo "deb $mirror $LAB_SUITE main"
    echo "deb $mirror $LAB_SUITE-updates main"
    [ -z "$sec" ] || echo "deb $sec $LAB_SUITE-security main"
  } > "$R/etc/apt/sources.list"
  rm -f "$R"/etc/apt/sources.list.d/*
  echo "Acquire::http::Proxy \"http://$DEFAULT_NET.1:$PROXY_PORT/\";" > "$R/etc/apt/apt.conf.d/01lab-proxy"
  # keep each host's copy-up small: compressed lists, no srcpkgcache
  printf 'Acquire::GzipIndexes "true";\nAcquire::CompressionTypes::Order:: "gz";\nDir::Cache::srcpkgcache "";\n' \
    > "$R/etc/apt/apt.conf.d/02lab-slim"
  printf 'UseDNS no\nPermitRootLogin prohibit-password\nMaxStartups 100:30:200\n' > "$R/etc/ssh/sshd_config.d/lab.conf"
  rm -f "$R"/etc/ssh/ssh_host_*     # each host makes its own at first boot (below)
  : > "$R/etc/machine-id"; : > "$R/etc/resolv.conf"   # no DNS inside; apt resolves via the proxy
  # mmdebstrap leaves /var/lib/apt/lists empty but freshly modified: Ansible's
  # apt(update_cache, cache_valid_time) would then skip the update. Age it.
  touch -d @0 "$R/var/lib/apt/lists"
  for u in systemd-timesyncd.service getty@tty1.service console-getty.service e2scrub_reap.service \
           apt-daily.timer apt-daily-upgrade.timer; do
    ln -sf /dev/null "$R/etc/systemd/system/$u"; done
  # host keys are generated per host before sshd starts
  cat > "$R/etc/systemd/system/lab-ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate ssh host keys (lab)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
UNIT
  ln -sf ../lab-ssh-hostkeys.service "$R/etc/systemd/system/multi-user.target.wants/lab-ssh-hostkeys.service"
  mkdir -p "$R/etc/systemd/system/sockets.target.wants"
  ln -sf /lib/systemd/system/systemd-networkd.service "$R/etc/systemd/system/multi-user.target.wants/"
  ln -sf /lib/systemd/system/systemd-networkd.socket "$R/etc/systemd/system/sockets.target.wants/"
  rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/cache/apt/*.bin
  echo "$stamp" > "$R/.lab-ready"
  mv "$R" "$BASE"
  log "base rootfs ready in $(since "$t0") s ($(du -sh "$BASE" | cut -f1))"
}

# ---------------------------------------------------------------- shared network + proxy
net_up() {
  if ! ip link show "$LAB_BRIDGE" >/dev/null 2>&1; then
    ip link add "$LAB_BRIDGE" type bridge
    ip addr add "$LAB_NET.1/24" dev "$LAB_BRIDGE"
    ip link set "$LAB_BRIDGE" up
  fi
  # br_netfilter + FORWARD DROP (e.g. left by a dockerd) would drop host<->host traffic
  if [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null)" = 1 ] && command -v iptables >/dev/null; then
    iptables -C FORWARD -i "$LAB_BRIDGE" -o "$LAB_BRIDGE" -j ACCEPT 2>/dev/null \
      || iptables -I FORWARD -i "$LAB_BRIDGE" -o "$LAB_BRIDGE" -j ACCEPT
  fi
}

proxy_up() {
  if [ -f "$LAB_DIR/acng.pid" ] && kill -0 "$(cat "$LAB_DIR/acng.pid")" 2>/dev/null; then return 0; fi
  command -v apt-cacher-ng >/dev/null || die "apt-cacher-ng not installed"
  mkdir -p "$LAB_CACHE/acng${TAG:+-$_mid}" "$LAB_DIR/acng/log" "$LAB_DIR/acng/conf"
  # Own minimal config without Remap rules: a plain caching proxy for whatever mirror
  # URL the hosts ask for (the packaged config remaps /debian to unreachable mirrors).
  printf 'SupportDir: /usr/lib/apt-cacher-ng\nExThreshold: 4\n' > "$LAB_DIR/acng/conf/acng.conf"
  setsid apt-cacher-ng -c "$LAB_DIR/acng/conf" ForeGround=1 BindAddress="$LAB_NET.1" Port=$PROXY_PORT \
      CacheDir="$LAB_CACHE/acng${TAG:+-$_mid}" LogDir="$LAB_DIR/acng/log" SocketPath="$LAB_DIR/acng/acng.sock" \
      PidFile="$LAB_DIR/acng/acng.daemon.pid" > "$LAB_DIR/acng/acng.out" 2>&1 < /dev/null 9>&- &
  echo $! > "$LAB_DIR/acng.pid"
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$LAB_NET.1/$PROXY_PORT") 2>/dev/null && return 0; sleep 0.1; done
  die "apt-cacher-ng did not come up, see $LAB_DIR/acng/acng.out"
}

# ---------------------------------------------------------------- per-host pieces
cgroup_dirs() {  # every cgroup dir host $1's nspawn runs in (hybrid v1+v2, or pure v2)
  local cg=() c
  if [ -d /sys/fs/cgroup/unified ]; then
    cg+=("/sys/fs/cgroup/unified/$CG_PREFIX.$1")
    [ -d /sys/fs/cgroup/systemd ] && cg+=("/sys/fs/cgroup/systemd/$CG_PREFIX.$1")
    # v1 controllers: joined in --docker mode (dockerd makes its cgroups below ours);
    # also listed when a dir is left over, so that `down` removes it
    for c in /sys/fs/cgroup/*/; do
      c=${c%/}
      case $c in */unified|*/systemd) continue ;; esac
      mountpoint -q "$c" || continue
      if [ "${LAB_DOCKER:-0}" = 1 ] || [ -d "$c/$CG_PREFIX.$1" ]; then cg+=("$c/$CG_PREFIX.$1"); fi
    done
  elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cg+=("/sys/fs/cgroup/$CG_PREFIX.$1")
  fi
  echo "${cg[@]}"
}

host_fs() {   # overlay: base (read-only lower) + per-host upper, then per-host files
  local name=$1 ip=$2 d=$LAB_DIR/hosts/$1 r
  r=$d/root
  mkdir -p "$d/upper" "$d/work" "$r"
  mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$d/upper,workdir=$d/work" "$r"
  echo "$name" > "$r/etc/hostname"
  tr -d - < /proc/sys/kernel/random/uuid > "$r/etc/machine-id"
  { echo "127.0.0.1 localhost"; echo "127.0.1.1 $name"; echo "$LAB_NET.1 labgw"
    cat "$LAB_DIR/hosts.list"; } > "$r/etc/hosts"
  install -d -m 700 "$r/root/.ssh"
  install -m 600 "$KEY.pub" "$r/root/.ssh/authorized_keys"
  mkdir -p "$r/etc/systemd/network"
  printf '[Match]\nName=host0\n\n[Network]\nAddress=%s/24\nGateway=%s\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' \
    "$ip" "$LAB_NET.1" > "$r/etc/systemd/network/10-host0.network"
  echo "Acquire::http::Proxy \"http://$LAB_NET.1:$PROXY_PORT/\";" > "$r/etc/apt/apt.conf.d/01lab-proxy"
  echo "$ip" > "$d/ip"
  if [ "${LAB_DOCKER:-0}" = 1 ]; then
    mkdir -p "$d/docker" "$r/var/lib/docker" "$r/etc/systemd/system/sysinit.target.wants"
    cat > "$r/etc/systemd/system/lab-cgroup-rw.service" <<'UNIT'
[Unit]
Description=Remount the cgroup v1 controllers read-write (nspawn mounts them ro) for dockerd
DefaultDependencies=no
Before=containerd.service docker.service
After=local-fs.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for d in /sys/fs/cgroup/*/; do mountpoint -q "$d" && mount -o remount,bind,rw "$d"; done; true'
[Install]
WantedBy=sysinit.target
UNIT
    ln -sf ../lab-cgroup-rw.service "$r/etc/systemd/system/sysinit.target.wants/lab-cgroup-rw.service"
  fi
}

start_nspawn() {
  local name=$1 d=$LAB_DIR/hosts/$1 extra=${LAB_NSPAWN_ARGS:-}
  [ "${LAB_DOCKER:-0}" = 1 ] && extra+=" --system-call-filter=@keyring --bind=$d/docker:/var/lib/docker"
  # Each host starts from its own cgroup(s): with a non-systemd PID 1 every nspawn would
  # otherwise create /payload and /supervisor at the cgroup root and share them.
  # shellcheck disable=SC2016
  setsid bash -c '
    for cg in '"$(cgroup_dirs "$TAG$name")"'; do
      mkdir -p "$cg"
      # a new v1 cpuset cgroup has no cpus/mems: nothing can join it until they are set
      if [ -f "$cg/cpuset.cpus" ] && [ -z "$(cat "$cg/cpuset.cpus")" ]; then
        cat "$cg/../cpuset.cpus" > "$cg/cpuset.cpus"; cat "$cg/../cpuset.mems" > "$cg/cpuset.mems"; fi
      echo $$ > "$cg/cgroup.procs"
    done
    echo $$ > "'"$d/pid"'"
    exec systemd-nspawn --quiet --boot --directory="'"$d/root"'" --machine="'"$TAG$name"'" \
      --register=no --keep-unit --network-bridge='"$LAB_BRIDGE"' \
      --resolv-conf=off --link-journal=no --console=passive '"$extra"'
  ' > "$d/console.log" 2>&1 < /dev/null 9>&- &
}

wait_ssh() {  # $1 = ip; up to ~60 s
  for _ in $(seq 300); do
    ssh "${SSH_OPTS[@]}" "root@$1" true 2>/dev/null && return 0; sleep 0.2; done
  return 1
}

docker_engine() {  # $1 = ip: docker.io + compose v2 in one host (through the apt proxy)
  local mirror; mirror=${LAB_MIRROR:-$(apt_uri "$LAB_SUITE")}
  # shellcheck disable=SC2029  # expanded here on purpose: mirror and bridge address
  ssh "${SSH_OPTS[@]}" "root@$1" "set -e
    echo 'deb $mirror trixie main' > /etc/apt/sources.list.d/trixie.list
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/trixie-low
    # containers must not fall back to 8.8.8.8 for DNS (the hosts have no resolver)
    mkdir -p /etc/docker; echo '{\"dns\": [\"$LAB_NET.1\"]}' > /etc/docker/daemon.json
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io
    apt-get install -y -qq --no-install-recommends -t trixie docker-compose
    rm -f /var/cache/apt/archives/*.deb
    docker compose version >/dev/null && docker info --format '{{.Driver}}' | grep -qx overlay2
  " > "$LAB_DIR/hosts/$2/docker-install.log" 2>&1
}

docker_engines() {  # every host at once; ~10 s with a warm apt proxy
  local ip name pids=() names=() i bad=() t0; t0=$(now)
  while read -r ip name; do docker_engine "$ip" "$name" & pids+=($!); names+=("$name"); done < "$LAB_DIR/hosts.list"
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || bad+=("${names[$i]}"); done
  if [ ${#bad[@]} -gt 0 ]; then
    for name in "${bad[@]}"; do tail -5 "$LAB_DIR/hosts/$name/docker-install.log" >&2 || true; done
    die "docker engine install failed on ${bad[*]} (log: $LAB_DIR/hosts/<host>/docker-install.log)"
  fi
  log "docker engine + compose v2 on every host in $(since "$t0") s"
}

write_inventory() {
  { echo "[lab]"
    while read -r ip name; do echo "$name ansible_host=$ip"; done < "$LAB_DIR/hosts.list"
    echo; echo "[lab:vars]"
    echo "ansible_user=root"
    echo "ansible_ssh_private_key_file=$KEY"
    echo "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'"
    echo "ansible_host_key_checking=false"
    echo "ansible_python_interpreter=/usr/bin/python3"
  } > "$LAB_DIR/inventory.ini.tmp"
  mv "$LAB_DIR/inventory.ini.tmp" "$LAB_DIR/inventory.ini"
  # ssh -F LAB_DIR/ssh_config h1 ...; testinfra --hosts=ssh://h1 --ssh-config=...
  { while read -r ip name; do printf 'Host %s %s\n  HostName %s\n' "$name" "$ip" "$ip"; done < "$LAB_DIR/hosts.list"
    printf 'Host *\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n' "$KEY"
    printf '  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n  ConnectTimeout 5\n'
    # connection sharing: testinfra's ssh backend runs one ssh per command
    printf '  ControlMaster auto\n  ControlPath %s/cm-%%C\n  ControlPersist 60\n' "$LAB_DIR"
  } > "$LAB_DIR/ssh_config"
}

# ---------------------------------------------------------------- up / down / status
lab_state() { [ -s "$LAB_DIR/hosts.list" ] || [ -n "$(ls -A "$LAB_DIR/hosts" 2>/dev/null)" ]; }

up() {
  local n=$1 t0; t0=$(now)
  if lab_state; then die "lab already up in $LAB_DIR; run '$0 down' first"; fi
  mkdir -p "$LAB_DIR" "$LAB_CACHE"
  touch "$LAB_DIR/.rigctl-lab"
  prereqs
  build_base
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C rigctl-lab -f "$KEY"
  ssh_opts
  mkdir -p "$LAB_DIR/hosts"
  echo "${LAB_DOCKER:-0}" > "$LAB_DIR/docker-mode"
  : > "$LAB_DIR/hosts.list"
  local i; for i in $(seq 1 "$n"); do echo "$LAB_NET.$((10 + i)) h$i" >> "$LAB_DIR/hosts.list"; done
  if [ "${LAB_KEEP_ON_FAIL:-0}" != 1 ]; then
    trap 'rc=$?; if [ $rc != 0 ]; then log "up failed, cleaning up (LAB_KEEP_ON_FAIL=1 keeps it)"; down >/dev/null 2>&1 || true; fi' EXIT
  fi
  net_up
  proxy_up
  local ip name
  while read -r ip name; do
    host_fs "$name" "$ip"
    start_nspawn "$name"
  done < "$LAB_DIR/hosts.list"
  local bad=()
  while read -r ip name; do
    wait_ssh "$ip" || bad+=("$name")
  done < "$LAB_DIR/hosts.list"
  if [ ${#bad[@]} -gt 0 ]; then
    for name in "${bad[@]}"; do tail -5 "$LAB_DIR/hosts/$name/console.log" >&2 || true; done
    die "no ssh on ${bad[*]} after 60 s (console: $LAB_DIR/hosts/<host>/console.log)"
  fi
  local st
  while read -r ip name; do   # wait until systemd has finished booting
    st=$(ssh "${SSH_OPTS[@]}" "root@$ip" 'timeout 60 systemctl is-system-running --wait' 2>/dev/null || true)
    [ "$st" = running ] || log "warning: $name systemd state is '$st'"
  done < "$LAB_DIR/hosts.list"
  if [ "${LAB_DOCKER:-0}" = 1 ]; then docker_engines; fi
  write_inventory
  trap - EXIT
  log "$n host(s) up in $(since "$t0") s; inventory $LAB_DIR/inventory.ini, ssh -F $LAB_DIR/ssh_config h1"
}

kill_cgroup() {  # SIGKILL whatever is left in host $1's cgroup(s), then remove them
  local cg procs
  for cg in $(cgroup_dirs "$1"); do
    [ -d "$cg" ] || continue
    procs=$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null || true)
    if [ -n "$procs" ]; then
      if [ -f "$cg/cgroup.kill" ]; then echo 1 > "$cg/cgroup.kill" 2>/dev/null || true; fi
      echo "$procs" | xargs -r kill -KILL 2>/dev/null || true
      log "$1: killed leftover processes in $cg"
      for _ in $(seq 50); do
        [ -z "$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] && break; sleep 0.1; done
    fi
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

stop_pid() {  # TERM, wait, KILL: only the PID we recorded
  local pid=$1 secs=${2:-15}
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((secs * 10))); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $pid ignored TERM for ${secs} s, sending KILL"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

is_nspawn_pid() {  # $1 = pid recorded at start: still ours (not a recycled pid)?
  [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -q -- "systemd-nspawn.*--machine=$2 "
}

down() {
  local t0 d name ip pid; t0=$(now)
  LAB_DOCKER=$(cat "$LAB_DIR/docker-mode" 2>/dev/null || echo 0)
  if [ -f "$LAB_DIR/ssh_config" ] && [ -f "$LAB_DIR/hosts.list" ]; then   # close ssh control masters
    while read -r ip name; do
      ssh -F "$LAB_DIR/ssh_config" -O exit "$name" >/dev/null 2>&1 < /dev/null || true
    done < "$LAB_DIR/hosts.list"
  fi
  # 1) TERM every nspawn at once: it asks the host's systemd for an orderly shutdown
  local hosts=()
  for d in "$LAB_DIR"/hosts/*/; do
    [ -d "$d" ] || continue; name=$(basename "$d"); hosts+=("$name")
    pid=$(cat "$d/pid" 2>/dev/null || true)
    [ -n "$pid" ] && is_nspawn_pid "$pid" "$TAG$name" && kill -TERM "$pid" 2>/dev/null || true
  done
  # also hosts whose dir is gone but whose cgroup is still there (e.g. a crashed run)
  local cg
  for cg in /sys/fs/cgroup/unified/$CG_PREFIX.* /sys/fs/cgroup/$CG_PREFIX.*; do
    [ -d "$cg" ] || continue; name=${cg##*/"$CG_PREFIX".}
    [[ $name =~ ^${TAG}h[0-9]+$ ]] || continue   # another lab's host
    name=${name#"$TAG"}
    [[ " ${hosts[*]} " == *" $name "* ]] || hosts+=("$name")
  done
  # 2) wait for each (KILL after 20 s), then cgroups, overlay, veth
  for name in "${hosts[@]}"; do
    d=$LAB_DIR/hosts/$name
    pid=$(cat "$d/pid" 2>/dev/null || true)
    if [ -n "$pid" ] && is_nspawn_pid "$pid" "$TAG$name"; then stop_pid "$pid" 20; fi
    # a SIGKILLed nspawn leaves the host's systemd running: kill it via its cgroup
    kill_cgroup "$TAG$name"
    if mountpoint -q "$d/root" 2>/dev/null; then umount "$d/root" 2>/dev/null || umount -l "$d/root"; fi
    ip link del "vb-$TAG$name" 2>/dev/null || true
    rm -rf "$d"
  done
  # any other overlay still mounted under LAB_DIR/hosts (e.g. from an interrupted up)
  awk -v p="$LAB_DIR/hosts/" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" || true; done
  rmdir "$LAB_DIR/hosts" 2>/dev/null || rm -rf "$LAB_DIR/hosts"
  if [ -f "$LAB_DIR/acng.pid" ]; then
    pid=$(cat "$LAB_DIR/acng.pid")
    if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q apt-cacher-ng; then stop_pid "$pid" 5; fi
  fi
  if ip link show "$LAB_BRIDGE" >/dev/null 2>&1; then
    if command -v iptables >/dev/null; then
      iptables -D FORWARD -i "$LAB_BRIDGE" -o "$LAB_BRIDGE" -j ACCEPT 2>/dev/null || true; fi
    # leftover veths (vb-*) on the bridge go with their hosts above; drop the bridge
    ip link del "$LAB_BRIDGE" 2>/dev/null || true
  fi
  if [ -f "$LAB_DIR/.rigctl-lab" ]; then   # only a dir we created
    rm -rf "$LAB_DIR/acng" "$LAB_DIR/cm-"*
    rm -f "$LAB_DIR/acng.pid" "$LAB_DIR/hosts.list" "$LAB_DIR/inventory.ini" "$LAB_DIR/ssh_config" \
          "$LAB_DIR/docker-mode" "$KEY" "$KEY.pub" "$LAB_DIR/.rigctl-lab"
    rmdir "$LAB_DIR" 2>/dev/null || true
  fi
  log "lab down in $(since "$t0") s"
}

restart() {  # $1 = host name: stop its nspawn (an orderly shutdown), boot it again on the same disk
  local name=$1 d=$LAB_DIR/hosts/$1 ip pid t0 st; t0=$(now)
  lab_state || die "the lab is not up in $LAB_DIR ('$0 up N' first)"
  ip=$(awk -v n="$name" '$2 == n {print $1}' "$LAB_DIR/hosts.list")
  [ -n "$ip" ] && [ -d "$d" ] || die "no host $name in the lab (hosts: $(awk '{print $2}' "$LAB_DIR/hosts.list" | xargs))"
  LAB_DOCKER=$(cat "$LAB_DIR/docker-mode" 2>/dev/null || echo 0)
  ssh_opts
  ssh -F "$LAB_DIR/ssh_config" -O exit "$name" >/dev/null 2>&1 < /dev/null || true
  pid=$(cat "$d/pid" 2>/dev/null || true)
  if [ -n "$pid" ] && is_nspawn_pid "$pid" "$TAG$name"; then stop_pid "$pid" 20; fi
  kill_cgroup "$TAG$name"
  ip link del "vb-$TAG$name" 2>/dev/null || true
  # the overlay (base + this host's upper dir) stays mounted across the reboot; mount it if it is not
  mountpoint -q "$d/root" || mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$d/upper,workdir=$d/work" "$d/root"
  start_nspawn "$name"
  wait_ssh "$ip" || { tail -5 "$d/console.log" >&2 || true; die "no ssh on $name after 60 s (console: $d/console.log)"; }
  st=$(ssh "${SSH_OPTS[@]}" "root@$ip" 'timeout 60 systemctl is-system-running --wait' 2>/dev/null || true)
  [ "$st" = running ] || log "warning: $name systemd state is '$st'"
  log "$name restarted in $(since "$t0") s"
}

status() {
  if ! [ -s "$LAB_DIR/hosts.list" ]; then echo "lab: down ($LAB_DIR)"; return 0; fi
  ssh_opts
  echo "lab: up ($LAB_DIR)"
  local ip name s
  while read -r ip name; do
    if ssh "${SSH_OPTS[@]}" "root@$ip" true 2>/dev/null; then s=up; else s=unreachable; fi
    printf '%-4s %-13s %s\n' "$name" "$ip" "$s"
  done < "$LAB_DIR/hosts.list"
  if [ -f "$LAB_DIR/acng.pid" ] && kill -0 "$(cat "$LAB_DIR/acng.pid")" 2>/dev/null; then s=up; else s=down; fi
  echo "apt proxy $LAB_NET.1:$PROXY_PORT $s"
  echo "inventory $LAB_DIR/inventory.ini"
  echo "ssh_config $LAB_DIR/ssh_config"
}

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

with_lock() {
  mkdir -p "$(dirname "$LOCK")"
  exec 9>"$LOCK"
  flock -w 300 9 || die "another lab.sh holds $LOCK"
}

cmd=${1:-}; [ $# -gt 0 ] && shift
case $cmd in
  up)
    n=""; LAB_DOCKER=${LAB_DOCKER:-0}
    for a in "$@"; do
      case $a in
        --docker) LAB_DOCKER=1 ;;
        ''|*[!0-9]*) echo "lab.sh up: bad argument '$a'" >&2; usage ;;
        *) [ -z "$n" ] || usage; n=$a ;;
      esac
    done
    n=${n:-2}
    { [ "$n" -ge 1 ] && [ "$n" -le $LAB_MAX_HOSTS ]; } || { echo "lab.sh up: N must be 1..$LAB_MAX_HOSTS" >&2; exit 2; }
    check_machine; with_lock; up "$n" ;;
  down) [ $# -eq 0 ] || usage; check_machine; with_lock; down ;;
  status) [ $# -eq 0 ] || usage; status ;;
  restart)
    [ $# -eq 1 ] && [[ $1 =~ ^h[0-9]+$ ]] || { echo "lab.sh restart: one host name like h1, not '$*'" >&2; exit 2; }
    check_machine; with_lock; restart "$1" ;;
  base) check_machine; with_lock; prereqs; build_base ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
