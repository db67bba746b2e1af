# Sourced by the entry scripts: use ../shared/data as the data root when nothing else is set.
if [ -z "${DDLNL_DATA:-}" ] && [ ! -d data ] && [ -d ../shared/data ]; then
  DDLNL_DATA="$(cd ../shared/data && pwd)"
  export DDLNL_DATA
fi
