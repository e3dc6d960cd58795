#!/usr/bin/env bash
# A virtual microphone for machines with no sound card (CI, containers): a private PulseAudio
# daemon whose default source hears whatever is played into its default sink.
#
#   eval "$(tools/vmic.sh start)"     # start it (idempotent); prints the exports clients need
#   tools/vmic.sh play FILE.wav       # feed the microphone, paced in real time
#   tools/vmic.sh say yes no          # speak words into it (espeak-ng)
#   tools/vmic.sh env | status | stop
#
# Then `edgernn devices` lists it and `edgernn stream --input mic ...` hears what is played.
# Needs: pulseaudio pulseaudio-utils libasound2-plugins libportaudio2 (espeak-ng for `say`).
# VMIC_DIR (default /tmp/vmic) holds the socket, cookie, pid and log; keep it short, unix
# socket paths are limited to 108 bytes. docs/microphone.md says why each line is there.
set -euo pipefail

VMIC_DIR=${VMIC_DIR:-/tmp/vmic}
RATE=${VMIC_RATE:-16000}

exports() {
  echo "export PULSE_SERVER=unix:$VMIC_DIR/pulse/native PULSE_COOKIE=$VMIC_DIR/cookie XDG_RUNTIME_DIR=$VMIC_DIR"
}

use_env() {
  export PULSE_SERVER=unix:$VMIC_DIR/pulse/native PULSE_COOKIE=$VMIC_DIR/cookie XDG_RUNTIME_DIR=$VMIC_DIR
}

alive() {  # a killed daemon lingers as a zombie: read its state, not kill -0
  [[ -f $VMIC_DIR/daemon.pid ]] || return 1
  local pid state
  pid=$(cat "$VMIC_DIR/daemon.pid")
  [[ -r /proc/$pid/stat ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat")
  [[ $state != Z && $state != X ]]
}

start() {
  for tool in pulseaudio pactl; do
    command -v "$tool" >/dev/null || { echo "vmic: $tool not found; apt-get install pulseaudio pulseaudio-utils libasound2-plugins libportaudio2" >&2; exit 2; }
  done
  use_env
  if alive && pactl info >/dev/null 2>&1; then exports; return; fi
  mkdir -p -m 700 "$VMIC_DIR/pulse" "$VMIC_DIR/home"
  # The loopback, attached while both sinks are suspended, pins the sink's latency at ~10 ms;
  # without it an idle null sink renders 2 s ahead and a late recorder misses the start.
  cat > "$VMIC_DIR/vmic.pa" <<PA
load-module module-native-protocol-unix auth-anonymous=1 socket=$VMIC_DIR/pulse/native
load-module module-null-sink sink_name=vspeaker rate=$RATE channels=1
suspend-sink vspeaker 1
load-module module-null-sink sink_name=vdump rate=$RATE channels=1
suspend-sink vdump 1
load-module module-loopback source=vspeaker.monitor sink=vdump latency_msec=30 source_dont_move=true sink_dont_move=true
suspend-sink vspeaker 0
suspend-sink vdump 0
set-default-sink vspeaker
set-default-source vspeaker.monitor
PA
  HOME=$VMIC_DIR/home setsid pulseaudio --daemonize=no -n --exit-idle-time=-1 --disallow-exit=yes \
    --use-pid-file=no -F "$VMIC_DIR/vmic.pa" --log-target="file:$VMIC_DIR/pulse.log" \
    </dev/null >/dev/null 2>&1 &
  echo $! > "$VMIC_DIR/daemon.pid"
  for _ in $(seq 200); do pactl info >/dev/null 2>&1 && break; sleep 0.05; done
  if [[ "$(pactl get-default-source 2>/dev/null)" != vspeaker.monitor ]]; then
    echo "vmic: PulseAudio did not come up; see $VMIC_DIR/pulse.log" >&2
    stop >/dev/null 2>&1 || true
    exit 1
  fi
  exports
}

stop() {
  if [[ -f $VMIC_DIR/daemon.pid ]]; then
    local pid
    pid=$(cat "$VMIC_DIR/daemon.pid")
    if alive; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do alive || break; sleep 0.05; done
      alive && kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$VMIC_DIR"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  env) exports ;;
  status) use_env; if alive && pactl info >/dev/null 2>&1; then echo "vmic: running (pid $(cat "$VMIC_DIR/daemon.pid"), $VMIC_DIR)"; else echo "vmic: not running"; exit 1; fi ;;
  play) shift; use_env; paplay "$@" ;;
  say) shift; use_env; tmp=$(mktemp --suffix=.wav); espeak-ng -v "${VMIC_VOICE:-en-us}" -s "${VMIC_SPEED:-150}" -w "$tmp" "$*"; paplay "$tmp"; rm -f "$tmp" ;;
  *) echo "usage: $0 start|stop|env|status|play FILE.wav|say WORDS" >&2; exit 2 ;;
esac
