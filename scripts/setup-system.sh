#!/usr/bin/env bash
# Install the Debian packages mtl-edge needs: espeak-ng + mbrola voices (recordings of real
# speakers; in Debian's contrib and non-free components, enabled here if needed), fluidsynth with
# the General MIDI soundfont, libsndfile, and data packages that ship real sound recordings.
# Does nothing when everything is already installed.
set -euo pipefail

PACKAGES=(
  espeak-ng mbrola
  mbrola-us1 mbrola-us2 mbrola-en1 mbrola-de1 mbrola-de2 mbrola-de5 mbrola-de6 mbrola-fr4 mbrola-nl2 mbrola-pl1
  fluidsynth libfluidsynth3 fluid-soundfont-gm libsndfile1
  minetest-data etw-data lugaru-data bucklespring-data sound-theme-freedesktop
  python3-venv make
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup-system: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi

# mbrola and its voices live in contrib / non-free of the same Debian archive.
for file in /etc/apt/sources.list.d/*.sources; do
  [ -f "$file" ] || continue
  if grep -qE '^Components:.*\bmain\b' "$file" && ! grep -qE '^Components:.*\bcontrib\b' "$file"; then
    echo "setup-system: enabling contrib and non-free in $file"
    "${SUDO[@]}" sed -i -E '/^Components:/{/\bcontrib\b/!s/\bmain\b/main contrib non-free/}' "$file"
  fi
done
if [ -f /etc/apt/sources.list ] && grep -qE '^deb .* main' /etc/apt/sources.list && ! grep -qE '^deb .* contrib' /etc/apt/sources.list; then
  echo "setup-system: enabling contrib and non-free in /etc/apt/sources.list"
  "${SUDO[@]}" sed -i -E '/^deb /{/contrib/!s/ main( |$)/ main contrib non-free\1/}' /etc/apt/sources.list
fi

echo "setup-system: installing ${missing[*]}"
"${SUDO[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
