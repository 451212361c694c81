#!/bin/bash
# provision.sh ROLE ADDRESS — make the machine it runs on one libvirt migration host of a mig2 lab.
#
# Host-agnostic: the same script provisions each host of the namespace lab (test/integration/lab,
# run inside the host's namespaces, where /etc is a private overlay and /run a private tmpfs) and
# each VM of vagrant/. It writes only under /etc (hostname, hosts, libvirt, pki) and $LAB_CA_DIR,
# and starts libvirt. Run as root. Idempotent.
#
#   ROLE     short host name, e.g. hosta; the host becomes ROLE.$LAB_DOMAIN
#   ADDRESS  the IPv4 address the other hosts reach it at; libvirtd listens there
#
# Environment:
#   LAB_DOMAIN=lab              DNS domain of the lab's hosts
#   LAB_HOSTS="IP NAME ..."     every lab host as pairs (this one included), written to /etc/hosts
#                               (libvirt's destination advertises its host name for migration)
#   LAB_CA_DIR=/var/lib/mig2-lab/ca
#                               the lab's CA, shared by all hosts (vagrant: a synced folder); the
#                               first host to run creates it. Test CA only: its key sits beside it.
#   LAB_START=auto              auto: systemd if it runs, else start the daemons by hand;
#                               systemd | manual | no
#   LAB_QEMU_AS_ROOT=0          1: QEMU runs as root (postcopy needs it where
#                               vm.unprivileged_userfaultfd=0)
#   LAB_SECURITY_DRIVER=none    qemu.conf security_driver (none: no AppArmor/SELinux in a lab)
#
# Result: libvirtd listening on ADDRESS, tcp (16509, no auth) and tls (16514, x509); x509 files
# in libvirt's and QEMU's standard places (/etc/pki/CA, /etc/pki/libvirt, /etc/pki/qemu: the
# layout mig2 uses too), each host with a server and a client certificate for ROLE.$LAB_DOMAIN,
# ROLE and ADDRESS; a host_uuid derived from the host name (two hosts must not share one, or
# libvirt refuses to migrate: "Attempt to migrate guest to the same host").
set -euo pipefail

[ $# -eq 2 ] || { sed -n '2,30p' "$0" >&2; exit 2; }
ROLE=$1 ADDR=$2
DOMAIN=${LAB_DOMAIN:-lab}
FQDN=$ROLE.$DOMAIN
CA=${LAB_CA_DIR:-/var/lib/mig2-lab/ca}
START=${LAB_START:-auto}
log() { echo "provision[$ROLE]: $*" >&2; }

# --- name and address book ---------------------------------------------------------------------
hostname "$FQDN"
echo "$FQDN" > /etc/hostname
{
  grep -v ' # mig2-lab$' /etc/hosts 2>/dev/null || true
  set -- ${LAB_HOSTS:-$ADDR $ROLE}
  while [ $# -ge 2 ]; do echo "$1 $2.$DOMAIN $2 # mig2-lab"; shift 2; done
} > /etc/hosts.mig2-lab
cat /etc/hosts.mig2-lab > /etc/hosts && rm -f /etc/hosts.mig2-lab

# --- certificates (one lab CA; a server and a client certificate per host) ----------------------
mkdir -p "$CA"
(
  flock 9
  if [ ! -s "$CA/ca-cert.pem" ]; then
    log "creating the lab CA in $CA"
    certtool --generate-privkey --bits 2048 --outfile "$CA/ca-key.pem" 2>/dev/null
    printf 'cn = mig2 lab CA\nca\ncert_signing_key\nexpiration_days = 30\n' > "$CA/ca.info"
    certtool --generate-self-signed --load-privkey "$CA/ca-key.pem" --template "$CA/ca.info" \
      --outfile "$CA/ca-cert.pem" 2>/dev/null
  fi
) 9>"$CA/.lock"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
for role in server client; do
  certtool --generate-privkey --bits 2048 --outfile "$work/$role-key.pem" 2>/dev/null
  { echo "organization = mig2 lab"; echo "cn = $FQDN"; echo "dns_name = $FQDN"; echo "dns_name = $ROLE"
    echo "ip_address = $ADDR"; echo "expiration_days = 30"; echo "encryption_key"; echo "signing_key"
    [ $role = server ] && echo "tls_www_server" || echo "tls_www_client"; } > "$work/$role.info"
  certtool --generate-certificate --load-privkey "$work/$role-key.pem" --load-ca-certificate "$CA/ca-cert.pem" \
    --load-ca-privkey "$CA/ca-key.pem" --template "$work/$role.info" --outfile "$work/$role-cert.pem" 2>/dev/null
done
mkdir -p /etc/pki/CA /etc/pki/libvirt/private /etc/pki/qemu
install -m 644 "$CA/ca-cert.pem" /etc/pki/CA/cacert.pem
install -m 644 "$work/server-cert.pem" /etc/pki/libvirt/servercert.pem
install -m 600 "$work/server-key.pem" /etc/pki/libvirt/private/serverkey.pem
install -m 644 "$work/client-cert.pem" /etc/pki/libvirt/clientcert.pem
install -m 600 "$work/client-key.pem" /etc/pki/libvirt/private/clientkey.pem
install -m 644 "$CA/ca-cert.pem" /etc/pki/qemu/ca-cert.pem
for role in server client; do
  install -m 644 "$work/$role-cert.pem" /etc/pki/qemu/$role-cert.pem
  install -m 640 "$work/$role-key.pem" /etc/pki/qemu/$role-key.pem
  chgrp libvirt-qemu /etc/pki/qemu/$role-key.pem 2>/dev/null || true   # QEMU reads its keys
done
# Without dh-params.pem, every server-side tls-creds-x509 QEMU creates (each incoming migration)
# generates 2048-bit DH parameters first: 0.3-0.6 s. The standard RFC 7919 group costs nothing.
[ -s /etc/pki/qemu/dh-params.pem ] || certtool --get-dh-params --sec-param medium 2>/dev/null |
  sed -n '/BEGIN DH PARAMETERS/,/END DH PARAMETERS/p' > /etc/pki/qemu/dh-params.pem
chmod 644 /etc/pki/qemu/dh-params.pem

# --- libvirt configuration ----------------------------------------------------------------------
uuid=$(printf %s "$FQDN" | md5sum | sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-4\3-8\4-\5/')
mkdir -p /etc/libvirt
cat > /etc/libvirt/libvirtd.conf <<EOF
# written by mig2's lab provision.sh for $FQDN
listen_tls = 1
listen_tcp = 1
listen_addr = "$ADDR"
auth_tcp = "none"
auth_tls = "none"
host_uuid = "$uuid"
log_filters = "1:qemu.qemu_migration 1:qemu.qemu_monitor 1:util.hook 3:*"
log_outputs = "1:file:/var/log/libvirt/libvirtd.log"
EOF
cat > /etc/libvirt/qemu.conf <<EOF
# written by mig2's lab provision.sh for $FQDN
security_driver = "${LAB_SECURITY_DRIVER:-none}"
default_tls_x509_cert_dir = "/etc/pki/qemu"
default_tls_x509_verify = 1
EOF
if [ "${LAB_QEMU_AS_ROOT:-0}" = 1 ]; then
  printf 'user = "root"\ngroup = "root"\nclear_emulator_capabilities = 0\n' >> /etc/libvirt/qemu.conf
fi

# --- daemons ------------------------------------------------------------------------------------
if [ "$START" = auto ]; then
  if [ -d /run/systemd/system ]; then START=systemd; else START=manual; fi
fi
case $START in
systemd)  # socket activation: the tcp/tls sockets are units (listen_* above are then ignored)
  systemctl stop libvirtd.service >/dev/null 2>&1 || true
  systemctl enable --now virtlogd.socket libvirtd.socket libvirtd-tcp.socket libvirtd-tls.socket
  systemctl restart libvirtd.service ;;
manual)   # no systemd (containers, the namespace lab): libvirt's own daemon mode
  mkdir -p /run/libvirt /var/log/libvirt /var/lib/libvirt /var/cache/libvirt
  [ -s /run/virtlogd.pid ] && kill -0 "$(cat /run/virtlogd.pid)" 2>/dev/null ||
    /usr/sbin/virtlogd -d </dev/null >/dev/null 2>&1
  if [ -s /run/libvirtd.pid ] && kill -0 "$(cat /run/libvirtd.pid)" 2>/dev/null; then
    pid=$(cat /run/libvirtd.pid); kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  fi
  /usr/sbin/libvirtd -d --listen </dev/null >/dev/null 2>&1 ;;
no) exit 0 ;;
*) log "LAB_START=$START: want auto, systemd, manual or no"; exit 2 ;;
esac
for _ in $(seq 200); do
  virsh -q -c qemu:///system version >/dev/null 2>&1 && { log "libvirtd is up on $ADDR"; exit 0; }
  sleep 0.05
done
log "libvirtd did not answer within 10 s"; exit 1
