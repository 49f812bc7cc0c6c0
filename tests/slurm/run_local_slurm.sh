#!/usr/bin/env bash
# End-to-end test of the Slurm scripts on a real, throwaway single-node Slurm cluster:
# starts munged, slurmctld and slurmd on localhost (config, state, logs and munge key in a temp
# dir; private ports and munge socket, so nothing system-wide is touched or reused), checks the
# cluster with a trivial job array, then submits a 4-shard sweep plus its merge through
# scripts/slurm/submit_sweep.sh, runs the same sweep unsharded, and requires
# `kvscope compare-cells merged unsharded` to report every cell of the grid identical; then that
# resubmitting is a harmless resume, and that a task requeued mid-run finishes only what is missing.
# The daemons are stopped and the temp dir removed on every exit path.
#
# Usage: tests/slurm/run_local_slurm.sh [--cluster-only] [KVSCOPE [MODELS_DIR [DATA_DIR]]]
#   KVSCOPE     kvscope binary (default: build/app/kvscope of this checkout)
#   MODELS_DIR  shared models (default: $KVSCOPE_TEST_MODELS, else ../shared/models)
#   DATA_DIR    shared texts  (default: $KVSCOPE_TEST_DATA, else ../shared/data)
#   --cluster-only  only start the cluster and run the trivial array (no kvscope needed)
# Environment: KVSCOPE_SLURM_TIMEOUT (seconds to wait for the sweep jobs, default 900),
#   KVSCOPE_SLURM_KEEP=1 keeps the temp dir (daemons are still stopped).
# Needs root (slurmd runs jobs as their submitting user) and installs slurm-wlm + munge with
# apt-get if they are missing. Prints PASS or FAIL last; exits 0 only on PASS.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

cluster_only=0
if [[ ${1:-} == --cluster-only ]]; then cluster_only=1; shift; fi
kvscope=${1:-$repo/build/app/kvscope}
models=${2:-${KVSCOPE_TEST_MODELS:-$(cd "$repo/.." && pwd)/shared/models}}
data=${3:-${KVSCOPE_TEST_DATA:-$(cd "$repo/.." && pwd)/shared/data}}
job_timeout=${KVSCOPE_SLURM_TIMEOUT:-900}
shards=4
t_start=$SECONDS

log() { echo "slurm-test: $*" >&2; }
tmp=""
verdict=FAIL
fail() {
  log "FAILED: $*"
  exit 1  # the EXIT trap prints logs, stops the daemons and prints the verdict
}

# ---- clean-up: stop what we started (by pid file), remove the temp dir, print the verdict ----
stop_pidfile() {  # name pidfile
  local pid
  [[ -s $2 ]] || return 0
  pid=$(<"$2")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  log "$1 (pid $pid) still running after shutdown; sending SIGTERM"
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 25); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $tmp && -d $tmp ]]; then
    if [[ $verdict != PASS ]]; then
      for f in "$tmp"/log/*.log "$tmp"/out/*.out "$tmp"/sweep/logs/*.out "$tmp"/requeue/logs/*.out; do
        [[ -f $f ]] || continue
        echo "----- ${f#"$tmp"/} (last 25 lines)" >&2
        tail -n 25 "$f" >&2
      done
    fi
    if [[ -f $tmp/slurm.conf ]]; then
      # scontrol shutdown stops slurmctld and every registered slurmd (and their jobs).
      SLURM_CONF=$tmp/slurm.conf timeout 15 scontrol shutdown >/dev/null 2>&1
      stop_pidfile slurmd "$tmp/run/slurmd.pid"
      stop_pidfile slurmctld "$tmp/run/slurmctld.pid"
    fi
    if [[ -S $tmp/munge-run/munge.socket ]]; then
      timeout 15 munged --stop --socket="$tmp/munge-run/munge.socket" >/dev/null 2>&1
      stop_pidfile munged "$tmp/munge-run/munged.pid"
    fi
    if [[ ${KVSCOPE_SLURM_KEEP:-0} == 1 ]]; then
      log "kept $tmp"
    else
      rm -rf "$tmp"
    fi
  fi
  ((rc == 0)) || verdict=FAIL
  echo "slurm-test: $verdict ($((SECONDS - t_start)) s)"
  [[ $verdict == PASS ]] && exit 0
  exit 1
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---- preconditions ----
((EUID == 0)) || fail "must run as root (starts slurmd, which runs jobs as their user)"
if ((!cluster_only)); then
  [[ -x $kvscope ]] || fail "$kvscope: no kvscope binary (build it, or pass its path)"
  kvscope=$(realpath "$kvscope")
  for sub in sweep merge compare-cells synth; do
    timeout 30 "$kvscope" "$sub" --help >/dev/null 2>&1 || fail "$kvscope has no working '$sub' command"
  done
  for m in stories260K tinystories-qwen2-4L; do
    [[ -f $models/$m/config.json ]] || fail "$models/$m: shared model missing (pass MODELS_DIR)"
  done
  [[ -f $data/tinystories_validation_head.txt ]] || fail "$data/tinystories_validation_head.txt missing (pass DATA_DIR)"
fi

pkgs=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d / no systemd: the packages' own daemon start fails harmlessly; we start our own.
  timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
    { timeout 300 apt-get update -q >/dev/null && timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; } ||
    fail "apt-get install ${missing[*]} failed"
fi

# ---- temp dir, munge ----
# munged insists the socket's directory chain is world-executable and the key private.
tmp=$(mktemp -d /tmp/kvscope-slurm.XXXXXX) || fail "mktemp"
chmod 755 "$tmp"
mkdir -p "$tmp"/{munge,munge-run,run,state,spool,log,out,sweep}
chmod 700 "$tmp/munge"
chmod 755 "$tmp/munge-run"
key=$tmp/munge/munge.key
if [[ ! -s $key ]]; then
  head -c 1024 /dev/urandom >"$key" || fail "cannot write $key"
fi
chmod 400 "$key"
timeout 30 munged --socket="$tmp/munge-run/munge.socket" --key-file="$key" \
  --pid-file="$tmp/munge-run/munged.pid" --seed-file="$tmp/munge/munged.seed" \
  --log-file="$tmp/log/munged.log" || fail "munged did not start"
timeout 10 munge -n -S "$tmp/munge-run/munge.socket" | timeout 10 unmunge -S "$tmp/munge-run/munge.socket" >/dev/null ||
  fail "munge round trip through $tmp/munge-run/munge.socket failed"

# ---- slurm.conf ----
free_port() {  # a port nothing listens on, from a range away from Slurm's defaults
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}
ctld_port=$(free_port) || fail "no free port"
slurmd_port=$(free_port) || fail "no free port"
while [[ $slurmd_port == "$ctld_port" ]]; do slurmd_port=$(free_port) || fail "no free port"; done

# The node's real shape, as slurmd sees it (a mismatch drains the node).
hw=$(timeout 30 slurmd -C | head -n 1) || fail "slurmd -C failed"
field() { sed -n "s/.*\<$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
cpus=$(field CPUs) boards=$(field Boards) sockets=$(field SocketsPerBoard)
cores=$(field CoresPerSocket) threads=$(field ThreadsPerCore) mem=$(field RealMemory)
[[ -n $cpus && -n $sockets && -n $cores && -n $threads && -n $mem ]] || fail "cannot parse slurmd -C: $hw"
mem=$((mem * 95 / 100))  # a little below the measured value, or a fluctuating reading drains the node

conf=$tmp/slurm.conf
cat >"$conf" <<EOF
# Throwaway single-node cluster of tests/slurm/run_local_slurm.sh
ClusterName=kvscope-test
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a killed job's credential stays revoked, and so how long Slurm holds a
# requeued job back (default 120 s; starting it sooner makes slurmd refuse it, "credential revoked").
AuthInfo=socket=$tmp/munge-run/munge.socket,cred_expire=10
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/run/slurmctld.pid
SlurmdPidFile=$tmp/run/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# No cgroups (none usable in this container): processes tracked via /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# A test cluster: look at pending jobs every 2 s (default 30 s backfill, 60 s main) so requeued and
# dependent jobs start promptly.
SchedulerParameters=bf_interval=2,sched_interval=2
ReturnToService=2
# No slurmdbd, so no sacct: finished jobs must stay visible to scontrol until we have checked them.
MinJobAge=3600
NodeName=localhost NodeHostname=localhost CPUs=$cpus Boards=${boards:-1} SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=kvscope Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$conf

# ---- daemons ----
# Both daemonize and write their pid files; -N: the node is "localhost" whatever hostname says.
timeout 30 slurmctld -f "$conf" || fail "slurmctld did not start"
timeout 30 slurmd -f "$conf" -N localhost || fail "slurmd did not start"
state=""
for _ in $(seq 60); do
  state=$(timeout 10 sinfo -h -n localhost -o %t 2>/dev/null)
  [[ $state == idle ]] && break
  sleep 1
done
[[ $state == idle ]] || fail "node localhost not idle after 60 s (sinfo state '$state')"
log "cluster up: slurmctld :$ctld_port, slurmd :$slurmd_port, node localhost ${cpus} CPUs ${mem} MB ($((SECONDS - t_start)) s)"

# ---- job helpers (no slurmdbd, so scontrol instead of sacct) ----
wait_gone() {  # seconds jobid...: wait until squeue lists none of the jobs
  local deadline=$((SECONDS + $1)) ids out
  shift
  ids=$(IFS=,; echo "$*")
  while ((SECONDS < deadline)); do
    # A failed squeue (controller busy) is not "gone"; MinJobAge keeps finished ids valid.
    out=$(timeout 10 squeue -h -j "$ids" -o %i 2>/dev/null) && [[ -z $out ]] && return 0
    sleep 1
  done
  timeout 10 squeue -j "$ids" >&2
  return 1
}
check_done() {  # jobid expected_records: every record (array task) COMPLETED with exit 0
  local lines n bad
  lines=$(timeout 10 scontrol -o show job "$1") || { log "scontrol show job $1 failed"; return 1; }
  n=$(grep -c '^JobId=' <<<"$lines")
  bad=$(grep -v 'JobState=COMPLETED .*ExitCode=0:0' <<<"$lines" | grep -o '\<JobId=[0-9]*' | paste -sd' ')
  if [[ $n != "$2" || -n $bad ]]; then
    log "job $1: $n record(s), expected $2; not completed with exit 0: ${bad:-none}"
    grep -o '\<JobId=[0-9]*\|ArrayTaskId=[0-9]*\|JobState=[A-Z_]*\|Reason=[^ ]*\|ExitCode=[0-9:]*' <<<"$lines" |
      paste -sd' ' | sed 's/ JobId=/\n  JobId=/g' >&2
    return 1
  fi
}

# ---- 1. the cluster runs a trivial array and a dependent job ----
arr=$(timeout 30 sbatch --parsable --array=0-3 -o "$tmp/out/smoke-%a.out" \
  --wrap 'echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT"') || fail "sbatch of the trivial array failed"
dep=$(timeout 30 sbatch --parsable --dependency="afterok:$arr" --kill-on-invalid-dep=yes -o "$tmp/out/smoke-after.out" \
  --wrap "cat $tmp/out/smoke-*.out | sort > $tmp/out/smoke-all.txt") || fail "sbatch of the dependent job failed"
wait_gone 120 "$arr" "$dep" || fail "trivial jobs still queued after 120 s"
check_done "$arr" 4 && check_done "$dep" 1 || fail "trivial jobs did not all complete"
printf 'task %d of 4\n' 0 1 2 3 | cmp -s - "$tmp/out/smoke-all.txt" || fail "trivial array output is not tasks 0..3 of 4"
log "trivial 4-task array + afterok job: ok ($((SECONDS - t_start)) s)"

if ((cluster_only)); then
  verdict=PASS
  exit 0
fi

# ---- 2. a small sweep: 4 shards through Slurm + merge, against the unsharded run ----
# Grid: 3 synthetic dumps x 5 method variants (quantize cells) + 2 real models (Llama and Qwen2
# architectures) x 1 text workload x 5 variants (replay cells) = 25 cells; 25 is not a multiple of
# 4, so the shards are uneven (7, 6, 6, 6). The unsharded run uses --jobs 2 against the shards'
# --jobs 1, so the comparison also covers "numbers do not depend on --jobs".
work=$tmp/sweep
for s in 1 2 3; do
  timeout 120 "$kvscope" synth --out "$work/dump$s.safetensors" --layers 2 --kv-heads 2 --q-heads 4 \
    --head-dim 32 --tokens 128 --seed "$s" >/dev/null 2>&1 || fail "kvscope synth failed"
done
cat >"$work/spec.json" <<EOF
{"name": "slurm-test",
 "dumps": ["dump1.safetensors", "dump2.safetensors", "dump3.safetensors"],
 "models": ["$models/stories260K", "$models/tinystories-qwen2-4L"],
 "workloads": ["text:$data/tinystories_validation_head.txt;window=32;n=2"],
 "methods": [{"preset": "uniform-4", "bits": [2, 3, 4]}, {"preset": "kivi-2", "bits": [2, 4]}],
 "attn_queries": 64,
 "replay": {"max_tokens": 16}}
EOF
expected_cells=25

sub=$(timeout 60 env KVSCOPE="$kvscope" "$repo/scripts/slurm/submit_sweep.sh" "$work/spec.json" "$work" "$shards") ||
  fail "submit_sweep.sh failed"
array_job=$(sed -n 's/^ARRAY_JOB=//p' <<<"$sub")
merge_job=$(sed -n 's/^MERGE_JOB=//p' <<<"$sub")
[[ -n $array_job && -n $merge_job ]] || fail "submit_sweep.sh printed no job ids: $sub"
log "submitted array job $array_job ($shards shards) and merge job $merge_job"
wait_gone "$job_timeout" "$array_job" "$merge_job" || fail "sweep jobs still queued after $job_timeout s"
check_done "$array_job" "$shards" || fail "a shard task did not complete with exit 0"
check_done "$merge_job" 1 || fail "the merge job did not complete with exit 0"
for ((i = 0; i < shards; i++)); do
  [[ -s $work/shard-$i.sqlite ]] || fail "shard $i wrote no $work/shard-$i.sqlite"
done
[[ -s $work/merged.sqlite ]] || fail "no $work/merged.sqlite"
[[ ! -e $work/merged.sqlite.partial ]] || fail "merge left $work/merged.sqlite.partial behind"
log "Slurm sweep + merge done ($((SECONDS - t_start)) s)"

timeout "$job_timeout" "$kvscope" sweep --spec "$work/spec.json" --db "$tmp/unsharded.sqlite" --jobs 2 \
  >"$tmp/out/unsharded.out" 2>&1 || fail "the unsharded sweep failed (see $tmp/out/unsharded.out)"
cmp_out=$(timeout 120 "$kvscope" compare-cells "$work/merged.sqlite" "$tmp/unsharded.sqlite" 2>&1)
cmp_rc=$?
log "compare-cells: $cmp_out"
((cmp_rc == 0)) || fail "merged and unsharded stores differ (compare-cells exit $cmp_rc)"
grep -q "\<$expected_cells cells identical" <<<"$cmp_out" ||
  fail "expected '$expected_cells cells identical' (the whole grid), got: $cmp_out"
log "merged = unsharded ($((SECONDS - t_start)) s)"

# ---- 3. resubmitting the same command is the documented resume: every shard finds its cells done,
# the merge rebuilds merged.sqlite, and the result still equals the unsharded run (no duplicates).
sub=$(timeout 60 env KVSCOPE="$kvscope" "$repo/scripts/slurm/submit_sweep.sh" "$work/spec.json" "$work" "$shards") ||
  fail "resubmitting with submit_sweep.sh failed"
array_job=$(sed -n 's/^ARRAY_JOB=//p' <<<"$sub")
merge_job=$(sed -n 's/^MERGE_JOB=//p' <<<"$sub")
[[ -n $array_job && -n $merge_job ]] || fail "submit_sweep.sh printed no job ids: $sub"
wait_gone "$job_timeout" "$array_job" "$merge_job" || fail "resubmitted jobs still queued after $job_timeout s"
check_done "$array_job" "$shards" && check_done "$merge_job" 1 || fail "the resubmitted jobs did not all complete"
cmp_out=$(timeout 120 "$kvscope" compare-cells "$work/merged.sqlite" "$tmp/unsharded.sqlite" 2>&1) ||
  fail "after resubmitting, merged and unsharded differ: $cmp_out"
grep -q "\<$expected_cells cells identical" <<<"$cmp_out" ||
  fail "after resubmitting, expected '$expected_cells cells identical', got: $cmp_out"
log "resubmitted sweep (resume of a finished one): still $expected_cells identical cells ($((SECONDS - t_start)) s)"

# ---- 4. a task requeued mid-run (what a node failure or preemption does) resumes: 5 replay cells
# of ~2 s each in one shard; after the first cell is logged, `scontrol requeue` kills the task and
# Slurm starts it again; the result must equal an uninterrupted run, cell for cell, no duplicates.
work2=$tmp/requeue
mkdir -p "$work2"
cat >"$work2/spec.json" <<EOF2
{"name": "slurm-requeue",
 "models": ["$models/tinystories-qwen2-4L"],
 "workloads": ["text:$data/tinystories_validation_head.txt;window=64;n=4"],
 "methods": [{"preset": "uniform-4", "bits": [2, 3, 4]}, {"preset": "kivi-2", "bits": [2, 4]}],
 "replay": {"max_tokens": 64}}
EOF2
sub=$(timeout 60 env KVSCOPE="$kvscope" "$repo/scripts/slurm/submit_sweep.sh" "$work2/spec.json" "$work2" 1) ||
  fail "submit_sweep.sh (requeue phase) failed"
array_job=$(sed -n 's/^ARRAY_JOB=//p' <<<"$sub")
merge_job=$(sed -n 's/^MERGE_JOB=//p' <<<"$sub")
[[ -n $array_job && -n $merge_job ]] || fail "submit_sweep.sh printed no job ids: $sub"
shard_log=$work2/logs/shard-0.out
deadline=$((SECONDS + 300))
until grep -q '^\[1/' "$shard_log" 2>/dev/null; do
  ((SECONDS < deadline)) || fail "the requeue-phase task logged no finished cell within 300 s"
  sleep 0.2
done
grep -q 'sweep_array: shard 0/1 done' "$shard_log" &&
  fail "the requeue-phase task finished before it could be requeued (cells too fast?)"
timeout 30 scontrol requeue "${array_job}_0" || fail "scontrol requeue ${array_job}_0 failed"
log "requeued task ${array_job}_0 after its first cell"
wait_gone "$job_timeout" "$array_job" "$merge_job" || fail "requeue-phase jobs still queued after $job_timeout s"
check_done "$array_job" 1 && check_done "$merge_job" 1 || fail "the requeued task or its merge did not complete"
grep -q '(restart 1)' "$shard_log" || fail "$shard_log shows no restart: the task was not requeued"
[[ $(grep -c 'sweep_array: shard 0/1 done' "$shard_log") == 1 ]] ||
  fail "$shard_log: expected exactly one finished attempt"
timeout "$job_timeout" "$kvscope" sweep --spec "$work2/spec.json" --db "$tmp/requeue-ref.sqlite" --jobs 1 \
  >"$tmp/out/requeue-ref.out" 2>&1 || fail "the uninterrupted reference sweep failed"
cmp_out=$(timeout 120 "$kvscope" compare-cells "$work2/merged.sqlite" "$tmp/requeue-ref.sqlite" 2>&1) ||
  fail "requeued run and uninterrupted run differ: $cmp_out"
grep -q "\<5 cells identical" <<<"$cmp_out" || fail "expected '5 cells identical', got: $cmp_out"
log "task requeued mid-run: $cmp_out with an uninterrupted run ($((SECONDS - t_start)) s)"

verdict=PASS
