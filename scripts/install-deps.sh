#!/usr/bin/env bash
# Installs the Debian packages mailferry's demo and tests need: real Dovecot IMAP servers
# (with the LDAP user database driver), a real OpenLDAP slapd and a real PostgreSQL 15 (for the
# shared state), started by the test kit in temporary directories, never as system services;
# headless chromium with its WebDriver and Firefox ESR, for the web console's tests; and a Samba 4
# Active Directory domain controller (provisioned by the test kit into a temporary directory, never
# the system one).
#
# Cyrus IMAP 3.6 too, as a second kind of real IMAP server: Debian's cyrus-imapd conflicts with
# dovecot-imapd as a package (both are an "imap-server"), and cyrus-common wants a mail transport
# agent, so the two Cyrus packages are never installed: they are fetched with `apt-get download`
# and unpacked with `dpkg -x` into a private root, $MAILFERRY_CYRUS_ROOT (default
# /opt/mailferry-cyrus), which the test kit runs them from (daemons in usr/lib/cyrus/bin/, their
# own libraries in usr/lib/<arch>/ through LD_LIBRARY_PATH). The libraries they need that are not
# there yet, and sasl2-bin (saslpasswd2, for the test users' passwords), are ordinary packages
# installed normally; apt never removes Dovecot.
# As root it installs what is missing; as a normal user it says what to install.
set -euo pipefail

packages=(dovecot-core dovecot-imapd dovecot-ldap slapd ldap-utils postgresql openssl chromium chromium-driver
  firefox-esr samba samba-ad-dc samba-ad-provision python3-samba ldb-tools winbind
  sasl2-bin libsasl2-modules libsasl2-modules-db libical3 libpcre3 libxapian30 libzephyr4 libclamav12)
# Unpacked privately (see above), never installed.
cyrus_packages=(cyrus-common cyrus-imapd)
cyrus_root=${MAILFERRY_CYRUS_ROOT:-/opt/mailferry-cyrus}
# Written last by a complete unpacking: the packages and versions it holds.
cyrus_stamp=$cyrus_root/mailferry-unpacked
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
cyrus_missing=0
[[ -s $cyrus_stamp && -x $cyrus_root/usr/lib/cyrus/bin/master ]] || cyrus_missing=1
if [[ ${#missing[@]} -eq 0 && $cyrus_missing -eq 0 ]]; then
  echo "install-deps: already installed: ${packages[*]}; Cyrus unpacked in $cyrus_root" >&2
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  if [[ $cyrus_missing -eq 1 ]]; then
    echo "mailferry's tests need Cyrus IMAP unpacked in $cyrus_root: run $0 as root" >&2
  fi
  [[ ${#missing[@]} -eq 0 ]] && exit 1
  echo "mailferry needs these Debian packages: ${missing[*]}" >&2
  if [[ " ${missing[*]} " == *" slapd "* ]]; then
    echo "install them as root: echo \"slapd slapd/no_configuration boolean true\" |" \
      "debconf-set-selections; DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}" >&2
  else
    echo "install them as root: apt-get install -y ${missing[*]}" >&2
  fi
  exit 1
fi

[[ ${#missing[@]} -eq 0 ]] || echo "installing ${missing[*]} (services stay stopped: the tests start their own servers)" >&2
# Keep apt from starting the system dovecot (ports 143/993), slapd (389), samba/winbind (389/636,
# 445, 88, 53) and postgresql (5432; its package still creates the cluster "15 main" on disk,
# which the tests never use).
remove_on_exit=()
trap 'rm -rf "${remove_on_exit[@]}"' EXIT
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  remove_on_exit+=(/usr/sbin/policy-rc.d)
fi
export DEBIAN_FRONTEND=noninteractive
# Without this, installing slapd creates (and starts) a system directory of its own; the
# tests write their own slapd.conf.
echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
apt-get update -qq
if [[ ${#missing[@]} -gt 0 ]]; then
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ $cyrus_missing -eq 1 ]]; then
  echo "unpacking ${cyrus_packages[*]} into $cyrus_root (not installed: cyrus-imapd conflicts" \
    "with dovecot-imapd)" >&2
  work=$(mktemp -d)
  remove_on_exit+=("$work")
  # apt-get download runs as _apt, which must be able to write there.
  chown _apt "$work" 2>/dev/null || true
  (cd "$work" && apt-get download -qq "${cyrus_packages[@]}")
  mkdir -p "$work/root"
  for p in "${cyrus_packages[@]}"; do
    deb=("$work/${p}"_*.deb)
    dpkg -x "${deb[0]}" "$work/root"
    dpkg-deb -f "${deb[0]}" Package Version | paste -sd' ' >>"$work/root/mailferry-unpacked"
  done
  # Every library the daemons link must be found: the system's, or Cyrus's own beside them.
  libdirs=$(find "$work/root/usr/lib" -name 'libcyrus_min.so*' -printf '%h\n' | sort -u | paste -sd:)
  unresolved=$(for b in master imapd ctl_cyrusdb; do
    LD_LIBRARY_PATH=$libdirs ldd "$work/root/usr/lib/cyrus/bin/$b"; done | grep 'not found' || true)
  if [[ -n $unresolved ]]; then
    echo "install-deps: the unpacked Cyrus lacks libraries (add their packages to \$packages):" >&2
    echo "$unresolved" >&2
    exit 1
  fi
  rm -rf "$cyrus_root"
  mkdir -p "$(dirname "$cyrus_root")"
  mv "$work/root" "$cyrus_root"
  chmod 755 "$cyrus_root"
  echo "Cyrus unpacked: $(paste -sd, "$cyrus_stamp")" >&2
fi
