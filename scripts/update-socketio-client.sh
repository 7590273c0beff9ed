#!/bin/sh
# Vendor the official browser Socket.IO client into monolith/static/vendor/socket.io-client/.
#
#   scripts/update-socketio-client.sh [VERSION]    (default: the newest 4.x)
#
# Needs Node's npm (it fetches the package with `npm pack` from the configured
# registry) and runs only when a person runs it: the tests and the servers use
# the committed files. Review the diff, run the browser tests, commit.
set -eu

spec="socket.io-client@${1:-4}"
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/monolith/static/vendor/socket.io-client"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "$spec" >/dev/null)
tar -xzf "$work"/socket.io-client-*.tgz -C "$work"
version=$(node -p 'require(process.argv[1]).version' "$work/package/package.json")
case "$version" in
  4.*) ;;
  *) echo "socket.io-client $version is not 4.x: app.js is written for the 4.x API" >&2; exit 1 ;;
esac

mkdir -p "$dest"
cp "$work/package/dist/socket.io.min.js" "$work/package/dist/socket.io.min.js.map" "$dest/"
cp "$work/package/LICENSE" "$dest/LICENSE"
echo "$version" > "$dest/VERSION"
echo "vendored socket.io-client $version into ${dest#"$root"/}"
