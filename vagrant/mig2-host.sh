#!/bin/bash
# mig2-host.sh ROLE ADDRESS — make a Debian 12 machine one host of the vagrant lab: libvirt,
# mig2 built from the checkout, the agent as a systemd service, the qemu hook, and the test
# guest's image (defined and started on src). Run as root; idempotent. The Vagrantfile runs it
# in each VM; it suits any Debian 12 machine with systemd.
#
#   ROLE     short host name (src, dst): the host becomes ROLE.$LAB_DOMAIN
#   ADDRESS  the IPv4 address the other host reaches it at (the private network)
#
# Environment: MIG2_CHECKOUT (the mig2 checkout, default /mig2); MIG2_GUEST: start (define the
# test guest "web" and start it), define, image (only its kernel and initrd, which every host a
# guest migrates to needs too) or none; MIG2_GO_VERSION (default: go.mod's); and provision.sh's
# LAB_HOSTS, LAB_CA_DIR, LAB_DOMAIN.
#
# The libvirt part is provision.sh, the script test/integration/lab runs in each namespace host
# on every `make test`: one script configures both labs.
set -euo pipefail

[ $# -eq 2 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
ROLE=$1 ADDR=$2
SRC=${MIG2_CHECKOUT:-/mig2}
GUEST=${MIG2_GUEST:-image}
STATE=/var/lib/mig2-lab          # this host's own build products (never in the shared checkout)
export DEBIAN_FRONTEND=noninteractive
log() { echo "mig2-host[$ROLE]: $*" >&2; }

# --- packages: mig2's build and runtime needs (scripts/deps.sh), and what this script uses ------
log "packages"
apt-get update -qq
apt-get install -y -qq --no-install-recommends curl ca-certificates make rsync >/dev/null
"$SRC/scripts/deps.sh"

# --- Go, the version go.mod asks for -------------------------------------------------------------
gover=${MIG2_GO_VERSION:-$(awk '$1 == "toolchain" { sub(/^go/, "", $2); print $2; exit }' "$SRC/go.mod")}
[ -n "$gover" ] || gover=$(awk '$1 == "go" { print $2; exit }' "$SRC/go.mod")
case $gover in *.*.*) ;; *) gover=$gover.0 ;; esac
if ! /usr/local/go/bin/go version 2>/dev/null | grep -q " go$gover "; then
  log "installing Go $gover"
  rm -rf /usr/local/go
  curl -fsSL "https://go.dev/dl/go$gover.linux-amd64.tar.gz" | tar -C /usr/local -xz
fi
export PATH=/usr/local/go/bin:$PATH GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

# --- mig2: built from the checkout, installed with the agent's unit (make install) ---------------
log "building mig2 from $SRC"
mkdir -p "$STATE"
make -C "$SRC" --no-print-directory install BIN="$STATE/mig2" PREFIX=/usr/local >/dev/null
systemctl daemon-reload

# --- the qemu hook, before provision.sh restarts libvirtd (libvirtd reads hooks at start) -------
# --when-agent-down refuse: with the agent's default --hook-policy require-v2, a stopped agent
# must not let a plain `virsh migrate` slip through.
mig2 hook install --when-agent-down refuse

# --- libvirt: the script the namespace lab runs too ----------------------------------------------
LAB_START=systemd bash "$SRC/vagrant/provision.sh" "$ROLE" "$ADDR"

# --- the agent, as a systemd service (packaging/mig2-agent.service) ------------------------------
cat > /etc/default/mig2-agent <<CONF
# written by mig2's vagrant/mig2-host.sh for $ROLE; read by mig2-agent.service
MIG2_AGENT_ARGS="--listen $ADDR:16520 --tls-dir /etc/pki/qemu --libvirt qemu:///system"
CONF
systemctl enable mig2-agent.service
systemctl restart mig2-agent.service
for _ in $(seq 50); do systemctl is-active -q mig2-agent.service && [ -S /run/mig2/hook.sock ] && break; sleep 0.2; done
systemctl is-active -q mig2-agent.service || { journalctl -u mig2-agent -n 20 --no-pager >&2; exit 1; }
log "mig2 agent listening on $ADDR:16520"

# --- the test guest (test/guest: `make guest`'s builder, into this host's own directory) --------
[ "$GUEST" = none ] && exit 0
img=$STATE/guest
if [ ! -s "$img/vmlinux" ] || [ ! -s "$img/initrd.cpio.gz" ]; then
  log "building the test guest into $img"
  MIG2_GUEST_OUT=$img GO=/usr/local/go/bin/go "$SRC/test/guest/build.sh" all
fi
chmod 755 "$STATE" "$img"; chmod 644 "$img/vmlinux" "$img/initrd.cpio.gz"
[ "$GUEST" = image ] && exit 0

type=qemu; [ -c /dev/kvm ] && type=kvm
cat > "$STATE/web.xml" <<XML
<!-- the mig2 test guest: fills 128 MiB it can verify, dirties 10 MiB/s, a heartbeat every 2 s
     on its serial console (virsh console web) -->
<domain type='$type'>
  <name>web</name>
  <memory unit='MiB'>384</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$img/vmlinux</kernel>
    <initrd>$img/initrd.cpio.gz</initrd>
    <cmdline>console=ttyS0 pti=on quiet panic=-1 qb_mem=128 qb_rate=10 qb_hb=2000</cmdline>
  </os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
XML
virsh -q define "$STATE/web.xml" >/dev/null
log "defined the test guest web ($type)"
if [ "$GUEST" = start ] && [ "$(virsh -q domstate web)" != running ]; then
  virsh -q start web >/dev/null
  log "started web: watch it with 'virsh console web' (Ctrl-] leaves)"
fi
