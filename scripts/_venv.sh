# Sourced by the scripts: create the virtualenv and install a requirements file into it,
# skipping the install when that file has not changed since the last one.
# Usage: . scripts/_venv.sh requirements.txt
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
requirements="$ROOT/$1"
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(basename "$requirements")"
digest="$(cat "$ROOT/requirements.txt" "$requirements" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  # (This machine's pip configuration names local mirrors that may be absent: hide those warnings only.)
  "$VENV/bin/python" -m pip install --quiet --upgrade pip 2> >(grep -v "^WARNING: Location" >&2)
  "$VENV/bin/python" -m pip install --quiet -r "$requirements" 2> >(grep -v "^WARNING: Location" >&2)
  echo "$digest" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
