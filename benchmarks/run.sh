#!/usr/bin/env bash
# Run every benchmark in benchmarks/ in one go, as root, on this machine:
#   sudo bash benchmarks/run.sh
# bench_site.py deploys a fresh copy of inventories/local (new PKI) and keeps it deployed
# for bench_throughput.py; the copy and the throwaway plaintext brokers are removed at the
# end. This reconfigures the machine's RabbitMQ, Redis and worker: don't run it while live
# tests use the deployment. Each script also runs alone (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
export PATH="$PWD/.venv/bin:$PATH"
work=$(mktemp -d -t celery-provision-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== bench_pki.py"
# Issuing (N = 1000), inventory loading beside ansible-core's own parse (10,000 workers) and
# the CLI's certs issue / re-run / render / export at 100, 1,000 and 10,000 workers (~5 min on
# 2 quiet cores; the first issue at 10,000 is not measured: one RSA signing key per worker).
"$py" benchmarks/bench_pki.py --parse-n 10000 --scale 100,1000,10000
echo
echo "== bench_site.py"
"$py" benchmarks/bench_site.py --workdir "$work/site"
echo
echo "== bench_throughput.py"
"$py" benchmarks/bench_throughput.py -i "$work/site/inventories/local"
