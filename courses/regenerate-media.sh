#!/usr/bin/env bash
# Regenerates every media file of the demo products under courses/ from scratch:
#
#   trust-at-a-distance/media/*.mp4                     ffmpeg (lavfi colour + drawtext + sine tone)
#   linkedin-playbook/media/b2b-linkedin-playbook.pdf   headless chromium from linkedin-playbook/src/ebook.html
#   trust-at-a-distance/media/b2b-linkedin-playbook.pdf a byte-for-byte copy of the above
#
# Usage:  courses/regenerate-media.sh            (from anywhere; needs /usr/bin/ffmpeg, /usr/bin/chromium)
#
# Deterministic: the same ffmpeg and chromium versions produce byte-identical files (bit-exact
# muxing, no creation time in the MP4, fixed dates in the PDF), so `rapport publish` sees the same
# sha256 and uploads nothing new. A different ffmpeg/x264/chromium version may change the bytes
# (and therefore the hashes) but not the content. The script writes only inside courses/.
set -euo pipefail

cd "$(dirname "$0")"
COURSES="$(pwd)"
FFMPEG="${FFMPEG:-ffmpeg}"
CHROMIUM="${CHROMIUM:-chromium}"
FONT_DIR=/usr/share/fonts/truetype/dejavu
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

DURATION=8        # seconds per video
SIZE=640x360
RATE=25           # fps; keyframe every 50 frames = every 2 s (fixed GOP, no scene-cut keyframes)

# Use drawtext with DejaVu when this ffmpeg has it; otherwise fall back to testsrc (still distinct
# per lesson because colour overlay and tone frequency differ).
FILTERS="$("$FFMPEG" -hide_banner -filters 2>/dev/null || true)"   # not piped into grep -q: SIGPIPE + pipefail
if [[ $FILTERS == *" drawtext "* ]] \
   && [[ -f $FONT_DIR/DejaVuSans-Bold.ttf && -f $FONT_DIR/DejaVuSans.ttf && -f $FONT_DIR/DejaVuSans-Oblique.ttf ]]; then
  HAVE_DRAWTEXT=1
else
  HAVE_DRAWTEXT=0
  echo "note: drawtext or DejaVu fonts missing, videos fall back to testsrc" >&2
fi

# make_video OUT BG_COLOUR ACCENT_COLOUR TONE_HZ KICKER TITLE_EN TITLE_DE
make_video() {
  local out=$1 bg=$2 accent=$3 hz=$4 kicker=$5 title_en=$6 title_de=$7
  local id; id=$(basename "$out" .mp4)
  # Text goes through files (textfile=) so titles need no filter-graph escaping; wrapped by hand
  # because drawtext does not wrap.
  printf '%s' "$kicker" >"$TMP/$id.kicker"
  printf '%s' "$title_en" | fold -s -w 33 | sed 's/ *$//' >"$TMP/$id.en"
  printf '%s' "$title_de" | fold -s -w 52 | sed 's/ *$//' >"$TMP/$id.de"
  printf '%s' "Rapport" >"$TMP/$id.brand"

  local video_in vf
  if [[ $HAVE_DRAWTEXT == 1 ]]; then
    video_in="color=c=$bg:s=$SIZE:r=$RATE:d=$DURATION"
    vf="drawbox=x=0:y=0:w=iw:h=6:color=$accent:t=fill"
    vf+=",drawtext=fontfile=$FONT_DIR/DejaVuSans.ttf:textfile=$TMP/$id.kicker:expansion=none:fontsize=14:fontcolor=white@0.70:x=40:y=36"
    vf+=",drawtext=fontfile=$FONT_DIR/DejaVuSans-Bold.ttf:textfile=$TMP/$id.en:expansion=none:fontsize=30:line_spacing=10:fontcolor=white:x=40:y=90"
    vf+=",drawtext=fontfile=$FONT_DIR/DejaVuSans-Oblique.ttf:textfile=$TMP/$id.de:expansion=none:fontsize=17:line_spacing=6:fontcolor=white@0.75:x=40:y=236"
    vf+=",drawtext=fontfile=$FONT_DIR/DejaVuSans-Bold.ttf:textfile=$TMP/$id.brand:expansion=none:fontsize=14:fontcolor=$accent:x=40:y=h-42"
    # a slim progress bar slides in over the clip, so the picture is not entirely static
    # (overlay re-evaluates x per frame; drawbox in ffmpeg 5.1 does not)
    vf+="[txt];color=c=$accent:s=${SIZE%x*}x5:r=$RATE:d=$DURATION[bar]"
    vf+=";[txt][bar]overlay=x=-w+w*t/$DURATION:y=H-h:eval=frame"
  else
    video_in="testsrc=s=$SIZE:r=$RATE:d=$DURATION"
    vf="drawbox=x=0:y=0:w=iw:h=40:color=$bg:t=fill"
  fi

  "$FFMPEG" -hide_banner -loglevel error -y \
    -f lavfi -i "$video_in" \
    -f lavfi -i "sine=frequency=$hz:sample_rate=44100:duration=$DURATION" \
    -filter_complex "[0:v]$vf,format=yuv420p[v];[1:a]volume=0.12,afade=t=in:d=1,afade=t=out:st=$((DURATION - 1)):d=1[a]" \
    -map '[v]' -map '[a]' \
    -c:v libx264 -preset medium -profile:v main -level 3.1 -pix_fmt yuv420p -threads 1 \
    -g 50 -keyint_min 50 -sc_threshold 0 -b:v 150k -maxrate 200k -bufsize 400k \
    -c:a aac -b:a 48k -ac 1 -ar 44100 \
    -map_metadata -1 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact \
    -movflags +faststart \
    "$out"
  echo "wrote $out ($(stat -c %s "$out") bytes)"
}

# --- trust-at-a-distance: one video per video lesson (titles as in course.toml) -------------------
T=trust-at-a-distance/media
mkdir -p "$T"
make_video "$T/welcome.mp4"                   0x1f3a5f 0x9fd3d6 220 \
  "TRUST AT A DISTANCE  ·  MODULE 1  ·  LESSON 1" \
  "Welcome: three inquiries, no clients" \
  "Willkommen: drei Anfragen, kein Kunde"
make_video "$T/first-call-limits.mp4"         0x2f4858 0xf6ae2d 247 \
  "TRUST AT A DISTANCE  ·  MODULE 1  ·  LESSON 2" \
  "What a first video call can and cannot do" \
  "Was ein erster Videocall leisten kann und was nicht"
make_video "$T/linkedin-profile.mp4"          0x2f6f73 0xf2e8cf 262 \
  "TRUST AT A DISTANCE  ·  MODULE 2  ·  LESSON 1" \
  "A LinkedIn profile that earns trust" \
  "Ein LinkedIn-Profil, das Vertrauen verdient"
make_video "$T/content-that-builds-trust.mp4" 0x4a3f6b 0xe0c3fc 294 \
  "TRUST AT A DISTANCE  ·  MODULE 2  ·  LESSON 2" \
  "Content that does the first meeting for you" \
  "Inhalte, die das erste Treffen für Sie übernehmen"
make_video "$T/existing-clients.mp4"          0x5c4033 0xf4d35e 330 \
  "TRUST AT A DISTANCE  ·  MODULE 3  ·  LESSON 2" \
  "Why your existing clients are worth more" \
  "Warum Ihre Bestandskunden mehr wert sind"

# --- linkedin-playbook: the e-book PDF, printed by headless chromium ------------------------------
L=linkedin-playbook/media
mkdir -p "$L"
PDF="$L/b2b-linkedin-playbook.pdf"
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --disable-background-networking --disable-component-update --disable-sync --no-first-run \
  --user-data-dir="$TMP/chromium-profile" \
  --no-pdf-header-footer --print-to-pdf="$COURSES/$PDF" \
  "file://$COURSES/linkedin-playbook/src/ebook.html" >"$TMP/chromium.log" 2>&1 \
  || { cat "$TMP/chromium.log" >&2; exit 1; }
# Chromium stamps the current time into /CreationDate and /ModDate. Replace both with a fixed date
# of the same length, so the xref byte offsets stay valid and the file is reproducible.
python3 - "$PDF" <<'PY'
import re, sys
path = sys.argv[1]
data = open(path, "rb").read()
fixed = b"(D:20210101000000+00'00')"
data, n = re.subn(rb"\(D:\d{14}[+\-Z][^)]{0,8}\)", lambda m: fixed if len(m.group(0)) == len(fixed) else m.group(0), data)
pages = len(re.findall(rb"/Type\s*/Page\b", data))
open(path, "wb").write(data)
print(f"wrote {path} ({len(data)} bytes, {pages} pages, {n} dates fixed)")
if pages < 6:
    sys.exit(f"expected at least 6 pages, got {pages}")
PY

# The course includes the e-book as its pdf lesson: the same file, so the same sha256.
cp "$PDF" "$T/b2b-linkedin-playbook.pdf"
echo "copied $PDF -> $T/b2b-linkedin-playbook.pdf"

echo
( cd "$COURSES" && sha256sum trust-at-a-distance/media/* linkedin-playbook/media/* && du -sh . )
