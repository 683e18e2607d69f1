# Source on a GPU box that has torch but cannot pip-install this project (no network):
# lays the package out as it installs (recon.attention <- attention/, ...) under /tmp/site.
#   source tools/gpu_env.sh && python -m recon.train ...
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rm -rf /tmp/site && mkdir -p /tmp/site/recon
cp -r "$_root"/recon/. /tmp/site/recon/
for _d in attention align viewer datasets; do cp -r "$_root/$_d" "/tmp/site/recon/$_d"; done
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export RECON_COMMIT="${RECON_COMMIT:-$(cat "$_root/.commit" 2>/dev/null || echo unknown)}"
export PYTHONUNBUFFERED=1
export PYTHONSAFEPATH=1  # keep the repo root (the un-mapped folders) off sys.path
