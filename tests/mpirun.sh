#!/bin/sh
# Runs a multi-rank test: tests/mpirun.sh NP program [args...]
# --oversubscribe: tests use more ranks than the 2 cores CI has. --bind-to none: with
# oversubscription, binding ranks to cores makes them fight over one core.
# --allow-run-as-root: CI and development containers run as root.
np=$1
shift
root_flag=""
[ "$(id -u)" = "0" ] && root_flag="--allow-run-as-root"
exec mpirun $root_flag --oversubscribe --bind-to none -np "$np" "$@"
