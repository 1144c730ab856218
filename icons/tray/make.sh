#!/usr/bin/env bash
# Regenerates the tray icons: one glyph per state, drawn at 64x64 (shown at 16–24 pt).
# <state>.png is coloured (Linux, Windows); <state>-template.png is black + alpha for the
# macOS menu bar, which tints template images itself. The glyph's shape alone tells the
# states apart, so the template variants stay distinguishable without colour.
set -euo pipefail
cd "$(dirname "$0")"

glyph() { # state colour out
  local state=$1 c=$2 out=$3
  case "$state" in
    in_sync)  convert -size 64x64 xc:none -fill "$c" -draw "circle 32,32 32,10" \
                -fill none -stroke white -strokewidth 6 -draw "stroke-linejoin round stroke-linecap round polyline 21,33 29,41 44,24" "$out" ;;
    syncing)  convert -size 64x64 xc:none -fill "$c" -draw "circle 32,32 32,6" -fill none \
                -draw "circle 32,32 32,10" -alpha set -channel A -fx "hypot(i-32,j-32)<20 || (abs(j-32)<5 && abs(i-32)>14) ? 0 : a" \
                +channel "$out"
              convert "$out" -fill "$c" -draw "polygon 44,34 62,34 53,22" -draw "polygon 20,30 2,30 11,42" "$out" ;;
    conflict) convert -size 64x64 xc:none -fill "$c" -draw "polygon 32,5 61,57 3,57" \
                -fill white -draw "roundrectangle 29,22 35,42 2,2" -draw "circle 32,49 32,52" "$out" ;;
    error)    convert -size 64x64 xc:none -fill "$c" -draw "circle 32,32 32,8" \
                -stroke white -strokewidth 6 -draw "stroke-linecap round line 23,23 41,41 line 41,23 23,41" "$out" ;;
    offline)  convert -size 64x64 xc:none -fill none -stroke "$c" -strokewidth 6 -draw "circle 32,32 32,12" \
                -draw "line 14,50 50,14" "$out" ;;
    paused)   convert -size 64x64 xc:none -fill "$c" -draw "roundrectangle 16,12 27,52 3,3" \
                -draw "roundrectangle 37,12 48,52 3,3" "$out" ;;
  esac
}

template() { # coloured.png -> template.png: every visible pixel black; white cut-outs become holes
  convert "$1" -alpha set -channel A -fx "a*(intensity<0.9?1:0)" +channel -channel RGB -fx 0 +channel "$2"
}

glyph in_sync  '#2f9e5b' in_sync.png
glyph syncing  '#3478d4' syncing.png
glyph conflict '#e09a00' conflict.png
glyph error    '#d64545' error.png
glyph offline  '#8a8f98' offline.png
glyph paused   '#8a8f98' paused.png
for s in in_sync syncing conflict error offline paused; do template "$s.png" "$s-template.png"; done
