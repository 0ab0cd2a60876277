#!/usr/bin/env bash
# Install the Debian packages mtl-edge needs: espeak-ng + mbrola voices (recordings of real
# speakers; in Debian's contrib and non-free components, enabled here if needed), flite and pico
# (the other engines' voices of `data demo --voices mbrola+tts`; pico is in non-free), fluidsynth with
# the General MIDI soundfont, libsndfile, data packages that ship real sound recordings, and the
# tools of the device test beds (sshd, adb, network namespaces, an arm64 Debian userland).
# Does nothing when everything is already installed.
#
# Usage: setup-system.sh [all|demo]   demo: only what the demo needs (the corpus's sources), not the
# device test beds' tools (`make demo` uses it; `make test` and CI install all).
set -euo pipefail

SCOPE=${1:-all}
case "$SCOPE" in all|demo) ;; *) echo "setup-system: unknown scope '$SCOPE' (all or demo)" >&2; exit 2 ;; esac

PACKAGES=(
  espeak-ng mbrola flite libttspico-utils
  mbrola-us1 mbrola-us2 mbrola-en1 mbrola-de1 mbrola-de2 mbrola-de5 mbrola-de6 mbrola-fr4 mbrola-nl2 mbrola-pl1
  fluidsynth libfluidsynth3 fluid-soundfont-gm libsndfile1
  minetest-data etw-data lugaru-data bucklespring-data sound-theme-freedesktop
  python3-venv make
)
if [ "$SCOPE" = all ]; then
  PACKAGES+=(openssh-server openssh-client iproute2 util-linux zstd adb mmdebstrap arch-test)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
# The device test beds need qemu-user >= 10 (bookworm's 7.2 crashes in onnxruntime and ai-edge-litert).
# On bookworm it is in bookworm-backports: that apt source is added here (same mirror as the bookworm
# source) unless one exists. `mtl-edge devbed up` fetches the .deb with apt-get download and unpacks
# qemu-aarch64 into its cache; nothing is installed from backports.
bookworm_mirror() {
  local file
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    awk 'BEGIN { RS = ""; FS = "\n" }
         { t = u = s = ""
           for (i = 1; i <= NF; i++) { if ($i ~ /^Types:/) t = $i; if ($i ~ /^URIs:/) u = $i; if ($i ~ /^Suites:/) s = $i }
           if (t ~ /[ \t]deb([ \t]|$)/ && s ~ /[ \t]bookworm([ \t]|$)/) { sub(/^URIs:[ \t]*/, "", u); split(u, a, /[ \t]+/); print a[1]; exit } }' "$file"
  done
  if [ -f /etc/apt/sources.list ]; then
    awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                       if ($(i + 1) == "bookworm") { print $i; exit } }' /etc/apt/sources.list
  fi
}
backports_source=()
need_update=0
codename=$( (. /etc/os-release && echo "${VERSION_CODENAME:-}") 2>/dev/null || true)
if [ "$codename" = bookworm ] && [ "$SCOPE" = all ]; then
  if ! grep -qsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; then
    mirror=$(bookworm_mirror | head -n 1)
    if [ -n "$mirror" ]; then
      backports_source=("Types: deb" "URIs: $mirror" "Suites: bookworm-backports" "Components: main")
      [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] && backports_source+=("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg")
      need_update=1
    else
      echo "setup-system: no bookworm apt source found to add bookworm-backports beside (the device test beds need its qemu-user)" >&2
    fi
  elif ! compgen -G '/var/lib/apt/lists/*bookworm-backports*Packages*' >/dev/null; then
    need_update=1  # the source is there but its package list was never fetched
  fi
fi

if [ ${#missing[@]} -eq 0 ] && [ "$need_update" -eq 0 ]; then
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

if [ ${#backports_source[@]} -gt 0 ]; then
  echo "setup-system: adding bookworm-backports (qemu-user >= 10 for the device test beds)"
  printf '%s\n' "${backports_source[@]}" | "${SUDO[@]}" tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
fi
"${SUDO[@]}" apt-get update -q
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-system: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
