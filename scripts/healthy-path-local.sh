#!/usr/bin/env bash
# The healthy path on the defaults, with real nginx (issue 12's acceptance): `switchback local`
# as a user starts it (3 pods, 3m bake, hold when inconclusive), 50 clean requests/s per pod on
# loopback, a harmless add_header commit. Prints the events; takes about 12 minutes.
# Needs nginx (make tools).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --bin switchback
BIN=${BIN:-$PWD/target/debug/switchback}
W=$(mktemp -d /tmp/healthy-path.XXXX)
git init -q -b main "$W/repo"
site() { cat <<CONF
events {}
http {
    upstream app { server 127.0.0.1:9001; }
    server {
        listen 8080;
        location / { $1proxy_pass http://app; }
    }
}
CONF
}
site "" > "$W/repo/nginx.conf"
git -C "$W/repo" add . && git -C "$W/repo" -c user.name=t -c user.email=t@t commit -qm v0
"$BIN" local --repo "$W/repo" --upstream app=127.0.0.1:9001 --subnet 0.77 > "$W/events.log" 2>&1 &
LOCAL=$!
trap 'kill $LOCAL $LOAD 2>/dev/null || true' EXIT
until grep -q '^adopted' "$W/events.log"; do sleep 1; done
# 50 requests/s per pod for at most 20 minutes, loopback only.
python3 - <<'PY' &
import time, urllib.request, threading
pods = ["127.0.77.10", "127.0.77.11", "127.0.77.12"]
stop = time.time() + 1200
def user(ip):
    n = 0
    start = time.time()
    while time.time() < stop:
        try:
            urllib.request.urlopen(f"http://{ip}:8080/", timeout=2).read()
        except Exception:
            pass
        n += 1
        delay = start + n / 50 - time.time()
        if delay > 0:
            time.sleep(delay)
for ip in pods:
    threading.Thread(target=user, args=(ip,), daemon=True).start()
time.sleep(1200)
PY
LOAD=$!
sleep 20
site "add_header X-Release v1; " > "$W/repo/nginx.conf"
git -C "$W/repo" -c user.name=t -c user.email=t@t commit -qam "a header"
start=$(date +%s)
until grep -qE '^(Promoted|RolledBack|StepHeld)' "$W/events.log"; do sleep 2; [ $(( $(date +%s) - start )) -lt 1200 ] || break; done
# A held step is said, then the next look may pass it: wait for the end.
until grep -qE '^(Promoted|RolledBack)' "$W/events.log"; do sleep 2; [ $(( $(date +%s) - start )) -lt 1200 ] || break; done
echo "after $(( $(date +%s) - start )) s:"
cat "$W/events.log"
