#!/bin/sh
# The REAPI clients the remote-execution end-to-end tests drive that Debian 12 lacks
# (BuildStream 2, buildbox-casd, recc, trexe, casupload…) come from Debian testing: this
# script builds a minimal Debian testing root filesystem holding them, and runs commands in it.
#
#   clients-root.sh create ROOT         build ROOT unless it is already complete (needs root,
#                                       debootstrap and the Debian mirror; a few minutes)
#   clients-root.sh check ROOT          exit 0 when ROOT is complete
#   clients-root.sh run ROOT CMD [ARG…] run CMD inside ROOT (clean environment, HOME=/root)
#
# `create` exits 3 with a one-line reason on stderr when it cannot even start (not root, no
# debootstrap, mirror unreachable): the tests skip then. Any other failure is an error.
# A root is complete when its stamp file holds this script's RECIPE; an interrupted or older
# build is finished or redone on the next `create`. Concurrent `create`s serialise on ROOT.lock.
#
# `run` shares the host's network (127.0.0.1 inside is the host's loopback). It mounts
# nothing in the caller's mount namespace: a private one gets ROOT bound on itself, /proc,
# /sys, /dev, then pivot_root (not chroot: the kernel refuses new user namespaces to chrooted
# processes, and bubblewrap needs them).
set -eu
RECIPE='testing minbase: buildstream python3-buildstream-plugins buildbox bazel-bootstrap bubblewrap fuse3 busybox-static gcc g++ libc6-dev git ca-certificates; v2'
PACKAGES='buildstream python3-buildstream-plugins buildbox bazel-bootstrap bubblewrap fuse3 busybox-static gcc g++ libc6-dev git ca-certificates'
# The Debian archive the host's apt already uses (no mirror is written here): the first
# non-security entry of its deb822 .sources files, else of its one-line sources.list files.
host_mirror() {
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush() { if (u != "" && s !~ /security/ && t ~ /(^| )deb( |$)/) { print u; found = 1; exit } u = s = t = "" }
         /^[ \t]*$/ { flush(); next }
         /^Types:/ { t = $0 } /^URIs:/ { u = $2 } /^Suites:/ { s = $0 }
         END { if (!found) flush() }' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }'
}
MIRROR=${REEXEC_DEBIAN_MIRROR:-$(host_mirror | head -n 1)}
SUITE=${REEXEC_DEBIAN_SUITE:-testing}

usage() { echo "usage: clients-root.sh create|check|run ROOT [CMD ARG…]" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 R=$2; shift 2
case $R in /*) ;; *) R=$(pwd)/$R ;; esac
[ "$R" != / ] || { echo "ROOT must not be /" >&2; exit 2; }
STAMP=.reexec-clients-root

complete() { [ -f "$R/$STAMP" ] && [ "$(cat "$R/$STAMP")" = "$RECIPE" ]; }
cannot() { echo "$*" >&2; exit 3; }

# Runs "$@" inside ROOT; everything it mounts lives and dies with its private mount namespace.
inside() {
  unshare --mount --propagation private /bin/sh -c '
    set -e; R=$1; shift
    mount --bind "$R" "$R"
    mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
    mount --rbind /sys "$R/sys"
    mount --rbind /dev "$R/dev"
    mkdir -p "$R/dev/shm" && mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
    mkdir -p "$R/.oldroot"
    cd "$R"; pivot_root . .oldroot; cd /; umount -l /.oldroot
    exec /usr/bin/env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/sh LANG=C.UTF-8 TERM=dumb \
      DEBIAN_FRONTEND=noninteractive PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"' \
    sh "$R" "$@"
}

create() {
  [ "$(id -u)" = 0 ] || cannot "building the clients root needs root (debootstrap, mounts)"
  command -v debootstrap >/dev/null 2>&1 || cannot "debootstrap is not installed (apt-get install debootstrap)"
  command -v unshare >/dev/null 2>&1 || cannot "unshare (util-linux) is not installed"
  [ -n "$MIRROR" ] || cannot "no Debian archive in the host's apt sources: set REEXEC_DEBIAN_MIRROR"
  mkdir -p "$(dirname "$R")"
  exec 9>"$R.lock"
  flock 9
  complete && return 0
  wget -q -T 20 -t 2 -O /dev/null "$MIRROR/dists/$SUITE/Release" 2>/dev/null ||
    cannot "the Debian mirror $MIRROR is unreachable (set REEXEC_DEBIAN_MIRROR to use another)"
  # A debootstrap that did not finish leaves ROOT/debootstrap behind: start over.
  if [ ! -x "$R/usr/bin/apt-get" ] || [ -d "$R/debootstrap" ]; then
    rm -rf "$R"
    # The "sid" script serves testing as well (a Debian 12 debootstrap knows no newer name).
    debootstrap --variant=minbase "$SUITE" "$R" "$MIRROR" sid
  fi
  rm -f "$R/$STAMP"
  # Mirrors' Release files can be older than a skewed clock; no daemons may start in there.
  echo 'Acquire::Check-Valid-Until "false";' > "$R/etc/apt/apt.conf.d/99no-check-valid-until"
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d" && chmod 755 "$R/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || true
  inside apt-get -q update
  # shellcheck disable=SC2086
  inside apt-get -q install -y --no-install-recommends $PACKAGES
  inside apt-get clean
  echo "$RECIPE" > "$R/$STAMP"
}

case $cmd in
  create) create ;;
  check) complete ;;
  run) complete || { echo "clients root $R is not built: run clients-root.sh create $R" >&2; exit 2; }; inside "$@" ;;
  *) usage ;;
esac
