#!/usr/bin/env bash
# Retakes docs/screenshots/{runs-drifted,failed-run,drifted-run,worker-run-logs}.png: the production shape
# on one machine (make server, make worker on a clone of this checkout), a clean nightly, a
# drifted nightly and a score run that fails (nothing to score), all through the deployments,
# then headless Chromium on the Prefect UI. Needs Debian's chromium (apt-get install chromium)
# and Node.js; playwright-core is installed from the npm registry into a temporary folder.
# Usage: docs/screenshots/shoot.sh   (about 4 minutes; .venv from make install)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TMP=$(mktemp -d)
PORT=${PORT:-4311}
export PREFECT_HOME=$TMP/prefect PREFECT_API_URL=http://127.0.0.1:$PORT/api
export PREFECT_SERVER_ANALYTICS_ENABLED=false PATH=$ROOT/.venv/bin:$PATH
export BATCHPRED_CONFIG=configs/base.yaml,configs/datasets/churn.yaml,configs/shots.yaml
trap 'kill -- -$SERVER -$WORKER 2>/dev/null || true' EXIT

git clone -q "$ROOT" "$TMP/ws" && ln -s "$ROOT/.venv" "$TMP/ws/.venv"
cd "$TMP/ws"
# 10 days, the last one drifted (demo.drift_start): the nightly of day 9 is clean, day 10's not
cat > configs/shots.yaml <<YAML
demo: {days: 10, rows_per_day: 2000, unlabelled_days: 1, drift_start: 2026-10-10}
training: {window_days: 6, valid_days: 1, holdout_days: 1, num_boost_round: 60}
YAML
batchpred demo
# make -o: the linked .venv is up to date, whatever the clone's file times say
set -m
make -o .venv/.runtime server PORT=$PORT > "$TMP/server.log" 2>&1 & SERVER=$!
until curl -sf "$PREFECT_API_URL/health" > /dev/null; do sleep 1; done
make -o .venv/.runtime worker PORT=$PORT > "$TMP/worker.log" 2>&1 & WORKER=$!
until prefect deployment inspect nightly/nightly > /dev/null 2>&1; do sleep 1; done
until prefect deployment inspect ingest/ingest > /dev/null 2>&1; do sleep 1; done

run() {  # prefect deployment run, then wait until the run is final; prints its id
  local id
  id=$(prefect deployment run "$@" 2>&1 | sed -n 's/.*UUID: *\([0-9a-f-]*\).*/\1/p')
  until curl -sf "$PREFECT_API_URL/flow_runs/$id" \
      | grep -qE '"type":"(COMPLETED|FAILED|CRASHED|CANCELLED)"'; do sleep 2; done
  curl -sf "$PREFECT_API_URL/flow_runs/$id" | python -c 'import json, sys; r = json.load(sys.stdin)
print(r["name"], r["state"]["name"], r["state"]["message"], sep=": ", file=sys.stderr)'
  echo "$id"
}
run nightly/nightly --param day=2026-10-09 > /dev/null
DRIFTED=$(run nightly/nightly)
FAILED=$(run score/score --param day=2031-01-01)
sleep 5  # the last logs reach the API as the run exits
SCORED=$(curl -sf -H 'Content-Type: application/json' -d \
    '{"flow_runs": {"name": {"any_": ["score-churn-2026-10-10"]}}}' "$PREFECT_API_URL/flow_runs/filter" \
    | python -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')

cd "$TMP" && npm install --silent playwright-core@1
NODE_PATH=$TMP/node_modules node "$HERE/shoot.cjs" "http://127.0.0.1:$PORT" "$DRIFTED" "$FAILED" "$SCORED" "$HERE"
