# A machine's system log, run inside it as root: the journal when systemd is PID 1
# (journalctl -o json), else /var/log/syslog or /var/log/messages. Prints
# "source=NAME" first (and for a file "offset=N", where it is read from), then
# the log. Arguments: SINCE (Unix seconds or -), CURSOR (a journal cursor to
# resume after, or -), OFFSET (bytes of the file already read; -1: its end),
# FOLLOW (1 or 0).
since=$1 cursor=$2 offset=$3 follow=$4
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && command -v journalctl >/dev/null 2>&1; then
  echo "source=journal"
  set -- -o json --no-pager -q
  [ "$cursor" != - ] && set -- "$@" --after-cursor "$cursor"
  [ "$cursor" = - ] && [ "$since" != - ] && set -- "$@" --since "@$since"
  [ "$follow" = 1 ] && set -- "$@" -f
  exec journalctl "$@"
fi
while :; do
  for f in /var/log/syslog /var/log/messages; do
    if [ -f "$f" ]; then
      echo "source=$f"
      size=$(wc -c < "$f")
      if [ "$offset" -lt 0 ]; then offset=$size; elif [ "$size" -lt "$offset" ]; then offset=0; fi
      echo "offset=$offset"
      if [ "$follow" = 1 ]; then exec tail -c "+$((offset + 1))" -F "$f" 2>/dev/null; fi
      exec tail -c "+$((offset + 1))" "$f"
    fi
  done
  [ "$follow" = 1 ] || { echo "source=none"; exit 0; }
  sleep 2
done
