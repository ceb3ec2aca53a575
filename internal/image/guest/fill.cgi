#!/bin/sh
# /srv/www/cgi-bin/fill.cgi: writes data the host can account for, so tests
# and benchmarks can make the guest dirty a known amount of its disk.
#   GET /cgi-bin/fill.cgi?mib=N  writes N MiB (1-512) of random data to
#                                /var/lib/demo/fill, fsyncs it, and answers
#                                its size and SHA-256 once it is durable;
#   GET /cgi-bin/fill.cgi        answers the same for the file as it is.
f=/var/lib/demo/fill
answer() {
	printf 'Content-Type: application/json\r\nCache-Control: no-store\r\n\r\n'
	printf '%s\n' "$1"
}
case "$QUERY_STRING" in
'') ;;
mib=*)
	n=${QUERY_STRING#mib=}
	case "$n" in '' | *[!0-9]*) answer '{"error":"mib must be a number"}'; exit 0 ;; esac
	if [ "$n" -lt 1 ] || [ "$n" -gt 512 ]; then
		answer '{"error":"mib must be between 1 and 512"}'
		exit 0
	fi
	if ! dd if=/dev/urandom of="$f.new" bs=1048576 count="$n" 2>/dev/null ||
		! sync "$f.new" || ! mv "$f.new" "$f" || ! sync /var/lib/demo; then
		answer '{"error":"write failed"}'
		exit 0
	fi
	;;
*)
	answer '{"error":"unknown query; use mib=N"}'
	exit 0
	;;
esac
size=0
sum=
if [ -f "$f" ]; then
	size=$(wc -c <"$f")
	sum=$(sha256sum "$f" | cut -d' ' -f1)
fi
answer "{\"bytes\":$size,\"sha256\":\"$sum\"}"
