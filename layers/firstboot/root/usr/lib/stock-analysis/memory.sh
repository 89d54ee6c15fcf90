# memory_mb: the memory this container may use, in MiB (sourced; POSIX sh, builtins only,
# so that it also runs under NoExecPaths).
# The smallest of: MemTotal in /proc/meminfo (lxcfs makes it the container's
# limit on Proxmox), the cgroup v2 limit (memory.max of the container's root
# cgroup) and the cgroup v1 limit.
memory_mb() {
    _best=
    while read -r _key _val _unit; do
        if [ "$_key" = "MemTotal:" ]; then _best=$((_val / 1024)); break; fi
    done < /proc/meminfo
    for _f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
        [ -r "$_f" ] || continue
        read -r _v < "$_f" || continue
        case $_v in ''|max|*[!0-9]*) continue ;; esac
        # cgroup v1 says "no limit" with a huge number; the comparison below copes.
        [ "${#_v}" -le 18 ] || continue
        _v=$((_v / 1048576))
        if [ -z "$_best" ] || [ "$_v" -lt "$_best" ]; then _best=$_v; fi
    done
    echo "${_best:-1024}"
}
