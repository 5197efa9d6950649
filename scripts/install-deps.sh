#!/usr/bin/env bash
# Installs the Debian packages mailferry's demo and tests need: real Dovecot IMAP servers
# (with the LDAP user database driver), a real OpenLDAP slapd and a real PostgreSQL 15 (for the
# shared state), started by the test kit in temporary directories, never as system services;
# headless chromium with its WebDriver and Firefox ESR, for the web console's tests; and a Samba 4
# Active Directory domain controller (provisioned by the test kit into a temporary directory, never
# the system one).
# As root it installs what is missing; as a normal user it says what to install.
set -euo pipefail

packages=(dovecot-core dovecot-imapd dovecot-ldap slapd ldap-utils postgresql openssl chromium chromium-driver
  firefox-esr samba samba-ad-dc samba-ad-provision python3-samba ldb-tools winbind)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: already installed: ${packages[*]}" >&2
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "mailferry needs these Debian packages: ${missing[*]}" >&2
  if [[ " ${missing[*]} " == *" slapd "* ]]; then
    echo "install them as root: echo \"slapd slapd/no_configuration boolean true\" |" \
      "debconf-set-selections; DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}" >&2
  else
    echo "install them as root: apt-get install -y ${missing[*]}" >&2
  fi
  exit 1
fi

echo "installing ${missing[*]} (services stay stopped: the tests start their own servers)" >&2
# Keep apt from starting the system dovecot (ports 143/993), slapd (389), samba/winbind (389/636,
# 445, 88, 53) and postgresql (5432; its package still creates the cluster "15 main" on disk,
# which the tests never use).
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
# Without this, installing slapd creates (and starts) a system directory of its own; the
# tests write their own slapd.conf.
echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
