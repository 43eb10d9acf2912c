#!/bin/sh
# Installs Debian's chromium, which tests/test_html_report.py uses to render the HTML report (sudo when not root).
set -e
command -v chromium >/dev/null && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
