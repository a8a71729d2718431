# Source this: creates (once) and activates ./.venv with CPU torch and nmt installed.
# torch==2.13.0 is installed first so that pip takes the CPU build and never the CUDA packages.
# EXTRAS (default "dev") picks the optional dependency groups: EXTRAS=dev,export.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_venv="${NMT_VENV:-$_root/.venv}"
_extras="${EXTRAS:-dev}"
_stamp="$_venv/.nmt-installed-$_extras"
if [ ! -x "$_venv/bin/python" ]; then
  python3 -m venv "$_venv" || return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
. "$_venv/bin/activate"
if [ ! -f "$_stamp" ] || [ "$_root/pyproject.toml" -nt "$_stamp" ]; then
  python -m pip install -q --upgrade pip >/dev/null
  python -m pip install -q torch==2.13.0 || return 1 2>/dev/null || exit 1
  python -m pip install -q -e "$_root[$_extras]" || return 1 2>/dev/null || exit 1
  touch "$_stamp"
fi
unset _root _venv _extras _stamp
