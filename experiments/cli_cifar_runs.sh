#!/usr/bin/env bash
# `bash experiments/cli_cifar_runs.sh OUT.txt MODEL SEED ARGS...`: one CIFAR-10 `gzsq quantize` job through the
# command, its report appended to OUT.txt. The same job as cli_224_runs.sh, which picks the data by model.
exec bash "$(dirname "$0")/cli_224_runs.sh" "$@"
