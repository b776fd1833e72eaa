# Shared by the load scripts (sourced): a scratch directory and the processes started
# into it, all stopped (SIGINT, then SIGKILL) and removed on exit.
#   scratch PREFIX   sets RUN to a new directory /tmp/PREFIX.XXXXXX and installs the trap;
#                    append each started process's pid to PIDS.
scratch() {
    RUN=$(mktemp -d "/tmp/$1.XXXXXX")
    PIDS=()
    trap scratch_cleanup EXIT
}
scratch_cleanup() {
    for p in ${PIDS[@]+"${PIDS[@]}"}; do kill -INT "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in ${PIDS[@]+"${PIDS[@]}"}; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$RUN"
}
