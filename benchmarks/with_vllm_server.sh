#!/usr/bin/env bash
# Run a command while a `trl vllm-serve` server of MODEL listens on PORT (the GPU check's SDPO
# server-mode run): start it, wait until /health/ answers (at most 5 minutes), run the command,
# stop the server, exit with the command's status.
#
#   bash benchmarks/with_vllm_server.sh MODEL PORT COMMAND...
set -uo pipefail
MODEL=$1 PORT=$2
shift 2
TRL=${TRL:-$(dirname "${PYTHON:-.venv/bin/python}")/trl}
"$TRL" vllm-serve --model "$MODEL" --port "$PORT" --gpu_memory_utilization 0.3 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
for _ in $(seq 300); do
  if "${PYTHON:-.venv/bin/python}" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health/', timeout=2)" 2>/dev/null; then
    "$@"
    exit $?
  fi
  if ! kill -0 $SERVER 2>/dev/null; then echo "with_vllm_server: the server exited" >&2; exit 1; fi
  sleep 1
done
echo "with_vllm_server: no answer from port $PORT in 5 minutes" >&2
exit 1
