#!/usr/bin/env bash
# Install the system packages Imago needs (Debian/Ubuntu), or name exactly what is missing.
set -euo pipefail

# chromium: the headless browser of the web-page and Dagster UI tests
packages=(tesseract-ocr tesseract-ocr-eng tesseract-ocr-fra tesseract-ocr-osd libimage-exiftool-perl docker-compose chromium)
# A Postgres server for the tests: only when none answers locally and no binaries are installed.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  packages+=(postgresql)
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi
  if [ "$sudo" != none ]; then
    echo "installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    exit 0
  fi
fi
echo "Imago needs these system packages; install them and run make again:" >&2
echo "  sudo apt-get install ${missing[*]}" >&2
exit 1
