#!/usr/bin/env bash
# The whole test suite on a fresh machine: install what it needs (pip and apt), start the
# single-node SLURM on loopback, run pytest, stop SLURM again. Needs root (apt, slurmd).
#   bash scripts/test.sh              # everything
#   bash scripts/test.sh tests/core   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

# RADICAL-Pilot's bootstrap pings a public address when these exist: refuse to go on.
for tool in ping dig; do
  if command -v "$tool" >/dev/null 2>&1; then
    echo "scripts/test.sh: '$tool' is installed; remove it (apt-get purge iputils-ping dnsutils bind9-dnsutils) before running RADICAL-Pilot tests" >&2
    exit 1
  fi
done

# SLURM, munge, OpenMPI, the Torque-style qsub front-end (apt, only what is missing)
bash scripts/slurm/up.sh
trap 'bash scripts/slurm/down.sh || true' EXIT

python3 -m pip install --quiet --disable-pip-version-check -e '.[all]'

export RADICAL_PROFILE=FALSE RADICAL_DEFAULT_IFACE=lo
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
python3 -m pytest -p no:cacheprovider -ra "$@"
