#!/usr/bin/env bash
# Makes sure the real tools the tests drive are on this machine (run by `npm test` as pretest).
# Owns only the check and, as root, the apt install; never starts, stops or configures a daemon.
# Postfix is installed for its smtp-source/smtp-sink tools and for private instances the tests
# start themselves (test/helpers/postfix.ts: own config and queue dirs, a loopback port): debconf
# "No configuration" leaves no main.cf, so nothing starts the system master on port 25.
# redis-server is run by the tests themselves (test/helpers/redis-server.ts, a free loopback port);
# on a host with systemd its package may also start the packaged service on 6379, which they never use.
# dnsmasq (the loopback DNS server of the policy tests) comes from dnsmasq-base: the binary, no service.
# dovecot-core: doveadm reads the Maildirs the Maildir courier writes, and Dovecot LMTP is the delivery
# clients' real LMTP peer (test/helpers/mail-peers.ts runs it with its own config on a free port);
# dovecot-lmtpd ships the lmtp service, which no binary on PATH names.
# haproxy: the real load balancer in front of the PROXY protocol tests (run in the foreground with its own config).
# opendkim, spamass-milter (+ spamd) and rspamd: the real milters of the milter client's tests
# (test/helpers/milter-peers.ts runs each in the foreground with its own config on free ports; a
# packaged service they may start on a systemd host is never used).
# clamav-daemon (clamd): the real virus scanner of the clamd check's tests (test/helpers/scanners.ts runs it
# in the foreground with a one-line EICAR database; no freshclam, no packaged service used).
set -euo pipefail

# tool -> Debian package that ships it
tools=(swaks smtp-source smtp-sink postfix openssl python3 redis-server dnsmasq dovecot doveadm haproxy opendkim spamass-milter spamd rspamd clamd)
declare -A package_of=([swaks]=swaks [smtp-source]=postfix [smtp-sink]=postfix [postfix]=postfix [openssl]=openssl [python3]=python3 [redis-server]=redis-server [dnsmasq]=dnsmasq-base [dovecot]=dovecot-core [doveadm]=dovecot-core [haproxy]=haproxy [opendkim]=opendkim [spamass-milter]=spamass-milter [spamd]=spamd [rspamd]=rspamd [clamd]=clamav-daemon)

# smtp-source and dnsmasq live in /usr/sbin, which a non-root PATH often lacks.
search_path="$PATH:/usr/sbin:/sbin"

missing=()
for tool in "${tools[@]}"; do
  PATH="$search_path" command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
done
# swaks --tls needs Perl's TLS modules (a "Recommends" of swaks, so not pulled in by --no-install-recommends).
has_perl_tls() { perl -MIO::Socket::SSL -MNet::SSLeay -e1 >/dev/null 2>&1; }
has_perl_tls || missing+=(libio-socket-ssl-perl libnet-ssleay-perl)
has_dovecot_lmtp() { [ -x /usr/lib/dovecot/lmtp ]; }
has_dovecot_lmtp || missing+=(dovecot-lmtpd)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "test-deps: missing packages the tests need: ${missing[*]}" >&2
  echo "test-deps: install them with:" >&2
  echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "test-deps: installing ${missing[*]}" >&2
if [[ " ${missing[*]} " == *" postfix "* ]]; then
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
fi

install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
}
# Refresh the package lists only when there are none, or when the install cannot find a package.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
  apt-get update </dev/null
  install
elif ! install; then
  apt-get update </dev/null
  install
fi

for tool in "${tools[@]}"; do
  PATH="$search_path" command -v "$tool" >/dev/null 2>&1 || { echo "test-deps: $tool still missing after install" >&2; exit 1; }
done
has_perl_tls || { echo "test-deps: Perl TLS modules (IO::Socket::SSL) still missing after install" >&2; exit 1; }
has_dovecot_lmtp || { echo "test-deps: dovecot-lmtpd still missing after install" >&2; exit 1; }
