#!/usr/bin/env bash
# Submits a kvscope sweep to Slurm as an N-task job array (one shard per task) plus a merge job
# that runs once every shard has succeeded and writes OUTDIR/merged.sqlite.
#
# Usage: scripts/slurm/submit_sweep.sh SPEC OUTDIR N [extra sbatch args...]
#   e.g. scripts/slurm/submit_sweep.sh study.json /shared/study 16 --cpus-per-task=2 --time=2:00:00
# The extra sbatch args go to both jobs. Both jobs' logs: OUTDIR/logs/.
#
# Environment:
#   KVSCOPE            kvscope binary, must be reachable from the compute nodes
#                      (default: `kvscope` on PATH, else build/app/kvscope of this checkout)
#   KVSCOPE_PARTITION  partition for both jobs (default: the cluster's default partition)
#   KVSCOPE_JOBS       `kvscope sweep --jobs` per task (default: the task's --cpus-per-task, else 1)
#   KVSCOPE_SBATCH     sbatch command (default: sbatch)
# Prints ARRAY_JOB=<id> and MERGE_JOB=<id> on stdout.
#
# Resubmitting the same command after a failure is the way to resume: shard databases keep
# their names and `kvscope sweep` skips the cells they already hold. A merge whose shards
# failed is cancelled by Slurm (--kill-on-invalid-dep) instead of pending forever.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if (($# < 3)); then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
  exit 2
fi
spec=$1
outdir=$2
shards=$3
shift 3

die() { echo "submit_sweep: $*" >&2; exit 2; }
[[ -f $spec ]] || die "$spec: no such spec file"
[[ $shards =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$shards'"

kvscope=${KVSCOPE:-}
if [[ -z $kvscope ]]; then
  kvscope=$(command -v kvscope || true)
  [[ -n $kvscope ]] || kvscope=$here/../../build/app/kvscope
fi
[[ -x $kvscope ]] || die "$kvscope: not an executable kvscope (set KVSCOPE)"
kvscope=$(realpath "$kvscope")
spec=$(realpath "$spec")
mkdir -p "$outdir/logs"
outdir=$(realpath "$outdir")

sbatch=${KVSCOPE_SBATCH:-sbatch}
common=(--parsable --chdir="$outdir")
[[ -n ${KVSCOPE_PARTITION:-} ]] && common+=(--partition="$KVSCOPE_PARTITION")

# --parsable prints "jobid" or "jobid;cluster".
array_job=$("$sbatch" "${common[@]}" --array="0-$((shards - 1))" \
  --output="$outdir/logs/shard-%a.out" "$@" \
  "$here/sweep_array.sbatch" "$spec" "$outdir" "$shards" "$kvscope")
array_job=${array_job%%;*}
[[ $array_job =~ ^[0-9]+$ ]] || die "sbatch did not return a job id for the array: '$array_job'"

merge_job=$("$sbatch" "${common[@]}" --dependency="afterok:$array_job" --kill-on-invalid-dep=yes \
  --output="$outdir/logs/merge.out" "$@" \
  "$here/merge_shards.sbatch" "$outdir" "$shards" "$kvscope")
merge_job=${merge_job%%;*}
[[ $merge_job =~ ^[0-9]+$ ]] || die "sbatch did not return a job id for the merge: '$merge_job'"

echo "submit_sweep: array job $array_job ($shards shards), merge job $merge_job -> $outdir/merged.sqlite" >&2
echo "ARRAY_JOB=$array_job"
echo "MERGE_JOB=$merge_job"
