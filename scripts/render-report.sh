#!/usr/bin/env bash
# Opens an HTML report in headless Chromium (Debian's `chromium`), checks that the browser parsed
# every chart, and saves a screenshot (keep screenshots out of the repository).
#   scripts/render-report.sh REPORT.html [SCREENSHOT.png]
# Checks: the DOM after parsing holds as many <svg> charts as the file (none dropped by a parse
# error), and the screenshot has clearly more content than a blank page of the same size (its PNG
# is at least 3x the blank page's, which compresses to almost nothing).
# Exit codes: 0 rendered, 1 check failed, 77 Chromium is not installed (ctest reports a skip).
set -euo pipefail
report=${1:?usage: render-report.sh REPORT.html [SCREENSHOT.png]}
shot=${2:-${report%.html}.png}
[[ -f "$report" ]] || { echo "render-report: $report: not found" >&2; exit 1; }
browser=$(command -v chromium || command -v chromium-browser || true)
[[ -n "$browser" ]] || { echo "render-report: chromium not installed (apt-get install chromium); skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$tmp/profile" "$@" 2>"$tmp/err"; }
url="file://$(realpath "$report")"
run --dump-dom "$url" >"$tmp/dom.html" || { cat "$tmp/err" >&2; echo "render-report: chromium failed on $report" >&2; exit 1; }
want=$(grep -o "<svg" "$report" | wc -l)
got=$(grep -o "<svg" "$tmp/dom.html" | wc -l)
[[ "$want" -gt 0 && "$got" -eq "$want" ]] || { echo "render-report: $report: $want charts in the file, $got in the browser's DOM" >&2; exit 1; }
echo '<!DOCTYPE html><html><body></body></html>' >"$tmp/blank.html"
run --window-size=1400,2000 --screenshot="$tmp/blank.png" "file://$tmp/blank.html" >/dev/null
run --window-size=1400,2000 --screenshot="$shot" "$url" >/dev/null
[[ -s "$shot" ]] || { echo "render-report: no screenshot written" >&2; exit 1; }
blank=$(stat -c %s "$tmp/blank.png"); size=$(stat -c %s "$shot")
((size >= 3 * blank)) || { echo "render-report: $shot looks blank ($size bytes vs $blank for an empty page)" >&2; exit 1; }
echo "render-report: $report rendered: $got charts, screenshot $shot ($size bytes)"
