# Resource figures of a Linux machine, read from inside it as key=value lines.
# POSIX sh; only /proc is required. Each figure says which tool gave it and
# falls back to what minimal images have. Always exits 0: a figure nothing could
# read is reported in missing=, not as a failure.
missing=""
if read l1 l5 l15 rest < /proc/loadavg; then echo "load=$l1 $l5 $l15"; else missing="$missing loadavg"; fi
c=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || grep -c '^processor' /proc/cpuinfo 2>/dev/null)
echo "cpus=$c"
while read k v rest; do
  case $k in MemTotal:|MemAvailable:|MemFree:|Buffers:|Cached:) echo "mem_${k%:}=$v";; esac
done < /proc/meminfo
if df -Pk / >/dev/null 2>&1; then
  df -Pk / | { read h; read fs t u a rest; echo "disk=df $((t*1024)) $((u*1024)) $((a*1024))"; }
elif stat -f -c '%S %b %f %a' / >/dev/null 2>&1; then
  stat -f -c '%S %b %f %a' / | { read s b f a; echo "disk=stat $((s*b)) $((s*(b-f))) $((s*a))"; }
elif command -v python3 >/dev/null 2>&1; then
  python3 -c 'import os; s = os.statvfs("/"); b = s.f_frsize
print("disk=python3", b * s.f_blocks, b * (s.f_blocks - s.f_bfree), b * s.f_bavail)'
else
  missing="$missing df,stat,python3"
fi
set -- /proc/[0-9]*
echo "processes=$#"
read up rest < /proc/uptime && echo "kernel_uptime=$up"
s=$(cat /proc/1/stat 2>/dev/null) && s=${s##*) } && set -- $s && echo "init_start_ticks=${20}"
echo "clk_tck=$(getconf CLK_TCK 2>/dev/null || echo 100)"
echo "missing=${missing# }"
