#!/bin/sh
# Install what the demo, the tests and the benchmarks need: Debian/Ubuntu packages
# (MariaDB server and client, systemd, D-Bus, man; polkitd and nodejs to test the polkit
# rule in systemd/; Prometheus with promtool and Alertmanager, which the tests start on
# loopback to scrape reactor and receive its alerts), then a virtualenv in .venv with reactor.
# Safe to run again: it installs only what is missing.
set -eu
cd "$(dirname "$0")/.."

need=""
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for pkg in mariadb-server mariadb-client systemd dbus util-linux man-db groff-base python3-venv \
           polkitd nodejs openssl prometheus prometheus-alertmanager; do
  have "$pkg" || need="$need $pkg"
done
if [ -n "$need" ]; then
  echo "bootstrap: installing$need" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # the packaged services (MariaDB, Prometheus, Alertmanager) must not start: the tests
  # start their own throwaway servers on loopback. policy-rc.d (invoke-rc.d(8)) tells the
  # packages' scripts not to start them, on a machine that runs services at all.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    trap '$SUDO rm -f "$guard"' EXIT
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee $guard >/dev/null && $SUDO chmod 755 $guard
  fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
  [ -z "$guard" ] || { $SUDO rm -f "$guard"; trap - EXIT; }
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "bootstrap: reactor needs Python >= 3.11 ($PY is $("$PY" -V 2>&1))" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.reactor-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing reactor and its test tools into .venv" >&2
  .venv/bin/pip install -q --disable-pip-version-check -e ".[test,bench]"
  touch "$stamp"
fi
